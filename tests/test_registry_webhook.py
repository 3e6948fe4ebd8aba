"""Registry webhooks: a real `mlflow server` (SQLite) delivers `model_version.created` to the rendered
receiver, which verifies MLflow's signature and starts the release pipeline on a CI stand-in; and each
provider's training pipeline takes that version as data that skips training.

Everything listens on 127.0.0.1: MLflow refuses plain-HTTP and loopback webhook URLs unless its two switches
allow them (MLFLOW_WEBHOOK_ALLOWED_SCHEMES, MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS), set in this test's environment,
which the server inherits.
"""

from __future__ import annotations

import http.server
import importlib
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_PACKAGE, render, use_rendered_package
from servers import TrackingServer, https_api, serving_in_thread

SECRET = "whsec-e2e-4b1d"
MODEL = "demand-forecast-model"
DISPATCH = "/repos/acme/demand-forecast/actions/workflows/train.yml/dispatches"


@contextmanager
def receiver(handle: Callable[[bytes, dict[str, str]], tuple[int, str]]) -> Iterator[tuple[str, list[dict]]]:
    """A plain HTTP server on 127.0.0.1 that answers each POST with `handle` (the rendered handle_delivery),
    as the project's gate server mounts it; yields its URL and every delivery with its answer."""
    deliveries: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = dict(self.headers)
            try:
                status, line = handle(body, headers)
            except Exception as error:  # shown in the assertion, not lost in a server thread
                status, line = 500, f"the receiver raised {error!r}"
            deliveries.append({"body": body, "headers": headers, "status": status, "line": line})
            payload = line.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    with serving_in_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/registry-events", deliveries


@contextmanager
def tracking_server(folder: Path, meanwhile: Callable[[], None]) -> Iterator[str]:
    """`mlflow server` on a SQLite store (webhooks need a SQL backend), started while `meanwhile` runs (it
    takes ~20 s here) and killed at the end (a graceful stop would add seconds and prove nothing)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        starting = pool.submit(TrackingServer, f"sqlite:///{folder / 'mlflow.db'}", folder)
        try:
            meanwhile()
        finally:
            server = starting.result()
    try:
        yield server.url
    finally:
        server.kill()
        server.stop()  # the process group too: nothing outlives the test


def wait_for(deliveries: list[dict], count: int, timeout_s: float = 60) -> None:
    """MLflow delivers from a background thread pool after the registry call has returned (a deadline, not a
    timing)."""
    deadline = time.monotonic() + timeout_s
    while len(deliveries) < count:
        assert time.monotonic() < deadline, f"{len(deliveries)} of {count} deliveries arrived in {timeout_s} s"
        time.sleep(0.1)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def register(client, name: str) -> str:
    """Register a version as a team training outside CI would: a run, its artefact, a version of it."""
    run = client.create_run(client.create_experiment(f"{name}-{uuid.uuid4().hex[:6]}"))
    client.log_text(run.info.run_id, "a model", "model/MLmodel")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    created = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return str(created.version)


@pytest.mark.e2e
def test_a_version_registered_on_a_real_mlflow_server_starts_exactly_one_release(tmp_path, monkeypatch):
    # given the tracking server's switches that let it deliver over plain HTTP to loopback (never in production)
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    receiving: dict = {}

    def rendered_receiver() -> None:
        use_rendered_package(render(tmp_path / "render"))
        receiving["handle"] = importlib.import_module(f"{DEFAULT_PACKAGE}.registry_events").handle_delivery
        importlib.import_module("mlflow")

    # and a real tracking server; the rendered receiver, configured for GitHub; GitHub's API stand-in
    with (
        tracking_server(tmp_path, rendered_receiver) as tracking,
        https_api(tmp_path, 204) as (api, certificate, dispatches),
        receiver(lambda body, headers: receiving["handle"](body, headers)) as (url, deliveries),
    ):
        for name, value in {
            "MLFLOW_WEBHOOK_SECRET": SECRET,
            "MODEL_NAME": MODEL,
            "CI_PROVIDER": "github",
            "GITHUB_REPOSITORY": "acme/demand-forecast",
            "GITHUB_TOKEN": "t0ken",
            "GITHUB_API_URL": api,
            "SSL_CERT_FILE": str(certificate),
        }.items():
            monkeypatch.setenv(name, value)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)  # earlier tests set a global one
        client.create_webhook(name="release-on-register", url=url, events=["model_version.created"], secret=SECRET)
        # when a team registers a version of the product's model
        version = register(client, MODEL)
        wait_for(deliveries, 1)
        # then the receiver verified MLflow's delivery and dispatched train.yml once, with that version
        (delivery,) = deliveries
        assert delivery["status"] == 202, delivery["line"]
        assert delivery["line"] == f"release pipeline started for v{version}: GitHub workflow train.yml on main"
        (dispatch,) = dispatches
        assert (dispatch["method"], dispatch["path"]) == ("POST", DISPATCH)
        assert dispatch["body"] == {"ref": "main", "inputs": {"version": version}}
        assert dispatch["headers"]["Authorization"] == "Bearer t0ken"
        # when another team's model gets a version: acknowledged, nothing started
        register(client, "another-team-model")
        wait_for(deliveries, 2)
        assert deliveries[1]["status"] == 200 and deliveries[1]["line"].startswith("ignored: ")
        # when someone forges a delivery (no secret) or replays the one MLflow sent
        forged = {
            "Content-Type": "application/json",
            "X-MLflow-Delivery-Id": str(uuid.uuid4()),
            "X-MLflow-Timestamp": str(int(time.time())),
            "X-MLflow-Signature": "v1,bm90IGEgc2lnbmF0dXJl",
        }
        forged_answer = post(url, delivery["body"], forged)
        sent = {k: v for k, v in delivery["headers"].items() if k.lower().startswith(("x-mlflow-", "content-type"))}
        replayed_answer = post(url, delivery["body"], sent)
    # then both are refused and nothing more was dispatched
    assert forged_answer[0] == 401 and forged_answer[1].startswith("refused: X-MLflow-Signature does not match")
    assert replayed_answer[0] == 409 and "already received" in replayed_answer[1]
    assert len(dispatches) == 1
    assert json.loads(delivery["body"])["data"]["version"] == version


# ---- the training pipeline's `version` input: data in the environment, read by `make candidate` only ----------

# A Jenkinsfile's shell steps (`sh '...'`) and stages, read as test_pipelines.py reads them.
JENKINS_SH = re.compile(r"""\bsh\s*\(?\s*(?:script:\s*)?'([^']*)'""")
JENKINS_STAGE = re.compile(r"stage\('([^']+)'\)")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def scripts(node: object) -> list[str]:
    """Every `script:` of an Azure pipeline, depth first."""
    if isinstance(node, dict):
        return ([node["script"]] if "script" in node else []) + [s for v in node.values() for s in scripts(v)]
    return [s for item in node for s in scripts(item)] if isinstance(node, list) else []


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {p: render(tmp_path_factory.mktemp(p), ci_provider=p) for p in ("github", "azure", "jenkins")}


def test_github_takes_the_version_as_a_dispatch_input_that_skips_training(pipelines) -> None:
    path = pipelines["github"] / ".github" / "workflows" / "train.yml"
    workflow = load(path)
    version = workflow[True]["workflow_dispatch"]["inputs"]["version"]
    assert (version["type"], version["required"]) == ("string", False)
    job = workflow["jobs"]["train"]
    # handed to the job as VERSION (data for `make candidate`), and mentioned nowhere else
    assert job["env"]["VERSION"] == "${{ inputs.version }}"
    assert path.read_text().count("inputs.version") == 1
    steps = {step.get("run", "").strip(): step for step in job["steps"]}
    assert steps["make data-test"]["if"] == steps["make train"]["if"] == "env.VERSION == ''"
    (candidate,) = [step for step in job["steps"] if step.get("id") == "candidate"]
    assert "if" not in candidate, "the version is resolved (or checked) on every run"
    assert not [run for run in steps if "VERSION" in run], "no script reads the version itself"


def test_azure_takes_the_version_as_a_number_parameter_that_skips_training(pipelines) -> None:
    pipeline = load(pipelines["azure"] / "azure-pipelines" / "train-release.yml")
    (version,) = [p for p in pipeline["parameters"] if p["name"] == "version"]
    assert (version["type"], version["default"]) == ("number", "0")  # Azure refuses anything but a number
    (train,) = [stage for stage in pipeline["stages"] if stage["stage"] == "train"]
    (steps,) = [job["steps"] for job in train["jobs"]]
    # training is inserted when the run compiles with version 0, never decided by a runtime condition
    trains = "${{ if eq(parameters.version, 0) }}"
    (training,) = [item[trains] for item in steps if list(item) == [trains]]
    assert [step["script"] for step in training] == ["make data-test", "make train"]
    (candidate,) = [step for step in steps if step.get("name") == "candidate"]
    assert candidate["env"]["${{ if ne(parameters.version, 0) }}"] == {"VERSION": "${{ parameters.version }}"}
    assert not [script for script in scripts(pipeline) if "version }}" in script or "VERSION" in script]


def test_jenkins_takes_the_version_as_a_build_parameter_that_skips_training(pipelines) -> None:
    text = (pipelines["jenkins"] / "Jenkinsfile").read_text()
    assert "string(name: 'RELEASE_VERSION', defaultValue: ''," in text
    marks = list(JENKINS_STAGE.finditer(text))
    train = next(text[m.end() : n.start()] for m, n in zip(marks, marks[1:], strict=False) if m.group(1) == "Train")
    # training only without it; `make candidate` gets it as VERSION in its environment (null-safe), no shell sees it
    assert "if (!params.RELEASE_VERSION) {" in train
    assert "withEnv([\"VERSION=${params.RELEASE_VERSION ?: ''}\"]) {" in train
    code = re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE)
    assert code.count("params.RELEASE_VERSION") == 2, "read only to skip training and to hand it to candidate"
    assert not [script for script in JENKINS_SH.findall(text) if "VERSION" in script]
