"""Shared fixtures: a small, valid sales frame and settings that keep every file inside a temp folder."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.settings import Settings

TODAY = date(2026, 3, 18)


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
    return Settings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_name="test-model",
        data_uri=str(tmp_path / "data" / "sales.parquet"),
        snapshot_dir=tmp_path / "snapshots",
        reports_dir=tmp_path / "reports",
        deploy_dir=tmp_path / "deploy",
        image_repository="registry.example.com/test",
        namespace="test",
        ci_run_url="",
    )
