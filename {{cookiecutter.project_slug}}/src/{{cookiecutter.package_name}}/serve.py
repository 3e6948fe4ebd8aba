"""Run the scoring service (serving.py) for registry versions on loopback, and score rows through it.

Used by `make serve` in the foreground, and by the back-test to bring candidate and champion up together in
ONE process (each version loaded once, each at its own route) and take it down again. The versions are
exported from the registry first, so the server loads plain files and never imports MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess  # nosec B404 # the BentoML server: fixed argument lists, no shell
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

STARTUP_TIMEOUT_S = 120  # a worker failing at start-up is restarted forever: readiness needs a deadline
STOP_TIMEOUT_S = 20
REQUEST_TIMEOUT_S = 60
SERVICE = "{{ cookiecutter.package_name }}.serving:Scoring"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def export_versions(settings: Settings, versions: list[str], folder: Path) -> None:
    """Download each version's model into folder/<version>/, the layout the service loads from."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for version in versions:
        mlflow.artifacts.download_artifacts(
            artifact_uri=registry.model_uri(settings.model_name, version),
            dst_path=str(folder / version),
            tracking_uri=settings.tracking_uri,
        )


def server_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """`bentoml serve` of this package's service, from this interpreter's environment."""
    return [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]


def server_env(model_dir: Path, versions: list[str]) -> dict[str, str]:
    """Which versions to serve (the first answers /invocations); one thread, no telemetry, scratch in tmp."""
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    env.update(MODEL_DIR=str(model_dir), MODEL_VERSIONS=",".join(versions), BENTOML_DO_NOT_TRACK="true")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], probe: str = "/readyz", timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Poll the probe (/readyz: 200 once every model is loaded) until it answers; fail fast on an exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scoring server at {url} exited ({process.returncode}) before it was ready")
        try:  # the URL is the loopback address this module built
            with urllib.request.urlopen(f"{url}{probe}", timeout=2) as response:  # nosec B310 # loopback URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(
        f"scoring server at {url} not ready after {timeout_s:.0f} s (does a model fail to load?)"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's arbiter (it stops its worker); kill the whole tree only if that does not work.

    The worker runs in a session of its own, so killing the arbiter's process group alone would orphan it.
    """
    import psutil  # BentoML's own dependency

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in tree:
        with suppress(psutil.NoSuchProcess):
            child.kill()


@contextmanager
def serving(settings: Settings, *versions: str) -> Iterator[list[str]]:
    """One scoring server on a free loopback port for all the versions; a base URL per version, in order."""
    if not versions:
        yield []
        return
    listed = list(dict.fromkeys(versions))  # each version loaded once, whatever the caller passes
    with tempfile.TemporaryDirectory(prefix="models-") as model_dir:
        export_versions(settings, listed, Path(model_dir))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"Starting one scoring server for {' and '.join(f'v{v}' for v in listed)} on {url}", flush=True)
        process = subprocess.Popen(  # nosec B603 # our own server command, no shell
            server_command(port),
            env=server_env(Path(model_dir), listed),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_ready(url, process)
            yield [f"{url}/v{version}" for version in versions]
        finally:
            stop(process)


def dataframe_split(rows: pd.DataFrame) -> dict[str, list]:
    """Rows in MLflow's `dataframe_split` form (columns, then one list per row): what a client sends."""
    return json.loads(rows.to_json(orient="split", index=False, date_format="iso"))


def score(url: str, rows: pd.DataFrame, batch_size: int = 1000) -> np.ndarray:
    """POST rows to <url>/invocations in MLflow's `dataframe_split` format and return the predictions."""
    import numpy as np

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"scoring endpoint must be an http(s) URL, got {url!r}")
    predictions = []
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start : start + batch_size]
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"dataframe_split": dataframe_split(batch)}).encode(),
            headers={"Content-Type": "application/json"},
        )
        # only http(s) URLs reach this point (checked above)
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # nosec B310 # http(s)
            predictions.extend(json.loads(response.read())["predictions"])
    return np.asarray(predictions, dtype=float)


def serve_version(settings: Settings, version: str, port: int) -> int:
    """Entry point of `make serve`: serve one registry version in the foreground until interrupted."""
    client = registry.connect(settings)
    registry.get_version(client, settings.model_name, version)
    model_dir = Path(tempfile.mkdtemp(prefix="models-"))
    try:
        export_versions(settings, [version], model_dir)
        print(
            f"Serving {settings.model_name} version {version} on http://127.0.0.1:{port}"
            f" (POST /invocations, GET /readyz, /metrics; Ctrl+C to stop)",
            flush=True,
        )
        completed = subprocess.run(  # nosec B603 # our own server command, no shell
            server_command(port), env=server_env(model_dir, [version]), check=False
        )
        return completed.returncode
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
