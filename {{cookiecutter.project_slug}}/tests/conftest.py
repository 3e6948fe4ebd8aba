"""Shared fixtures: a small, valid sales frame and settings that keep every file inside a temp folder."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from http.server import ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.settings import Settings

TODAY = date(2026, 3, 18)


# Set by CI systems (and by make from its command line): tests set their own, so CI runs them like a laptop.
CALLER_VARIABLES = (
    "GITHUB_ACTIONS", "TF_BUILD", "JENKINS_URL", "RELEASE_ENVIRONMENT", "APPROVED_BY", "DATA_URI",
    "VERSION", "ENV", "APPROVER", "CONFIG", "PORT", "TRAINED_BY", "CI_RUN_URL", "RETRAIN_REASON",
    "MODEL_VERSION", "MODEL_DIR", "FORECAST_URI", "SCENARIOS", "ENGINE", "SCENARIO", "N",
    "SCENARIO_CACHE_SIZE",
)  # fmt: skip


@contextmanager
def serving_in_thread(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """Serve a stand-in on a thread for the block, then stop it. Polling every 10 ms, not `serve_forever`'s
    default 500, because every test that stops one would otherwise wait out half a second."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def local_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts outside CI, with no release values passed in."""
    for name in CALLER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def sales() -> pd.DataFrame:
    """Two years of synthetic history ending in the week before TODAY."""
    return generate_sales(newest_complete_week(TODAY), weeks=104)


@pytest.fixture(scope="session")
def blank_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store: creating one costs seconds, copying it does not."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose store, data, snapshots, reports and deploy/ all live in this test's temp folder."""
    return Settings.in_folder(tmp_path, "test-model")


# ---- a registry to release from: promotion, the cluster's gate, the CLI and the evidence report use it

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
GOOD_EVIDENCE = {
    "stage": "dev",
    "git_sha": "0123456789abcdef0123456789abcdef01234567",
    "git_dirty": "false",
    "data_fingerprint": "f" * 64,
    "data_snapshot": "/snapshots/f.parquet",
    "data_validation": "passed",
    "data_validation_suite": "raw_sales",
    "trained_by": "carol",
    "ci_run_url": "local",
    "config": "config/train.toml",
    "backtest_champion": "none",
    "backtest_wape": "0.1",
    "backtest_champion_wape": "none",
    "backtest_report": "backtest/backtest-v1.md",
    "backtest_at": "2026-03-18T00:00:00+00:00",
    "backtest_verdict": "passed",
}


def open_registry(settings, tmp_path, blank_store):
    """A real registry in a temp SQLite store, and the repo's own overlays copied beside it."""
    import mlflow

    from {{ cookiecutter.package_name }} import registry

    shutil.copy(blank_store, settings.tracking_uri.removeprefix("sqlite:///"))
    for env in ("staging", "production"):
        shutil.copytree(DEPLOY / env, settings.deploy_dir / env)
    client = registry.connect(settings)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("promotions", tmp_path.joinpath("art").as_uri())
    )
    client.create_registered_model(settings.model_name)
    return client


def new_version(client, settings, **evidence: str) -> str:
    """A registered version carrying the given evidence (the real model is irrelevant to promotion)."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_text("placeholder", "model/MLmodel")
    tags = {key: value for key, value in {**GOOD_EVIDENCE, **evidence}.items() if value is not None}
    version = client.create_model_version(
        settings.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags
    )
    return str(version.version)


class CiApiStandIn:
    """A CI provider's API for the triggers (retraining, registry events): records every call and answers it
    like the provider does (GitHub: 204 without a body), or fails with `error`."""

    def __init__(self, answer: object = None, error: Exception | None = None) -> None:
        self.answer = answer
        self.error = error
        self.requests: list[tuple[str, str, dict[str, str], object]] = []

    def send(self, method: str, url: str, headers: Mapping[str, str], body: object = None) -> object:
        self.requests.append((method, url, dict(headers), body))
        if self.error is not None:
            raise self.error
        return self.answer
