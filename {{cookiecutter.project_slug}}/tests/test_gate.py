"""The cluster's promotion gate answers Flagger from what the cluster actually rolls out and the registry: 200
only for the approved version and image, 403 with one line for anything else, including a hand change to
the Deployment or its ConfigMap, and a registry or a Kubernetes API it cannot read.

The Kubernetes API is a stand-in on 127.0.0.1 (plain http, which the gate accepts for loopback only) that
answers GETs of the Deployment and its ConfigMap with JSON shaped like the real API's."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from starlette.testclient import TestClient

from conftest import new_version, open_registry, serving_in_thread
from {{ cookiecutter.package_name }} import cluster, gate_server, promotion_gate, registry
from {{ cookiecutter.package_name }}.gate_server import MAX_BODY_BYTES, create_app
from {{ cookiecutter.package_name }}.promote import promote
from {{ cookiecutter.package_name }}.settings import Settings

APPROVED_DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
IMAGE = "ghcr.io/acme/demand-forecast"
APPROVED_IMAGE = f"{IMAGE}:v1@{APPROVED_DIGEST}"
NAMESPACE, NAME = "demand-forecast-production", "demand-forecast"
MODEL_CONFIG = "model-7h2k9b4c5d"  # kustomize's configMapGenerator name, hash suffix included
TOKEN = "stand-in-service-account-token"


# ---------------------------------------------------------------- a stand-in Kubernetes API


class KubernetesApi:
    """What the stand-in API holds (objects by path) and what it was asked (path, Authorization header)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.answer_status: int | None = None  # answer every GET with this status instead (403, 404, 302...)
        self.requests: list[tuple[str, str]] = []

    def put_configmap(self, name: str, data: dict[str, str]) -> None:
        self.objects[f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}"] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "1"},
            "data": data,
        }

    def put_deployment(self, image: str, version: str = "1", **container: object) -> dict:
        """The serving Deployment as deploy/production builds it: its image, envFrom the model ConfigMap."""
        self.put_configmap(MODEL_CONFIG, {"MODEL_NAME": "test-model", "MODEL_VERSION": version})
        serving = {
            "name": "serving",
            "image": image,
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
            "envFrom": [{"configMapRef": {"name": MODEL_CONFIG}}],
            **container,
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "generation": 3},
            "spec": {"template": {"metadata": {"labels": {}}, "spec": {"containers": [serving]}}},
            "status": {"observedGeneration": 3},
        }
        self.objects[f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}"] = deployment
        return serving

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests.append((handler.path, handler.headers.get("Authorization", "")))
        found = self.objects.get(handler.path)
        status = self.answer_status or (200 if found else 404)
        body = json.dumps(found if status == 200 else {"kind": "Status", "code": status}).encode()
        handler.send_response(status)
        if status == 302:
            handler.send_header("Location", "/elsewhere")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def kube(tmp_path, monkeypatch) -> Iterator[KubernetesApi]:
    """The stand-in API on 127.0.0.1, and the gate's environment pointing at it (token in a file)."""
    api = KubernetesApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            api.handle(self)

        def log_message(self, *args: object) -> None:
            pass

    with serving_in_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        monkeypatch.setenv(cluster.API_VARIABLE, f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv(cluster.TOKEN_VARIABLE, str(token))
        yield api


# ---------------------------------------------------------------- the registry side


@pytest.fixture
def client(settings, tmp_path, blank_store):
    return open_registry(settings, tmp_path, blank_store)


@pytest.fixture
def gate(settings):
    with TestClient(create_app(settings)) as http:
        yield http


def released_to_production(client, settings, **evidence: str) -> str:
    version = new_version(client, settings, image_digest=APPROVED_DIGEST, **evidence)
    assert promote(settings, version, "staging", "dave") == 0
    assert promote(settings, version, "production", "erin") == 0
    return version


def rollout(version: object, image: object = APPROVED_IMAGE, **metadata: object) -> dict:
    """Flagger's confirm-promotion payload, with the metadata the Canary's webhook carries."""
    return {
        "name": NAME,
        "namespace": NAMESPACE,
        "phase": "Progressing",
        "checksum": "85d557f47b",
        "metadata": {"model_version": version, "image": image, **metadata},
    }


def ask(gate, payload) -> tuple[int, str]:
    response = gate.post("/confirm-promotion", json=payload)
    return response.status_code, response.text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- approved


def test_the_approved_version_and_image_may_reach_full_traffic(client, settings, kube, gate, capsys):
    # given v1 released to production, and the cluster rolling out exactly its approved image
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    approved_at = registry.environment_copy(client, settings.model_name, "production").tags[
        "approved_at_production"
    ]
    # when
    status, line = ask(gate, rollout(version))
    # then
    assert status == 200
    assert line == (
        f"approved: {NAMESPACE}/{NAME} v{version} {APPROVED_DIGEST} approved for"
        f" production by erin at {approved_at}\n"
    )
    assert f"gate: 200 {line}" in capsys.readouterr().out  # the pod log is the audit trail
    # ... judged from the cluster: the Deployment and its ConfigMap, read with the pod's own token
    assert [path for path, _ in kube.requests] == [
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}",
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/{MODEL_CONFIG}",
    ]
    assert {auth for _, auth in kube.requests} == {f"Bearer {TOKEN}"}


def test_the_metadata_is_optional_the_cluster_is_what_counts(client, settings, kube, gate):
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    payload = rollout(version)
    del payload["metadata"]
    assert ask(gate, payload)[0] == 200
    assert ask(gate, {**payload, "metadata": {}})[0] == 200


def test_a_literal_env_var_is_read_like_the_configmap(client, settings, kube, gate):
    # given the version set in the Deployment's env (which wins over envFrom in Kubernetes)
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, "9", env=[{"name": "MODEL_VERSION", "value": version}])
    assert ask(gate, rollout(version))[0] == 200


# ---------------------------------------------------------------- refused: what runs is not what was approved


def set_image(client, settings, kube) -> dict:
    """`kubectl set image` to another build while the Canary's metadata still names the approved digest."""
    version = released_to_production(client, settings)
    kube.put_deployment(f"{IMAGE}:v1@{OTHER_DIGEST}", version)
    return rollout(version)


def set_image_and_metadata(client, settings, kube) -> dict:
    """Another build of the approved version, in the Deployment and the metadata alike."""
    version = released_to_production(client, settings)
    kube.put_deployment(f"{IMAGE}:v1@{OTHER_DIGEST}", version)
    return rollout(version, image=f"{IMAGE}:v1@{OTHER_DIGEST}")


def edited_configmap(client, settings, kube) -> dict:
    """`kubectl edit configmap model-...` to a version only in staging; the metadata still says v1."""
    champion = released_to_production(client, settings)
    challenger = new_version(client, settings, image_digest=APPROVED_DIGEST, backtest_champion=champion)
    assert promote(settings, challenger, "staging", "dave") == 0
    kube.put_deployment(APPROVED_IMAGE, challenger)
    return rollout(champion)


def edited_configmap_no_metadata(client, settings, kube) -> dict:
    payload = edited_configmap(client, settings, kube)
    del payload["metadata"]
    return payload


def env_override(client, settings, kube) -> dict:
    """`kubectl set env deployment/... MODEL_VERSION=2`: env wins over the ConfigMap in the pods."""
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version, env=[{"name": "MODEL_VERSION", "value": "2"}])
    return rollout(version)


def several_versions(client, settings, kube) -> dict:
    """MODEL_VERSIONS, which the scoring service reads before MODEL_VERSION."""
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version, env=[{"name": "MODEL_VERSIONS", "value": "1,2"}])
    return rollout(version)


def version_from_a_secret(client, settings, kube) -> dict:
    version = released_to_production(client, settings)
    serving = kube.put_deployment(APPROVED_IMAGE, version)
    serving["envFrom"].append({"secretRef": {"name": "hidden"}})
    return rollout(version)


def sidecar(client, settings, kube) -> dict:
    """`kubectl patch` adding a container with any image beside the approved one."""
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    deployment = kube.objects[f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}"]
    deployment["spec"]["template"]["spec"]["containers"].append({"name": "helper", "image": "evil:latest"})
    return rollout(version)


def image_without_digest(client, settings, kube) -> dict:
    version = released_to_production(client, settings)
    kube.put_deployment(f"{IMAGE}:v1", version)
    return rollout(version, image=f"{IMAGE}:v1")


def another_model(client, settings, kube) -> dict:
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    kube.put_configmap(MODEL_CONFIG, {"MODEL_NAME": "other-model", "MODEL_VERSION": version})
    return rollout(version)


def bypassed_pin(client, settings, kube) -> dict:
    """A newer version merged into deploy/production by hand: only in staging in the registry."""
    champion = released_to_production(client, settings)
    challenger = new_version(client, settings, image_digest=APPROVED_DIGEST, backtest_champion=champion)
    assert promote(settings, challenger, "staging", "dave") == 0
    kube.put_deployment(APPROVED_IMAGE, challenger)
    return rollout(challenger)


def copied_by_hand(client, settings, kube, evidence: dict | None = None, **tags: str) -> dict:
    """Someone with write access to the production model copies a version and moves the alias."""
    registry.ensure_model(client, f"{settings.model_name}-production")
    version = new_version(client, settings, image_digest=APPROVED_DIGEST, **(evidence or {}))
    source = client.get_model_version(settings.model_name, version)
    copy = registry.copy_version(client, source, "production", tags)
    client.set_registered_model_alias(f"{settings.model_name}-production", "production", copy.version)
    kube.put_deployment(APPROVED_IMAGE, version)
    return rollout(version)


def unapproved_copy(client, settings, kube) -> dict:
    return copied_by_hand(client, settings, kube)


def self_approved_copy(client, settings, kube) -> dict:
    return copied_by_hand(client, settings, kube, approved_by_production="carol", released_by="carol")


def look_alike_approver(client, settings, kube) -> dict:
    """An approver on record whose name mixes Cyrillic and Latin letters (a look-alike of erin)."""
    return copied_by_hand(client, settings, kube, approved_by_production="\u0435rin", released_by="erin")


def copy_without_data_gate(client, settings, kube) -> dict:
    return copied_by_hand(
        client,
        settings,
        kube,
        approved_by_production="erin",
        released_by="erin",
        evidence={"data_validation": None},
    )


def approved_without_digest(client, settings, kube) -> dict:
    version = new_version(client, settings)
    assert promote(settings, version, "staging", "dave") == 0
    assert promote(settings, version, "production", "erin") == 0
    kube.put_deployment(APPROVED_IMAGE, version)
    return rollout(version)


def nothing_released(client, settings, kube) -> dict:
    version = new_version(client, settings, image_digest=APPROVED_DIGEST)
    kube.put_deployment(APPROVED_IMAGE, version)
    return rollout(version)


REFUSED = {
    set_image: (
        f"the Canary's webhook says image '{APPROVED_IMAGE}' but Deployment {NAMESPACE}/{NAME} rolls out"
        f" '{IMAGE}:v1@{OTHER_DIGEST}': the cluster was changed by hand"
    ),
    set_image_and_metadata: f"image {OTHER_DIGEST} is not the image approved for v1 ({APPROVED_DIGEST})",
    edited_configmap: (
        f"the Canary's webhook says model_version '1' but Deployment {NAMESPACE}/{NAME} rolls out '2'"
    ),
    edited_configmap_no_metadata: "the registry's production release is v1, not v2",
    env_override: "the Canary's webhook says model_version '1' but",
    several_versions: "MODEL_VERSIONS='1,2' is not a registry version number",
    version_from_a_secret: "which the gate cannot read (only ConfigMaps)",
    sidecar: "pods run the containers ['serving', 'helper'], not only 'serving'",
    image_without_digest: f"{NAMESPACE}/{NAME}'s serving image '{IMAGE}:v1' is not pinned by digest",
    another_model: "pods get MODEL_NAME='other-model' (ConfigMap model-7h2k9b4c5d), but this gate guards",
    bypassed_pin: "the registry's production release is v1, not v2: this rollout bypassed the gate",
    unapproved_copy: "v1 has no production approval on record",
    self_approved_copy: "four-eyes",
    look_alike_approver: "v1's approvals on record cannot be checked (identity '\u0435rin' mixes",
    copy_without_data_gate: "missing evidence: data_validation",
    approved_without_digest: "v1 was approved without an image digest",
    nothing_released: "the registry's production release is nothing, not v1",
}


@pytest.mark.parametrize("arrange", list(REFUSED), ids=lambda f: f.__name__)
def test_anything_but_the_approved_version_and_image_is_refused_in_one_line(
    client, settings, kube, gate, arrange
):
    payload = arrange(client, settings, kube)
    status, line = ask(gate, payload)
    assert status == 403
    assert line.startswith("refused: ") and line.count("\n") == 1, line
    assert REFUSED[arrange] in line


# ---------------------------------------------------------------- refused: the cluster cannot be read


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (401, "answered 401 to GET /apis/apps/v1/"),
        (403, "the gate's Role must allow `get` on it"),
        (404, "it does not exist"),
        (500, "answered 500"),
        (302, "answered 302"),
    ],
)
def test_an_api_that_refuses_the_gate_means_refused(client, settings, kube, gate, answer, reason):
    # given v1 approved and rolled out, but an API that will not show it
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    kube.answer_status = answer
    # when
    status, line = ask(gate, rollout(version))
    # then
    assert status == 403
    assert line.startswith("refused: the cluster cannot tell what is rolled out: ") and reason in line
    assert "/elsewhere" not in [path for path, _ in kube.requests], "a redirect is never followed"


def test_a_missing_model_configmap_means_refused(client, settings, kube, gate):
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    del kube.objects[f"/api/v1/namespaces/{NAMESPACE}/configmaps/{MODEL_CONFIG}"]
    status, line = ask(gate, rollout(version))
    assert status == 403 and f"GET /api/v1/namespaces/{NAMESPACE}/configmaps/{MODEL_CONFIG}" in line


def test_an_unreachable_api_means_refused(client, settings, gate, monkeypatch, tmp_path):
    version = released_to_production(client, settings)
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv(cluster.API_VARIABLE, f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv(cluster.TOKEN_VARIABLE, str(tmp_path / "token"))
    status, line = ask(gate, rollout(version))
    assert status == 403 and "the Kubernetes API at http://127.0.0.1:" in line and "cannot be reached" in line


def test_outside_a_cluster_or_without_a_token_the_gate_refuses(client, settings, kube, gate, monkeypatch):
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    # no token mounted
    monkeypatch.setenv(cluster.TOKEN_VARIABLE, "/nonexistent/token")
    status, line = ask(gate, rollout(version))
    assert status == 403 and "the service-account token /nonexistent/token cannot be read" in line
    # no API at all
    monkeypatch.delenv(cluster.API_VARIABLE)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    status, line = ask(gate, rollout(version))
    assert status == 403 and "KUBERNETES_SERVICE_HOST is unset" in line
    assert kube.requests == []


def test_the_api_defaults_to_the_in_cluster_service_and_sends_its_token_over_tls_only():
    # in a pod: the kubernetes Service's address and the mounted service account
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT_HTTPS": "443"}
    api = cluster.Api.from_env(in_pod)
    assert api.base == "https://10.96.0.1:443"
    assert str(api.token_file) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert str(api.ca_file) == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert cluster.Api.from_env({"KUBERNETES_SERVICE_HOST": "fd00::1"}).base == "https://[fd00::1]:443"
    # plain http leaves the machine never: the token would travel in clear
    for base in ("http://10.96.0.1", "http://kubernetes.default.svc", "ftp://127.0.0.1"):
        with pytest.raises(cluster.ClusterError, match="not an https URL"):
            cluster.Api.from_env({cluster.API_VARIABLE: base})


def test_https_without_the_ca_bundle_is_refused_before_anything_is_sent(tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    env = {
        cluster.API_VARIABLE: f"https://127.0.0.1:{closed_port()}",
        cluster.TOKEN_VARIABLE: str(tmp_path / "token"),
        cluster.CA_VARIABLE: str(tmp_path / "missing-ca.crt"),
    }
    with pytest.raises(cluster.ClusterError, match=r"CA bundle .*missing-ca\.crt cannot be read"):
        cluster.rolled_out(cluster.Api.from_env(env), NAMESPACE, NAME)


# ---------------------------------------------------------------- refused: hostile or malformed requests


HOSTILE = {
    "not an object": ["1"],
    "metadata not an object": {**rollout("1"), "metadata": "1"},
    "version with a newline": rollout("1\n"),
    "version with a command": rollout("1; rm -rf /"),
    "version in Arabic-Indic digits": rollout("\u0661"),
    "version null": rollout(None),
    "empty version": rollout(""),
    "huge version": rollout("1" * 100_000),
    "image without a digest": rollout("1", image=f"{IMAGE}:v1"),
    "short digest": rollout("1", image=f"{IMAGE}@sha256:{'a' * 63}"),
    "digest with a newline": rollout("1", image=f"{APPROVED_IMAGE}\n"),
    "two digests": rollout("1", image=f"{IMAGE}@{OTHER_DIGEST}@{APPROVED_DIGEST}"),
    "name that walks the API": {**rollout("1"), "name": "../../../api/v1/namespaces/kube-system/secrets/x"},
    "namespace that walks the API": {**rollout("1"), "namespace": f"{NAMESPACE}/secrets"},
    "another Deployment": {**rollout("1"), "name": f"{NAME}-gate"},
    "name missing": {key: value for key, value in rollout("1").items() if key != "name"},
}


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_malformed_or_hostile_payload_is_refused_even_when_v1_is_approved(
    client, settings, kube, gate, payload
):
    # given v1 approved and rolled out (so only the payload can be at fault)
    version = released_to_production(client, settings)
    kube.put_deployment(APPROVED_IMAGE, version)
    assert ask(gate, rollout(version))[0] == 200
    kube.requests.clear()
    # when / then
    status, line = ask(gate, payload)
    assert status == 403
    assert line.startswith("refused: ") and line.count("\n") == 1, line
    assert not [path for path, _ in kube.requests if "secrets" in path or ".." in path]


def test_a_body_that_is_not_json_is_refused(client, settings, kube, gate):
    released_to_production(client, settings)
    response = gate.post("/confirm-promotion", content=b"model_version=1")
    assert response.status_code == 403 and "not Flagger's webhook payload" in response.text


@pytest.mark.parametrize("route", ["/confirm-promotion", "/registry-events"])
def test_an_oversized_body_is_refused_without_being_read_whole(gate, route):
    # a declared length past the limit: refused on the header
    response = gate.post(route, content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413 and response.text.startswith("refused: ")
    # no declared length (chunked): refused once the stream passes the limit

    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b"x" * (64 << 10)

    response = gate.post(route, content=chunks())
    assert response.status_code == 413 and response.text.startswith("refused: ")


# ---------------------------------------------------------------- refused: no answer in time, no registry


def test_a_decision_that_takes_too_long_is_refused_before_flagger_gives_up(
    client, settings, kube, gate, monkeypatch
):
    # given a registry that hangs (Flagger's webhook timeout is 30 s; the gate answers within 20)
    release = threading.Event()

    def hangs(*args: object) -> tuple[int, str]:
        release.wait(30)
        return 200, "approved: too late"

    monkeypatch.setattr(promotion_gate, "decide", hangs)
    monkeypatch.setattr(gate_server, "DECISION_SECONDS", 0.3)
    assert gate_server.DECISION_SECONDS < 20 < 30
    try:
        # when
        status, line = ask(gate, rollout("1"))
    finally:
        release.set()
    # then
    assert status == 403
    assert line.startswith("refused: the registry did not answer within 0.3 s")


def test_a_registry_the_gate_cannot_reach_means_refused_and_not_ready(tmp_path, kube):
    local = Settings.in_folder(tmp_path, "test-model")
    unreachable = replace(local, tracking_uri=f"http://127.0.0.1:{closed_port()}")
    with TestClient(create_app(unreachable)) as http:
        status, line = ask(http, rollout("1"))
        assert status == 403 and "unreachable" in line
        assert http.get("/readyz").status_code == 503
        assert http.get("/livez").status_code == 200


def test_credentials_in_the_tracking_uri_never_reach_the_log_or_the_answer(
    tmp_path, kube, capsys, monkeypatch
):
    # given a tracking URI with a user and password, and a registry error quoting it whole and in part
    uri = "http://gate:s3cr3t-pass@mlflow.example:5000/mlflow"

    def unreachable(settings: Settings) -> None:
        raise registry.RegistryError(
            f"the tracking store {settings.tracking_uri} is unreachable"
            " (nonnumeric port: 's3cr3t-pass@mlflow')"
        )

    monkeypatch.setattr(registry, "connect", unreachable)
    settings = replace(Settings.in_folder(tmp_path, "test-model"), tracking_uri=uri)
    with TestClient(create_app(settings)) as http:
        # when
        status, line = ask(http, rollout("1"))
        ready = http.get("/readyz").text
    # then the refusal names the server as shareable_uri shows it, never the password
    assert status == 403 and line.startswith("refused: the registry cannot be read")
    assert "the tracking store http://mlflow.example:5000/mlflow is unreachable" in line
    for text in (line, ready, capsys.readouterr().out):
        assert "s3cr3t" not in text, text


def test_redaction_hides_user_info_in_any_url():
    uri = "https://ci:p%40ss@mlflow.example/path?token=abc"
    line = gate_server.redact(f"failed: {uri} and ftp://u:v@host/x", uri)
    assert line == "failed: https://mlflow.example/path and ftp://host/x"
