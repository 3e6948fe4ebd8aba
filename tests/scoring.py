"""Scoring through a rendered project's server, and the same predictions in process, to compare them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import project_env
from servers import free_port


@contextmanager
def make_serve(project: Path, version: str) -> Iterator[str]:
    """`make serve VERSION=<version>` on a free loopback port, ready; its base URL. Stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["make", "--no-print-directory", "serve", f"VERSION={version}", f"PORT={port}"],
        cwd=project,
        env=project_env(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(f"{url}/readyz", server)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the scoring server exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not answer in {timeout_s} s")


def read_rows(project: Path):
    import pandas as pd  # installed with the rendered project by the `installed_project` fixture

    return pd.read_parquet(project / "data" / "raw" / "sales.parquet")


def post_rows(url: str, rows) -> list[float]:
    """Score rows through a server in MLflow's `dataframe_split` format (the documented contract)."""
    payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False, date_format="iso"))}
    status, body = post_raw(url, payload)
    assert status == 200, body
    return json.loads(body)["predictions"]


def post_raw(url: str, payload: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def predict_in_process(project: Path, rows, version: str = "1") -> list[float]:
    import mlflow

    store = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)  # earlier tests in this process may have pointed it elsewhere
    model = mlflow.sklearn.load_model(f"models:/demand-forecast-model/{version}")
    return [float(p) for p in model.predict(rows)]
