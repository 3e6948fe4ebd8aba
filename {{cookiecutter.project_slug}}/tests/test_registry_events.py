"""Registry webhooks: a signed, fresh, first-seen `model_version.created` of this model starts its release."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from mlflow.webhooks import constants
from mlflow.webhooks.delivery import _generate_hmac_signature

from conftest import CiApiStandIn, serving_in_thread
from {{ cookiecutter.package_name }} import registry_events
from {{ cookiecutter.package_name }}.ci import ApprovalError
from {{ cookiecutter.package_name }}.gitops import DEFAULT_BRANCH
from {{ cookiecutter.package_name }}.registry_events import SeenDeliveries, handle_delivery

SECRET = "whsec-test-7f3a"
MODEL = "test-model"
NOW = 1_790_000_000.0
GITHUB = {"CI_PROVIDER": "github", "GITHUB_REPOSITORY": "acme/demand-forecast", "GITHUB_TOKEN": "t0ken"}
AZURE = {
    "CI_PROVIDER": "azure",
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/acme/",
    "SYSTEM_TEAMPROJECT": "Demand Planning",
    "RETRAIN_PIPELINE_ID": "12",
    "SYSTEM_ACCESSTOKEN": "t0ken",
}
JENKINS = {
    "CI_PROVIDER": "jenkins",
    "JENKINS_URL": "https://jenkins.example.com/",
    "RETRAIN_JOB": "forecasting/demand-forecast/main",
    "JENKINS_USER": "registry-bot",
    "JENKINS_API_TOKEN": "t0ken",
}
CONFIGURATION = (
    "MLFLOW_WEBHOOK_SECRET", "MODEL_NAME", *GITHUB, *AZURE, *JENKINS, "GITHUB_API_URL", "RETRAIN_WORKFLOW",
)  # fmt: skip


@pytest.fixture(autouse=True)
def receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver configured for GitHub, with the webhook's secret, for the model `test-model`."""
    for name in CONFIGURATION:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**GITHUB, "MLFLOW_WEBHOOK_SECRET": SECRET, "MODEL_NAME": MODEL}.items():
        monkeypatch.setenv(name, value)


def event(
    name: str = MODEL, version: object = "3", entity: str = "model_version", action: str = "created"
) -> bytes:
    """A body as MLflow writes it (mlflow/webhooks/delivery.py: entity, action, timestamp and data)."""
    data = {
        "name": name,
        "version": version,
        "source": "models:/m-1",
        "run_id": "r1",
        "tags": {},
        "description": None,
    }
    stamp = datetime.datetime.fromtimestamp(NOW, datetime.UTC).isoformat()
    return json.dumps({"entity": entity, "action": action, "timestamp": stamp, "data": data}).encode()


def signed(
    body: bytes, secret: str = SECRET, at: float = NOW, delivery_id: str | None = None
) -> dict[str, str]:
    """The headers MLflow sends, signed by MLflow's own function (not by the code under test)."""
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(at))
    return {
        "Content-Type": "application/json",
        constants.WEBHOOK_DELIVERY_ID_HEADER: delivery_id,
        constants.WEBHOOK_TIMESTAMP_HEADER: timestamp,
        constants.WEBHOOK_SIGNATURE_HEADER: _generate_hmac_signature(
            secret, delivery_id, timestamp, body.decode()
        ),
    }


def deliver(body: bytes, headers: Mapping[str, str], api: CiApiStandIn, seen: SeenDeliveries | None = None):
    return handle_delivery(body, headers, NOW, send=api.send, seen=seen or SeenDeliveries())


# ---- a release is started --------------------------------------------------------------------------------


@pytest.fixture
def github_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """GitHub's REST API on 127.0.0.1 over HTTPS (the project's API client speaks nothing else): records each
    request and answers 204 like the dispatch endpoint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "stand-in.crt", tmp_path / "stand-in.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    records: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            records.append({"path": self.path, "authorization": self.headers["Authorization"], "body": body})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    monkeypatch.setenv("GITHUB_API_URL", f"https://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    with serving_in_thread(server):
        yield records


def test_a_new_version_of_the_model_dispatches_the_train_workflow_with_that_version(github_stand_in) -> None:
    # given a delivery exactly as MLflow signs it
    body = event(version="3")
    # when it arrives
    status, line = handle_delivery(body, signed(body), NOW, seen=SeenDeliveries())
    # then one dispatch of train.yml on the default branch, with the version as its only input
    assert (status, line) == (
        202,
        f"release pipeline started for v3: GitHub workflow train.yml on {DEFAULT_BRANCH}",
    )
    (request,) = github_stand_in
    assert request["path"] == "/repos/acme/demand-forecast/actions/workflows/train.yml/dispatches"
    assert request["authorization"] == "Bearer t0ken"
    assert request["body"] == {"ref": DEFAULT_BRANCH, "inputs": {"version": "3"}}


def test_header_names_are_matched_whatever_their_case() -> None:
    # Starlette and http.server hand headers over lower-cased or as sent
    api, body = CiApiStandIn(), event()
    lowered = {key.lower(): value for key, value in signed(body).items()}
    assert deliver(body, lowered, api)[0] == 202 and len(api.requests) == 1


@pytest.mark.parametrize(
    ("ci", "url"),
    [
        (AZURE, "https://dev.azure.com/acme/Demand%20Planning/_apis/pipelines/12/runs?api-version=7.1"),
        (
            JENKINS,
            "https://jenkins.example.com/job/forecasting/job/demand-forecast/job/main/buildWithParameters",
        ),
    ],
    ids=["azure", "jenkins"],
)
def test_azure_and_jenkins_start_their_training_pipeline_with_the_version(monkeypatch, ci, url) -> None:
    for name, value in ci.items():
        monkeypatch.setenv(name, value)
    api, body = CiApiStandIn(), event(version="12")
    status, line = deliver(body, signed(body), api)
    assert status == 202 and line.startswith("release pipeline started for v12: "), line
    ((method, sent_to, _, sent),) = api.requests
    assert method == "POST" and sent_to.startswith(url)
    if ci is AZURE:
        assert sent["templateParameters"] == {"version": "12"}
    else:  # a build parameter, which Jenkins hands to every step as an environment variable
        assert sent is None and urllib.parse.parse_qs(sent_to.split("?")[1]) == {"RELEASE_VERSION": ["12"]}


# ---- refused: nothing is started -------------------------------------------------------------------------


def without(headers: Mapping[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


BODY = event()
GOOD = signed(BODY)
REFUSALS = {
    "forged signature": (
        BODY,
        {**GOOD, "X-MLflow-Signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        401,
    ),
    "signed with another secret": (BODY, signed(BODY, secret="not-the-secret"), 401),
    "body changed after signing": (event(version="4"), GOOD, 401),
    "signature without its version prefix": (
        BODY,
        {**GOOD, "X-MLflow-Signature": GOOD["X-MLflow-Signature"][3:]},
        401,
    ),
    "delivery id changed after signing": (BODY, {**GOOD, "X-MLflow-Delivery-Id": str(uuid.uuid4())}, 401),
    "timestamp changed after signing": (BODY, {**GOOD, "X-MLflow-Timestamp": str(int(NOW) - 1)}, 401),
    "stale: signed 6 minutes ago": (BODY, signed(BODY, at=NOW - 360), 401),
    "from the future: 6 minutes ahead": (BODY, signed(BODY, at=NOW + 360), 401),
    "no signature": (BODY, without(GOOD, "X-MLflow-Signature"), 401),
    "no delivery id": (BODY, without(GOOD, "X-MLflow-Delivery-Id"), 401),
    "no timestamp": (BODY, without(GOOD, "X-MLflow-Timestamp"), 401),
    "no headers at all": (BODY, {}, 401),
    "timestamp in Arabic-Indic digits": (BODY, {**GOOD, "X-MLflow-Timestamp": "١٧٩٠٠٠٠٠٠٠"}, 400),
    "delivery id with a newline": (BODY, {**GOOD, "X-MLflow-Delivery-Id": "abc\nX-Injected: 1"}, 400),
    "not JSON": (b"version=3", signed(b"version=3"), 400),
    "a JSON list": (b"[1, 2]", signed(b"[1, 2]"), 400),
    "no entity": (b'{"action": "created", "data": {}}', signed(b'{"action": "created", "data": {}}'), 400),
    "data not an object": (
        b'{"entity": "model_version", "action": "created", "data": "3"}',
        signed(b'{"entity": "model_version", "action": "created", "data": "3"}'),
        400,
    ),
    "a megabyte body": (b" " * 1_000_000 + BODY, GOOD, 413),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_delivery_that_is_not_authentic_fresh_and_well_formed_is_refused_in_one_line(case: str) -> None:
    body, headers, expected = REFUSALS[case]
    api = CiApiStandIn()
    status, line = deliver(body, headers, api)
    assert status == expected, line
    assert line.startswith("refused: ") and "\n" not in line and len(line) < 300
    assert api.requests == []


def test_a_not_utf8_body_is_refused_even_when_signed() -> None:
    # MLflow signs the text it sends; a body of other bytes signed the same way still is not JSON.
    body, delivery_id, timestamp = b"\xff\xfe{}", str(uuid.uuid4()), str(int(NOW))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": registry_events.signature(SECRET, delivery_id, timestamp, body),
    }
    api = CiApiStandIn()
    assert deliver(body, headers, api) == (400, "refused: the body is not JSON") and api.requests == []


def test_a_replayed_delivery_is_refused_and_starts_nothing_more() -> None:
    # given a delivery that started a release
    api, seen, headers = CiApiStandIn(), SeenDeliveries(), signed(BODY)
    assert deliver(BODY, headers, api, seen)[0] == 202
    # when the same bytes arrive again, even a minute later (still inside the window)
    status, line = handle_delivery(BODY, headers, NOW + 60, send=api.send, seen=seen)
    # then it is refused as a replay and nothing else started
    assert status == 409 and "already received" in line
    assert len(api.requests) == 1


@pytest.mark.parametrize("late", [299.0, 300.0, 300.5, 300.99])
def test_a_replay_is_refused_for_as_long_as_its_timestamp_counts_as_fresh(late) -> None:
    api, seen, headers = CiApiStandIn(), SeenDeliveries(), signed(BODY)
    assert deliver(BODY, headers, api, seen)[0] == 202
    status, line = handle_delivery(BODY, headers, NOW + late, send=api.send, seen=seen)
    assert status in (401, 409) and line.startswith("refused: "), line  # a replay or stale: never started
    assert len(api.requests) == 1


def test_a_trigger_that_fails_unexpectedly_answers_502_and_a_retry_may_start_it() -> None:
    # given a CI call that dies with an error nobody planned for
    seen, headers = SeenDeliveries(), signed(BODY)
    status, line = deliver(BODY, headers, CiApiStandIn(error=RuntimeError("socket closed")), seen)
    assert status == 502 and "RuntimeError: socket closed" in line
    # then MLflow's retry (same delivery id) is not taken for a replay and starts the release
    api = CiApiStandIn()
    assert deliver(BODY, headers, api, seen)[0] == 202 and len(api.requests) == 1


def test_the_record_of_seen_deliveries_is_bounded_and_refuses_rather_than_forgets() -> None:
    seen, api = SeenDeliveries(limit=2), CiApiStandIn()
    for _ in range(2):
        assert deliver(BODY, signed(BODY), api, seen)[0] == 202
    # full of ids still inside the window: a third is refused (retried by MLflow), none is forgotten
    status, line = deliver(BODY, signed(BODY), api, seen)
    assert status == 503 and "retry later" in line and len(api.requests) == 2
    # once they are out of the window they are dropped, and deliveries are accepted again
    later = NOW + 2 * registry_events.TOLERANCE_SECONDS
    status, _ = handle_delivery(BODY, signed(BODY, at=later), later, send=api.send, seen=seen)
    assert status == 202 and len(api.requests) == 3


@pytest.mark.parametrize(
    "version",
    [
        "3\n",
        "3; rm -rf /",
        "\u0663",
        "",
        " 3",
        "3 ",
        "0",
        "-1",
        "+3",
        "3.0",
        "1e3",
        "9" * 10_000,
        "$(id)",
        3,
        None,
    ],
    ids=repr,
)
def test_a_version_that_is_not_a_plain_registry_number_starts_nothing(version: object) -> None:
    api, body = CiApiStandIn(), event(version=version)
    status, line = deliver(body, signed(body), api)
    assert status == 400, line
    assert line.startswith("refused: ") and "\n" not in line and len(line) < 200
    assert api.requests == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (event(name="another-team-model"), "ignored: a version of 'another-team-model', not of 'test-model'"),
        # promotion registers a copy in the environment's model: that must not start another release
        (event(name=f"{MODEL}-staging"), "ignored: a version of 'test-model-staging', not of 'test-model'"),
        (
            event(entity="model_version_alias", action="created"),
            "ignored: 'model_version_alias.created' events",
        ),
        (event(entity="model_version_tag", action="set"), "ignored: 'model_version_tag.set' events"),
        (event(entity="registered_model", action="created"), "ignored: 'registered_model.created' events"),
    ],
)
def test_other_models_and_events_are_acknowledged_and_start_nothing(body: bytes, said: str) -> None:
    api = CiApiStandIn()
    status, line = deliver(body, signed(body), api)
    assert status == 200 and line.startswith(said), line
    assert api.requests == []


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_without_a_secret_every_delivery_is_refused(monkeypatch, secret: str | None) -> None:
    # given a receiver whose secret was never set (or set empty): it cannot tell MLflow from anyone
    if secret is None:
        monkeypatch.delenv("MLFLOW_WEBHOOK_SECRET")
    else:
        monkeypatch.setenv("MLFLOW_WEBHOOK_SECRET", secret)
    api = CiApiStandIn()
    # when deliveries arrive, signed with an empty secret or with the real one
    for headers in (signed(BODY, secret=""), signed(BODY), {}):
        status, line = deliver(BODY, headers, api)
        # then each is refused, saying what to set
        assert status == 503 and "MLFLOW_WEBHOOK_SECRET is not set" in line and "create_webhook" in line
    assert api.requests == []


# ---- the CI system cannot be reached or refuses ----------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_ci_system_is_a_502_with_the_reason_and_the_retry_may_still_start_it(
    monkeypatch,
) -> None:
    # given GitHub's API where nothing listens
    monkeypatch.setenv("GITHUB_API_URL", f"https://127.0.0.1:{closed_port()}")
    seen, headers = SeenDeliveries(), signed(BODY)
    # when a valid delivery arrives: no silent success, one line MLflow records as the failed delivery
    status, line = handle_delivery(BODY, headers, NOW, seen=seen)
    assert status == 502 and "\n" not in line
    assert line.startswith("the release of v3 was not requested: POST https://127.0.0.1:")
    assert "refused" in line.lower() and "docs/ci-github.md" in line
    # and MLflow's retry of that delivery (same id and timestamp) is not mistaken for a replay
    api = CiApiStandIn()
    assert handle_delivery(BODY, headers, NOW + 2, send=api.send, seen=seen)[0] == 202
    assert len(api.requests) == 1


def test_a_ci_system_refusing_the_token_is_a_502_saying_what_the_token_needs() -> None:
    api = CiApiStandIn(
        error=ApprovalError("POST https://api.github.com/x failed: HTTP Error 403: Forbidden\n<html>")
    )
    status, line = deliver(BODY, signed(BODY), api)
    assert status == 502 and "\n" not in line and "HTTP Error 403" in line
    assert "Actions write" in line and "a `version` input" in line


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"GITHUB_TOKEN": ""}, "GITHUB_TOKEN"),
        ({"CI_PROVIDER": "gitlab"}, "CI_PROVIDER"),
        ({"RETRAIN_WORKFLOW": "../../pulls"}, "RETRAIN_WORKFLOW"),
    ],
)
def test_a_receiver_without_its_ci_configuration_answers_502_naming_it(monkeypatch, change, named) -> None:
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    api = CiApiStandIn()
    status, line = deliver(BODY, signed(BODY), api)
    assert status == 502 and named in line and "\n" not in line
    assert api.requests == []


# ---- the contract with MLflow ----------------------------------------------------------------------------


def test_the_signature_is_mlflows_own_construction() -> None:
    delivery_id, timestamp = str(uuid.uuid4()), "1790000000"
    assert registry_events.signature(SECRET, delivery_id, timestamp, BODY) == _generate_hmac_signature(
        SECRET, delivery_id, timestamp, BODY.decode()
    )
    names = (
        registry_events.SIGNATURE_HEADER,
        registry_events.DELIVERY_ID_HEADER,
        registry_events.TIMESTAMP_HEADER,
    )
    assert names == (
        constants.WEBHOOK_SIGNATURE_HEADER,
        constants.WEBHOOK_DELIVERY_ID_HEADER,
        constants.WEBHOOK_TIMESTAMP_HEADER,
    )
