"""A throwaway benchmark workspace: temp store, data and settings; the repo's own store stays clean."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.settings import Settings


@contextmanager
def workspace() -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        root = Path(folder)
        data = root / "sales.parquet"
        generate_sales(newest_complete_week(date.today())).to_parquet(data, index=False)
        yield Settings(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            model_name="bench-model",
            data_uri=str(data),
            snapshot_dir=root / "snapshots",
            reports_dir=root / "reports",
            deploy_dir=root / "deploy",
            image_repository="registry.invalid/bench",
            namespace="bench",
            ci_run_url="",
        )
