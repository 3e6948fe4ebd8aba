"""Benchmark: per-scenario training at scale: N scenarios gated, fitted and registered as ONE version.

Run: `make bench-scenarios N=500 [ENGINE=local|spark]` (or `python -m bench.scenarios 500`). In one run: a
first per-scenario training, put in production directly (not timed); then the one measured, the whole
per-scenario training of N synthetic scenarios as `make train-scenarios` runs it (data gate, fits,
champion/challenger against production's N models, logging, one registry version); then, for comparison,
naive per-model logging on a sample of the same scenarios (fit, then `mlflow.sklearn.log_model` with inferred
requirements into its own registered model), and, when wrk is installed, the 1-row latency at one connection
of one scenario of that version against a global model of the same data, both in one server.
The measured training runs in a process that has trained once already (its imports are loaded), as a
scheduler's long-lived worker would. Memory is the peak resident size of the training and its worker
processes together. Prints, last:
`scenarios=N seconds=S per_scenario=P naive_per_model=Q speedup=R peak_rss_mb=M`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

from bench import wrk
from bench.workspace import workspace
from {{ cookiecutter.package_name }} import inputs, registry
from {{ cookiecutter.package_name }}.contract import SCENARIO_SEPARATOR, TARGET, load_sales
from {{ cookiecutter.package_name }}.fitting import TrainConfig, fit_global
from {{ cookiecutter.package_name }}.scenario_models import scenario_names
from {{ cookiecutter.package_name }}.train import DEFAULT_CONFIG, train

ROOT = Path(__file__).resolve().parents[1]
NAIVE_SAMPLE = 3  # scenarios logged the naive way: 4-17 s each, so a sample, not all N
SERVING_SECONDS = 5  # per latency measurement, after a 2 s warm-up


def peak_rss_mb(work: Callable[[], Any]) -> tuple[Any, float]:
    """Run `work`; its result and the peak resident memory of this process and all its descendants, in MB."""
    import psutil

    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a worker that just ended
                    continue
            peak[0] = max(peak[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, peak[0] / 2**20


def naive_per_model(settings: Any, config: TrainConfig, sample: int) -> float:
    """Seconds per model when each scenario is fitted, logged and registered on its own, the naive way."""
    import mlflow

    frame = load_sales(settings.data_uri)
    names = scenario_names(frame)
    mlflow.set_experiment("bench-naive")
    started = time.perf_counter()
    for index, name in enumerate(names.unique()[:sample]):
        result = fit_global(frame[names == name], config.for_one_scenario())
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                result.pipeline,
                name="model",
                input_example=result.test.drop(columns=TARGET).head(5),
                serialization_format="cloudpickle",
                registered_model_name=f"{settings.model_name}-naive-{index}",
            )
    return (time.perf_counter() - started) / sample


def serving_p50_ms(settings: Any, per_scenario: str, single: str) -> tuple[float, float]:
    """1-row p50 latency at one connection: one scenario of the per-scenario version, then the single
    (global) model, on the same rows, one server hosting both."""
    from bench.serving_throughput import one_row_bodies
    from {{ cookiecutter.package_name }}.serve import serving

    frame = load_sales(settings.data_uri)
    names = scenario_names(frame)
    bodies = one_row_bodies(frame[names == names.iloc[0]].drop(columns=TARGET).tail(64))
    with redirect_stdout(StringIO()), serving(settings, per_scenario, single) as urls:
        for url in urls:
            wrk.run(f"{url}/invocations", bodies, 1, 2)  # warm-up: the scenario's model is unpickled here
        scenario_url, single_url = urls
        return (
            wrk.run(f"{scenario_url}/invocations", bodies, 1, SERVING_SECONDS).p50_ms,
            wrk.run(f"{single_url}/invocations", bodies, 1, SERVING_SECONDS).p50_ms,
        )


def lookup_seconds(settings: Any, version: str) -> tuple[float, float, float]:
    """Seconds for `lineage --scenario` of one scenario, for loading the version as a server does, and for
    then loading that one scenario's model: what must not grow with N is the first and the last."""
    import mlflow

    from {{ cookiecutter.package_name }}.lineage import show_lineage

    name = scenario_names(load_sales(settings.data_uri).head(1)).iloc[0]
    started = time.perf_counter()
    with redirect_stdout(StringIO()):
        show_lineage(settings, version, as_json=True, scenario=tuple(name.split(SCENARIO_SEPARATOR)))
    lineage_s = time.perf_counter() - started
    started = time.perf_counter()
    model = mlflow.sklearn.load_model(registry.model_uri(settings.model_name, version))
    version_s = time.perf_counter() - started
    started = time.perf_counter()
    model.model(name)
    return lineage_s, version_s, time.perf_counter() - started


def in_production(settings: Any, version: str) -> None:
    """Make `version` production's champion the way a release records it (an environment copy and its
    alias), without the gates: the benchmark times training against a champion, not promotion."""
    client = registry.connect(settings)
    source = registry.get_version(client, settings.model_name, version)
    production = registry.environment_model(settings.model_name, registry.CHAMPION_ENVIRONMENT)
    registry.ensure_model(client, production)
    copy = registry.copy_version(client, source, registry.CHAMPION_ENVIRONMENT, {})
    client.set_registered_model_alias(production, registry.CHAMPION_ENVIRONMENT, copy.version)


def train_quietly(settings: Any, log: StringIO, **options: str) -> int:
    with redirect_stdout(log):
        return train(settings, ROOT / DEFAULT_CONFIG, **options)


def main(scenarios: int, engine: str) -> int:
    config = TrainConfig.from_toml(ROOT / DEFAULT_CONFIG)
    with workspace(scenarios=scenarios) as settings:
        log = StringIO()
        print(
            f"Training {scenarios} scenarios once and putting them in production (not timed) ...", flush=True
        )
        if train_quietly(settings, log, granularity="per_scenario", engine=engine) != 0:
            print(log.getvalue()[-2000:], file=sys.stderr)
            print("bench-scenarios: the first per-scenario training failed", file=sys.stderr)
            return 1
        in_production(settings, "1")
        print(
            f"Training {scenarios} scenarios as one version against them, on engine {engine} ...", flush=True
        )
        started = time.perf_counter()
        code, peak_mb = peak_rss_mb(
            lambda: train_quietly(settings, log, granularity="per_scenario", engine=engine)
        )
        seconds = time.perf_counter() - started
        if code != 0:
            print(log.getvalue()[-2000:], file=sys.stderr)
            print(f"bench-scenarios: the per-scenario training failed (exit {code})", file=sys.stderr)
            return 1
        decided = next(line for line in log.getvalue().splitlines()[::-1] if "Champion/challenger" in line)
        print(f"  {decided}")
        client = registry.connect(settings)
        models = client.search_registered_models()
        versions = client.search_model_versions(f"name = '{settings.model_name}'")
        print(f"registry after 2 trainings  {len(models)} registered model(s), {len(versions)} version(s)")
        lineage_s, version_s, one_s = lookup_seconds(settings, "2")
        print(
            f"lookups                     lineage --scenario {lineage_s:.2f} s, one scenario's model"
            f" {one_s * 1000:.1f} ms (after loading the version once, as a server does: {version_s:.2f} s)"
        )
        print(f"Naive per-model logging of {NAIVE_SAMPLE} of them, for comparison ...", flush=True)
        naive = naive_per_model(settings, config, NAIVE_SAMPLE)
        if wrk.installed():
            print("Serving one scenario of it vs a global model of the same data (1 row, 1 connection) ...")
            refusal = StringIO()
            with redirect_stderr(refusal):
                code = train_quietly(settings, StringIO(), granularity="global")  # version 3
            if code != 0:
                print(f"serving p50: not measured: {refusal.getvalue().strip().splitlines()[-1]}")
            else:
                scenario_ms, single_ms = serving_p50_ms(settings, "2", "3")
                print(
                    f"serving p50, 1 row           {scenario_ms:.1f} ms (one of {scenarios} scenarios) vs"
                    f" {single_ms:.1f} ms (global model): {scenario_ms / single_ms:.2f}x"
                )
        else:
            print("serving p50: not measured: wrk is not installed (apt-get install wrk)")
    per_scenario = seconds / scenarios
    print(f"training, {scenarios} scenarios   {seconds:.1f} s ({per_scenario:.3f} s per scenario)")
    print(f"naive per-model logging     {naive:.2f} s per model")
    print(
        f"scenarios={scenarios} seconds={seconds:.1f} per_scenario={per_scenario:.4f}"
        f" naive_per_model={naive:.2f} speedup={naive / per_scenario:.0f} peak_rss_mb={peak_mb:.0f}"
    )
    return 0


if __name__ == "__main__":
    try:
        count = inputs.scenarios(sys.argv[1] if len(sys.argv) > 1 else None, name="N") or 500
        chosen = inputs.engine(None)
    except inputs.InputError as error:
        print(f"bench-scenarios: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(main(count, chosen))
