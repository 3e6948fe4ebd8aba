"""Benchmark: seconds per train + log + register, explicit pip requirements vs naive (inferred) log_model.

Run: `make bench-train` (or `python -m bench.train_log_register [repetitions]`); prints both and their ratio.
Inferring requirements starts a subprocess that imports the model; the generated pipeline passes them.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import mlflow

from bench.workspace import workspace
from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.data import TARGET, load_sales
from {{ cookiecutter.package_name }}.fitting import TrainConfig, fit_and_evaluate
from {{ cookiecutter.package_name }}.train import DEFAULT_CONFIG, pip_requirements


def train_log_register(frame, config: TrainConfig, model_name: str, explicit: bool) -> float:
    """One full cycle; returns its wall time in seconds."""
    started = time.perf_counter()
    result = fit_and_evaluate(frame, config)
    with mlflow.start_run():
        mlflow.log_params(config.as_params())
        mlflow.log_metrics(result.metrics)
        mlflow.sklearn.log_model(
            result.pipeline,
            name="model",
            input_example=result.test.drop(columns=TARGET).head(5),
            pip_requirements=pip_requirements() if explicit else None,
            serialization_format="cloudpickle",
            registered_model_name=model_name,
        )
    return time.perf_counter() - started


def main(repetitions: int = 3) -> int:
    with workspace() as settings:
        registry.connect(settings)
        mlflow.set_experiment("bench")
        frame = load_sales(settings.data_uri)
        config = TrainConfig.from_toml(Path(__file__).resolve().parents[1] / DEFAULT_CONFIG)
        train_log_register(frame, config, settings.model_name, explicit=True)  # warm-up: imports, DB schema
        explicit = [train_log_register(frame, config, settings.model_name, True) for _ in range(repetitions)]
        naive = [train_log_register(frame, config, settings.model_name, False) for _ in range(repetitions)]
    explicit_s, naive_s = statistics.median(explicit), statistics.median(naive)
    print(f"rows trained on                  {len(frame)}")
    print(f"repetitions                      {repetitions}")
    print(f"generated pipeline (explicit)    {explicit_s:.2f} s/model (median)")
    print(f"naive log_model (inferred)       {naive_s:.2f} s/model (median)")
    print(f"ratio naive / generated          {naive_s / explicit_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
