"""Scoring through a rendered project's server, and the same predictions in process, to compare them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path


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
