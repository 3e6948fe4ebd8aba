"""A throwaway benchmark workspace: temp store, data and settings; the repo's own store stays clean."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from datetime import date
from pathlib import Path

from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]


@contextmanager
def workspace(scenarios: int | None = None) -> Iterator[Settings]:
    """Settings for a temp folder holding generated data (`scenarios` series, else the generator's default),
    which is also the working directory meanwhile, with a copy of the project's config/ (the stages read
    their policies from there).

    MLflow puts a SQLite store's artifacts in ./mlruns, which would otherwise land in the project.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as folder, chdir(folder):
        shutil.copytree(PROJECT / "config", Path(folder) / "config")
        settings = Settings.in_folder(Path(folder), "bench-model")
        data = Path(settings.data_uri)
        data.parent.mkdir(parents=True)
        frame = generate_sales(newest_complete_week(date.today()), scenarios=scenarios)
        frame.to_parquet(data, index=False)
        yield settings
