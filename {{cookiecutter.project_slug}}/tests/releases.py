"""A real registry in a temp SQLite store with the repo's overlays beside it, and versions carrying
evidence: what promotion and the cluster's gate are tested against."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow

from {{ cookiecutter.package_name }} import registry

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
    with mlflow.start_run() as run:
        mlflow.log_text("placeholder", "model/MLmodel")
    tags = {key: value for key, value in {**GOOD_EVIDENCE, **evidence}.items() if value is not None}
    version = client.create_model_version(
        settings.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags
    )
    return str(version.version)
