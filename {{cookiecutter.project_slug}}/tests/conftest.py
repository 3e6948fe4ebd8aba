"""Shared fixtures: a small, valid sales frame and settings that keep every file inside a temp folder."""

from __future__ import annotations

from datetime import date
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
    "MODEL_VERSION", "MODEL_DIR", "FORECAST_URI",
)  # fmt: skip


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
