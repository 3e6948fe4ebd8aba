"""Training stage: data gate, fit, evaluate, log everything to MLflow, register a version at stage `dev`.

`make train` runs `train`; `reproduce` reuses `fit_and_evaluate` on a recorded snapshot and config.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.inspection import permutation_importance

from {{ cookiecutter.package_name }} import ci, provenance, registry
from {{ cookiecutter.package_name }}.backtest_record import Policy
from {{ cookiecutter.package_name }}.contract import TARGET, DataUnreadable, load_sales
from {{ cookiecutter.package_name }}.evaluate import (
    forecast_vs_actual_plot,
    importance_plot,
    residuals_plot,
)
from {{ cookiecutter.package_name }}.evidence import DATA_DOCS_ARTIFACT_DIR, GATE_SUMMARY_ARTIFACT
from {{ cookiecutter.package_name }}.features import too_many_categories
from {{ cookiecutter.package_name }}.fitting import (
    ScenarioFitsFailed,
    TrainConfig,
    TrainingResult,
    fit_and_evaluate,
    scenario_counts,
    scenario_records,
    scenario_summary,
)
from {{ cookiecutter.package_name }}.retrain_trigger import REASON_VARIABLE, clean_reason
from {{ cookiecutter.package_name }}.scenario_models import scenario_names
from {{ cookiecutter.package_name }}.scenario_release import release_candidate
from {{ cookiecutter.package_name }}.settings import Settings, variable
from {{ cookiecutter.package_name }}.snapshot import SNAPSHOT_ARTIFACT_DIR, fingerprint, save_snapshot
from {{ cookiecutter.package_name }}.validation import SUITE_NAME, ValidationReport, asset_name, validate_sales

DEFAULT_CONFIG = Path("config/train.toml")
MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "config/train.json"  # the exact config, typed: what `reproduce` trains from
PACKAGE_DIR = Path(__file__).resolve().parent
IMPORTANCE_SCENARIOS = 5  # the importance plot averages this many scenarios (each costs ~0.2 s)


def pip_requirements() -> list[str]:
    """Pinned serving requirements, given explicitly: inferring them costs ~10 s per model."""
    from importlib.metadata import version

    names = ("mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle", "pyarrow")
    return [f"{name}=={version(name)}" for name in names]


def _importance(model: Any, test: pd.DataFrame, seed: int) -> pd.Series:
    features = test.drop(columns=TARGET)
    scores = permutation_importance(
        model, features, test[TARGET], scoring="neg_mean_absolute_error", n_repeats=3, random_state=seed
    )
    return pd.Series(scores.importances_mean, index=features.columns)


def _importances(result: TrainingResult, seed: int) -> pd.Series:
    """Permutation importance of the model; per scenario, each model on its own hold-out rows (shuffling a
    scenario's store id across scenarios would ask models that do not exist), averaged over a sample."""
    if result.scenarios is None:
        return _importance(result.pipeline, result.test, seed)
    names = scenario_names(result.test)
    sampled = names.unique()[:IMPORTANCE_SCENARIOS]
    return pd.concat(
        [_importance(result.pipeline.model(name), result.test[names == name], seed) for name in sampled],
        axis=1,
    ).mean(axis=1)


def _log_data_docs(docs_dir: Path) -> None:
    """The gate's Data Docs travel with the run; GE's tutorial animations (3 MB, not shown) stay behind."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "data-docs"
        shutil.copytree(docs_dir, copy, ignore=shutil.ignore_patterns("*.gif"))
        mlflow.log_artifacts(str(copy), DATA_DOCS_ARTIFACT_DIR)


def _log_run(
    result: TrainingResult,
    config: TrainConfig,
    frame: pd.DataFrame,
    snapshot: Path,
    data_fp: str,
    gate: ValidationReport,
) -> Any:
    """Log params, config, metrics, plots, data input and gate, environment and the model; the model info."""
    import mlflow
    from mlflow.models import infer_signature

    lock = provenance.environment_lock()
    mlflow.log_params(config.as_params())
    mlflow.log_dict(asdict(config), CONFIG_ARTIFACT)
    mlflow.log_metrics(result.metrics)
    if result.scenarios is not None:
        run_id = mlflow.active_run().info.run_id
        mlflow.log_metrics(scenario_counts(result.scenarios))
        mlflow.log_dict(scenario_records(result.scenarios, run_id), registry.SCENARIOS_ARTIFACT)
    mlflow.set_tags({"data_fingerprint": data_fp, "env_lock_hash": provenance.lock_hash(lock)})
    mlflow.log_input(
        mlflow.data.from_pandas(frame, source=str(snapshot), targets=TARGET, name="sales"), context="training"
    )
    mlflow.log_artifact(str(snapshot), SNAPSHOT_ARTIFACT_DIR)
    mlflow.log_dict(gate.summary(), GATE_SUMMARY_ARTIFACT)
    if gate.docs_index is not None:
        _log_data_docs(gate.docs_index.parent)
    mlflow.log_text(lock, "environment/requirements.lock")
    weeks = result.test["week_start"]
    mlflow.log_figure(
        forecast_vs_actual_plot(weeks, result.test[TARGET].to_numpy(), result.predictions),
        "plots/forecast_vs_actual.png",
    )
    mlflow.log_figure(
        residuals_plot(result.test[TARGET].to_numpy(), result.predictions), "plots/residuals.png"
    )
    sampled = ""
    if result.scenarios is not None:
        count = min(IMPORTANCE_SCENARIOS, scenario_names(result.test).nunique())
        sampled = f", mean of {count} scenarios' models"
    mlflow.log_figure(
        importance_plot(_importances(result, config.seed), sampled), "plots/feature_importance.png"
    )
    features = result.test.drop(columns=TARGET)
    return mlflow.sklearn.log_model(
        result.pipeline,
        name=MODEL_ARTIFACT,
        signature=infer_signature(features, result.predictions),
        input_example=features.head(5),
        pip_requirements=pip_requirements(),
        code_paths=[str(PACKAGE_DIR)],
        serialization_format="cloudpickle",
    )


def retrain_evidence(env: Mapping[str, str]) -> dict[str, str]:
    """Why this version was trained, when monitoring asked for it (RETRAIN_REASON); nothing otherwise."""
    reason = clean_reason(env.get(REASON_VARIABLE, ""))
    return {registry.RETRAIN_REASON: reason} if reason else {}


def end_stale_runs(client: Any, experiment_id: str) -> None:
    """A training that died left its run RUNNING: mark it KILLED before a new one starts."""
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, status="KILLED")
        print(f"Marked run {run.info.run_id} KILLED: its training died before finishing.")


def train(
    settings: Settings,
    config_path: Path = DEFAULT_CONFIG,
    granularity: str | None = None,
    engine: str = "local",
) -> int:
    """Entry point of `make train` (and `make train-scenarios`, which passes granularity="per_scenario").
    Returns the exit code; refuses bad data, and failed scenario fits beyond the policy, before any run.

    The version is registered with all its evidence in one call, after everything else is logged: a
    training that dies part-way leaves no version, and its run is ended by the next training.
    """
    import mlflow

    if ci.in_ci(os.environ) and variable("DATA_URI") is None:
        print(
            "Training refused: DATA_URI is not set; in CI training reads your real data from it.",
            file=sys.stderr,
        )
        return 1
    trained_by = ci.trainer_identity(os.environ)
    config = TrainConfig.from_toml(config_path).with_granularity(granularity)
    if engine == "spark" and config.granularity == "per_scenario":
        from {{ cookiecutter.package_name }}.spark_engine import check_ready  # PySpark is an optional extra

        check_ready()
    try:
        frame = load_sales(settings.data_uri)
    except DataUnreadable as error:
        print(f"Training refused: {error}", file=sys.stderr)
        return 1
    untraceable = provenance.untraceable_reason()
    if untraceable:
        print(
            f"Note: the version this training registers cannot reach production: {untraceable}."
            " Commit, then re-run `make train` for one that can.",
            file=sys.stderr,
        )
    data_fp = fingerprint(frame)
    run_name = f"train-{data_fp[:8]}"  # the MLflow run, and the gate's run in the Data Docs it logs
    report = validate_sales(
        frame,
        docs_dir=settings.reports_dir / "data-docs",
        min_series_weeks=config.min_series_weeks,
        data_asset=asset_name(settings.data_uri, data_fp),
        run_name=run_name,
    )
    print(report.summary_table())
    if not report.success:
        failed = ", ".join(failure.name for failure in report.failures)
        print(
            f"Training refused: the data gate failed on {failed}. Fix the data; no run was logged.",
            file=sys.stderr,
        )
        return 1
    overflow = too_many_categories(frame, config.model) if config.granularity == "global" else None
    if overflow:
        print(
            f"Training refused: {overflow}: train one model per scenario (`make train-scenarios`), or group"
            " them in features.py. No run was logged.",
            file=sys.stderr,
        )
        return 1
    snapshot = save_snapshot(frame, settings.snapshot_dir, data_fp)
    client = registry.connect(settings)
    try:
        result = fit_and_evaluate(frame, config, engine)
        if result.scenarios is not None:
            print(scenario_summary(result.scenarios, engine))
            result = release_candidate(result, client, settings.model_name, Policy.from_toml())
    except ScenarioFitsFailed as error:
        print(f"Training refused: {error}. No run was logged.", file=sys.stderr)
        return 1
    # One commit names the code: the run's source commit and the version's git_sha are the same value.
    git_sha, git_dirty = provenance.git_sha(), str(provenance.git_dirty()).lower()

    experiment = mlflow.set_experiment(settings.model_name)
    end_stale_runs(client, experiment.experiment_id)
    run_tags = {"mlflow.source.git.commit": git_sha, "git_sha": git_sha, "git_dirty": git_dirty}
    with mlflow.start_run(run_name=run_name, tags=run_tags) as run:
        model_info = _log_run(result, config, frame, snapshot, data_fp, report)
        evidence = {
            "stage": "dev",
            "git_sha": git_sha,
            "git_dirty": git_dirty,
            "data_fingerprint": data_fp,
            "data_snapshot": str(snapshot.resolve()),
            "data_validation": "passed",
            "data_validation_suite": SUITE_NAME,
            "trained_by": trained_by,
            "ci_run_url": ci.ci_run_url(os.environ),
            "config": str(config_path),
            registry.GRANULARITY: config.granularity,
            **retrain_evidence(os.environ),
        }
        version = registry.register_version(
            client, settings.model_name, model_info, run.info.run_id, evidence
        )
    metrics = ", ".join(f"{name}={value:.4f}" for name, value in result.metrics.items())
    print(f"Registered {settings.model_name} version {version} (stage=dev): {metrics}")
    print(f"Next: make backtest VERSION={version} (compares it with the model in production)")
    return 0
