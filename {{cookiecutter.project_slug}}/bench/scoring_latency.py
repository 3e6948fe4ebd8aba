"""Benchmark: latency of single-row scoring through MLflow's scoring server at a fixed request rate.

Run: `make bench-serve` (or `python -m bench.scoring_latency [rate_per_s] [seconds]`). Trains a model in a
temp store, serves it on a loopback port, sends one row per request on a fixed schedule, prints p50/p95/p99.
Bounded: at most rate x seconds requests, to 127.0.0.1 only, and the server is stopped at the end.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from bench.workspace import workspace
from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.data import TARGET, load_sales
from {{ cookiecutter.package_name }}.serve import score, serving
from {{ cookiecutter.package_name }}.train import train


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(rate_per_s: float = 20.0, seconds: float = 15.0) -> int:
    with workspace() as settings:
        os.chdir(Path(__file__).resolve().parents[1])  # train reads config/ relative to the project root
        if train(settings) != 0:
            return 1
        version = registry.latest_version(registry.connect(settings), settings.model_name).version
        rows = load_sales(settings.data_uri).drop(columns=TARGET).tail(500).reset_index(drop=True)
        with serving(settings, str(version)) as (url,):
            for index in range(20):  # warm-up
                score(url, rows.iloc[[index]])
            total = int(rate_per_s * seconds)
            latencies_ms, late = [], 0
            start = time.perf_counter()
            for index in range(total):
                due = start + index / rate_per_s
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:
                    late += 1
                sent = time.perf_counter()
                score(url, rows.iloc[[index % len(rows)]])
                latencies_ms.append((time.perf_counter() - sent) * 1000)
            elapsed = time.perf_counter() - start
    print(f"requests                 {total} single-row at a target {rate_per_s:.0f}/s")
    print(f"achieved rate            {total / elapsed:.1f}/s")
    print(f"late sends               {late}")
    print(f"p50 latency              {statistics.median(latencies_ms):.1f} ms")
    print(f"p95 latency              {percentile(latencies_ms, 0.95):.1f} ms")
    print(f"p99 latency              {percentile(latencies_ms, 0.99):.1f} ms")
    print(f"max latency              {max(latencies_ms):.1f} ms")
    return 0


if __name__ == "__main__":
    arguments = [float(value) for value in sys.argv[1:3]]
    raise SystemExit(main(*arguments))
