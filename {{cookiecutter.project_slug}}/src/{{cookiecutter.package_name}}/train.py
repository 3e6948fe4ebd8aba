"""Training stage: data gate, fit, evaluate, log everything to MLflow, register a version at stage `dev`.

`make train` runs `train`; `reproduce` reuses `fit_and_evaluate` on a recorded snapshot.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from {{ cookiecutter.package_name }} import provenance, registry
from {{ cookiecutter.package_name }}.data import TARGET, load_sales
from {{ cookiecutter.package_name }}.evaluate import (
    forecast_metrics,
    forecast_vs_actual_plot,
    importance_plot,
    residuals_plot,
)
from {{ cookiecutter.package_name }}.features import build_pipeline
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.snapshot import SNAPSHOT_ARTIFACT_DIR, fingerprint, save_snapshot
from {{ cookiecutter.package_name }}.validation import SUITE_NAME, validate_sales

DEFAULT_CONFIG = Path("config/train.toml")
MODEL_ARTIFACT = "model"
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters, read from a TOML file and logged flat to MLflow."""

    seed: int
    test_weeks: int
    model: dict[str, Any]

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        raw = tomllib.loads(path.read_text())
        return cls(seed=int(raw["seed"]), test_weeks=int(raw["test_weeks"]), model=dict(raw["model"]))

    @classmethod
    def from_params(cls, params: dict[str, str]) -> TrainConfig:
        """Rebuild the config from a run's logged params (what `reproduce` does)."""
        model = {
            key.removeprefix("model."): _number(value)
            for key, value in params.items()
            if key.startswith("model.")
        }
        return cls(seed=int(params["seed"]), test_weeks=int(params["test_weeks"]), model=model)

    def as_params(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "test_weeks": self.test_weeks,
            **{f"model.{k}": v for k, v in self.model.items()},
        }


def _number(text: str) -> int | float:
    return int(text) if text.lstrip("-").isdigit() else float(text)


@dataclass(frozen=True)
class TrainingResult:
    pipeline: Pipeline
    test: pd.DataFrame
    predictions: np.ndarray
    metrics: dict[str, float]


def time_split(frame: pd.DataFrame, test_weeks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the newest weeks: a forecast is judged on weeks it has not seen."""
    cutoff = np.sort(frame["week_start"].unique())[-test_weeks]
    return frame[frame["week_start"] < cutoff], frame[frame["week_start"] >= cutoff]


def fit_and_evaluate(frame: pd.DataFrame, config: TrainConfig) -> TrainingResult:
    """Deterministic: the same frame and config give the same model and predictions."""
    ordered = frame.sort_values(["week_start", "store_id", "category"], ignore_index=True)
    train_rows, test_rows = time_split(ordered, config.test_weeks)
    pipeline = build_pipeline(config.model, config.seed)
    pipeline.fit(train_rows.drop(columns=TARGET), train_rows[TARGET])
    predictions = pipeline.predict(test_rows.drop(columns=TARGET))
    return TrainingResult(pipeline, test_rows, predictions, forecast_metrics(test_rows[TARGET], predictions))


def pip_requirements() -> list[str]:
    """Pinned serving requirements, given explicitly: inferring them costs ~10 s per model."""
    from importlib.metadata import version

    # matplotlib: the serving image also runs the in-cluster back-test, which plots its report.
    names = ("mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle", "pyarrow", "matplotlib")
    return [f"{name}=={version(name)}" for name in names]


def _importances(result: TrainingResult, seed: int) -> pd.Series:
    features = result.test.drop(columns=TARGET)
    scores = permutation_importance(
        result.pipeline,
        features,
        result.test[TARGET],
        scoring="neg_mean_absolute_error",
        n_repeats=3,
        random_state=seed,
    )
    return pd.Series(scores.importances_mean, index=features.columns)


def _log_run(
    result: TrainingResult,
    config: TrainConfig,
    frame: pd.DataFrame,
    snapshot: Path,
    data_fp: str,
    model_name: str,
) -> Any:
    """Log params, metrics, plots, data input, environment and the model; register a version."""
    import mlflow
    from mlflow.models import infer_signature

    lock = provenance.environment_lock()
    mlflow.log_params(config.as_params())
    mlflow.log_metrics(result.metrics)
    mlflow.set_tags({"git_sha": provenance.git_sha(), "git_dirty": str(provenance.git_dirty()).lower()})
    mlflow.set_tags({"data_fingerprint": data_fp, "env_lock_hash": provenance.lock_hash(lock)})
    mlflow.log_input(
        mlflow.data.from_pandas(frame, source=str(snapshot), targets=TARGET, name="sales"), context="training"
    )
    mlflow.log_artifact(str(snapshot), SNAPSHOT_ARTIFACT_DIR)
    mlflow.log_text(lock, "environment/requirements.lock")
    weeks = result.test["week_start"]
    mlflow.log_figure(
        forecast_vs_actual_plot(weeks, result.test[TARGET].to_numpy(), result.predictions),
        "plots/forecast_vs_actual.png",
    )
    mlflow.log_figure(
        residuals_plot(result.test[TARGET].to_numpy(), result.predictions), "plots/residuals.png"
    )
    mlflow.log_figure(importance_plot(_importances(result, config.seed)), "plots/feature_importance.png")
    features = result.test.drop(columns=TARGET)
    return mlflow.sklearn.log_model(
        result.pipeline,
        name=MODEL_ARTIFACT,
        signature=infer_signature(features, result.predictions),
        input_example=features.head(5),
        pip_requirements=pip_requirements(),
        code_paths=[str(PACKAGE_DIR)],
        serialization_format="cloudpickle",
        registered_model_name=model_name,
    )


def train(settings: Settings, config_path: Path = DEFAULT_CONFIG) -> int:
    """Entry point of `make train`. Returns the exit code; refuses bad data before any run is created."""
    import mlflow

    frame = load_sales(settings.data_uri)
    report = validate_sales(frame, docs_dir=settings.reports_dir / "data-docs")
    print(report.summary_table())
    if not report.success:
        failed = ", ".join(failure.name for failure in report.failures)
        print(f"Training refused: the data gate failed on {failed}. Fix the data; no run was logged.")
        return 1
    config = TrainConfig.from_toml(config_path)
    data_fp = fingerprint(frame)
    snapshot = save_snapshot(frame, settings.snapshot_dir, data_fp)
    result = fit_and_evaluate(frame, config)

    client = registry.connect(settings)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name=f"train-{data_fp[:8]}"):
        version = _log_run(
            result, config, frame, snapshot, data_fp, settings.model_name
        ).registered_model_version
    evidence = {
        "stage": "dev",
        "git_sha": provenance.git_sha(),
        "git_dirty": str(provenance.git_dirty()).lower(),
        "data_fingerprint": data_fp,
        "data_snapshot": str(snapshot.resolve()),
        "data_validation": "passed",
        "data_validation_suite": SUITE_NAME,
        "trained_by": provenance.identity(),
        "ci_run_url": settings.ci_run_url or provenance.ci_run_url() or "local",
        "config": str(config_path),
    }
    registry.set_evidence(client, settings.model_name, version, evidence)
    metrics = ", ".join(f"{name}={value:.4f}" for name, value in result.metrics.items())
    print(f"Registered {settings.model_name} version {version} (stage=dev): {metrics}")
    return 0
