"""Where per-scenario fits run: `local` (processes on this machine) or `spark` (PySpark, see spark_engine.py).

Both engines call the same function on the same rows of each scenario and return its records, so the same
data and seed give identical per-scenario metrics whichever engine ran them. ENGINE chooses (default local).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd

from {{ cookiecutter.package_name }}.contract import SERIES_COLUMNS

Fit = Callable[[pd.DataFrame], dict[str, Any]]


def scenario_slices(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Each scenario's rows, as its own frame."""
    return [rows for _, rows in frame.groupby(SERIES_COLUMNS, sort=True)]


def _fit_all(fit: Fit, slices: list[pd.DataFrame]) -> list[dict[str, Any]]:
    return [fit(rows) for rows in slices]


def run_local(frame: pd.DataFrame, fit: Fit, workers: int | None = None) -> list[dict[str, Any]]:
    """Fit every scenario in worker processes, one per core, each taking a share of the scenarios.

    Workers start from a fork server, not by forking this process: the training process has MLflow's and
    Great Expectations' threads running, and forking a process with threads can deadlock its child."""
    slices = scenario_slices(frame)
    workers = min(workers or os.cpu_count() or 1, len(slices))
    if workers <= 1:
        return _fit_all(fit, slices)
    shares = [slices[start::workers] for start in range(workers)]  # interleaved: big stores spread out
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([f"{__package__}.fitting"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return [record for share in pool.map(_fit_all, [fit] * workers, shares) for record in share]


def run_fits(engine: str, frame: pd.DataFrame, fit: Fit) -> list[dict[str, Any]]:
    """One record per scenario, from `engine`: `spark`, else `local` (`inputs.engine` checked the name)."""
    if engine == "spark":
        from {{ cookiecutter.package_name }}.spark_engine import run_spark  # PySpark is an optional extra

        return run_spark(frame, fit)
    return run_local(frame, fit)
