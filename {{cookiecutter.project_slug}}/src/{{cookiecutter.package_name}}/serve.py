"""Serving: MLflow's own scoring server (/invocations, /ping, /health, /version) for a registry version.

Used by `make serve` in the foreground, and by the back-test to bring candidate and champion up on free
loopback ports and take them down again.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess  # nosec B404 # the MLflow scoring server: fixed argument lists, no shell
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.settings import Settings

STARTUP_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(model_uri: str, port: int) -> list[str]:
    """`mlflow models serve` in this interpreter's environment (no conda/virtualenv creation)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def server_env(settings: Settings) -> dict[str, str]:
    """The server finds the registry through the tracking URI, and uvicorn through this venv's bin on PATH."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Poll /ping until the server answers; fail fast if it exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"scoring server for {url} exited with code {process.returncode} before it was ready"
            )
        try:  # the URL is the loopback address this module built
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:  # nosec B310 # loopback URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"scoring server at {url} not ready after {timeout_s:.0f} s")


@contextmanager
def serving(settings: Settings, *versions: str) -> Iterator[list[str]]:
    """Run scoring servers for registry versions on free loopback ports (started together), one URL each."""
    servers = []
    try:
        for version in versions:
            port = free_port()
            command = server_command(registry.model_uri(settings.model_name, version), port)
            process = subprocess.Popen(  # nosec B603 # our own server command, no shell
                command, env=server_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            servers.append((f"http://127.0.0.1:{port}", process))
        for url, process in servers:
            wait_until_ready(url, process)
        yield [url for url, _ in servers]
    finally:
        for _, process in servers:
            process.terminate()
        for _, process in servers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def score(url: str, rows: pd.DataFrame, batch_size: int = 1000) -> np.ndarray:
    """POST rows to /invocations in MLflow's `dataframe_split` format and return the predictions."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"scoring endpoint must be an http(s) URL, got {url!r}")
    predictions = []
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start : start + batch_size]
        payload = json.loads(batch.to_json(orient="split", index=False, date_format="iso"))
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"dataframe_split": payload}).encode(),
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
    print(f"Serving {settings.model_name} version {version} on http://127.0.0.1:{port} (Ctrl+C to stop)")
    completed = subprocess.run(  # nosec B603 # our own server command, no shell
        server_command(registry.model_uri(settings.model_name, version), port),
        env=server_env(settings),
        check=False,
    )
    return completed.returncode
