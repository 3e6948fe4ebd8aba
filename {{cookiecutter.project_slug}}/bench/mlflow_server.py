"""The baseline of `make bench-serve`: MLflow's scoring server (`mlflow models serve`) for a registry version.

Started the way its documentation says, in this virtualenv (`--env-manager local`), with one worker like the
project's server and the same OMP_NUM_THREADS. It runs uvicorn as a child process, so it gets a process group
of its own and the whole group is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404 # the MLflow scoring server: fixed argument list, no shell
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.serve import free_port, wait_until_ready
from {{ cookiecutter.package_name }}.settings import Settings

STOP_TIMEOUT_S = 20


def command(model_uri: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def environment(settings: Settings) -> dict[str, str]:
    """The registry through the tracking URI, uvicorn through this venv's bin on PATH, one thread per call."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")  # what serve.server_env gives the project's server
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then kill whatever is left of it."""
    os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)
    with suppress(ProcessLookupError):  # the group is gone when uvicorn stopped in time
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def running(settings: Settings, version: str) -> Iterator[str]:
    """MLflow's scoring server for one registry version on a free loopback port; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(  # nosec B603 # our own server command, no shell
        command(registry.model_uri(settings.model_name, version), port),
        env=environment(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_ready(url, process, probe="/ping")
        yield url
    finally:
        stop(process)
