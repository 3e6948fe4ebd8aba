"""Benchmark: this project's scoring server against MLflow's, on the same version, at 1 and 8 connections.

Run: `make bench-serve` (or `python -m bench.serving_throughput [seconds_per_phase]`, default 10: about two
minutes in all). Trains a model in a temp store, then serves it with each server in turn on 127.0.0.1 (never
both at once): start-up until ready, a short warm-up, then wrk at 1 and at 8 connections with one-row requests
made of real rows. Both servers must predict those rows alike. Prints a line per phase, and last:
`serve c8_rps=X c8_p99_ms=Y mlflow_c8_rps=Z ratio=R c1_p50_ms=A mlflow_c1_p50_ms=B start_s=S`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import mlflow_server, wrk
from {{ cookiecutter.package_name }}.serve import dataframe_split, score, serving

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from {{ cookiecutter.package_name }}.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SECONDS = 10  # per phase
REQUEST_ROWS = 64  # distinct one-row requests, sampled from the data set
WARM_UP_S = 2


class BenchError(Exception):
    """A run whose figures would mislead: the two servers do not predict alike."""


@dataclass(frozen=True)
class Figures:
    """One server's figures: seconds until ready, wrk's load at 1 and 8 connections, its predictions."""

    start_s: float
    c1: wrk.Load
    c8: wrk.Load
    predictions: np.ndarray


def one_row_bodies(rows: pd.DataFrame) -> list[str]:
    """One `dataframe_split` request per row: what a client of either server sends."""
    split = dataframe_split(rows)
    return [
        json.dumps({"dataframe_split": {"columns": split["columns"], "data": [row]}}) for row in split["data"]
    ]


def load(name: str, url: str, bodies: list[str], connections: int, seconds: int) -> wrk.Load:
    measured = wrk.run(f"{url}/invocations", bodies, connections, seconds)
    print(
        f"{name:<7} c{connections}: {measured.rps:6.1f} req/s  p50 {measured.p50_ms:6.1f} ms"
        f"  p99 {measured.p99_ms:6.1f} ms  ({measured.requests} requests in {seconds} s)",
        flush=True,
    )
    return measured


@contextmanager
def project_server(settings: Settings, version: str) -> Iterator[str]:
    """The project's scoring server (serve.py) for one version: its base URL, as MLflow's is given."""
    with serving(settings, version) as (url,):
        yield url


def bench_server(name: str, server: AbstractContextManager[str], rows: pd.DataFrame, seconds: int) -> Figures:
    """Start the server, score the rows once, warm it up, then load it at 1 and at 8 connections."""
    started = time.perf_counter()
    with server as url:
        start_s = time.perf_counter() - started
        print(f"{name:<7} ready in {start_s:.1f} s", flush=True)
        predictions = score(url, rows)
        bodies = one_row_bodies(rows)
        wrk.run(f"{url}/invocations", bodies, 8, WARM_UP_S)
        return Figures(
            start_s, load(name, url, bodies, 1, seconds), load(name, url, bodies, 8, seconds), predictions
        )


def summary(ours: Figures, mlflow: Figures) -> str:
    return (
        f"serve c8_rps={ours.c8.rps:.1f} c8_p99_ms={ours.c8.p99_ms:.1f} mlflow_c8_rps={mlflow.c8.rps:.1f}"
        f" ratio={ours.c8.rps / mlflow.c8.rps:.2f} c1_p50_ms={ours.c1.p50_ms:.1f}"
        f" mlflow_c1_p50_ms={mlflow.c1.p50_ms:.1f} start_s={ours.start_s:.1f}"
    )


def measure(settings: Settings, seconds: int) -> str | None:
    """Train a version, bench both servers on it; the summary line, or None if training failed."""
    import numpy as np

    from {{ cookiecutter.package_name }} import registry
    from {{ cookiecutter.package_name }}.data import TARGET, load_sales
    from {{ cookiecutter.package_name }}.train import DEFAULT_CONFIG, train

    if train(settings, ROOT / DEFAULT_CONFIG) != 0:
        return None
    version = str(registry.latest_version(registry.connect(settings), settings.model_name).version)
    rows = load_sales(settings.data_uri).drop(columns=TARGET).sample(REQUEST_ROWS, random_state=0)
    ours = bench_server("project", project_server(settings, version), rows, seconds)
    mlflow = bench_server("mlflow", mlflow_server.running(settings, version), rows, seconds)
    if not np.allclose(ours.predictions, mlflow.predictions):
        raise BenchError("the two servers predict the same rows differently, so their figures do not compare")
    return summary(ours, mlflow)


def main(arguments: list[str]) -> int:
    if not wrk.installed():
        print(wrk.MISSING, file=sys.stderr)
        return 2
    seconds = arguments[0] if arguments else str(DEFAULT_SECONDS)
    if not seconds.isdigit() or int(seconds) == 0:
        print(
            f"bench-serve: seconds per phase must be a whole number above 0, got {seconds!r}", file=sys.stderr
        )
        return 2
    from bench.workspace import workspace

    try:
        with workspace() as settings:
            line = measure(settings, int(seconds))
    except (BenchError, wrk.LoadError, RuntimeError, OSError) as error:  # OSError: a request that failed
        print(f"bench-serve: {error}", file=sys.stderr)
        return 1
    if line is None:
        return 1
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
