"""What a training fits: its config, the time split, and either one global model or one model per scenario.

The training stage (`train.py`), `reproduce` and the benchmarks all fit through `fit_and_evaluate`, so a
version is rebuilt by the code that built it. A scenario is one store x category series. Per-scenario fits
run through `fit_scenario`, one scenario at a time, on whichever engine `scenario_engines.py` chooses; the
fitted pipelines travel together as one `ScenarioModels`, which the registry, back-test, promotion and
serving treat exactly like the global model.
"""

from __future__ import annotations

import pickle  # nosec B403 # our own fitted pipelines, unpickled only by our own ScenarioModels
import tomllib
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }}.contract import SERIES_COLUMNS, TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.features import build_pipeline
from {{ cookiecutter.package_name }}.inputs import GRANULARITIES
from {{ cookiecutter.package_name }}.registry import scenario_status_counts
from {{ cookiecutter.package_name }}.scenario_engines import run_fits
from {{ cookiecutter.package_name }}.scenario_models import ScenarioModels, scenario_names
from {{ cookiecutter.package_name }}.snapshot import fingerprint

MIN_TRAIN_WEEKS = 26  # every series needs this much history before its hold-out
SCENARIO_RECORD_COLUMNS = ("scenario", "status", "reason", "rows", "weeks", "data_fingerprint")
METRICS = tuple(forecast_metrics(np.zeros(1), np.zeros(1)))  # mae, rmse, wape, bias


class ScenarioFitsFailed(Exception):
    """More per-scenario fits failed than the config allows; the message names them and the setting."""


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters, read from a TOML file and logged flat to MLflow."""

    seed: int
    test_weeks: int
    model: dict[str, Any]
    granularity: str = "global"  # configs logged before per-scenario training existed are global
    max_failed_scenarios: int = 0
    scenario_model: dict[str, Any] = field(default_factory=dict)  # per scenario: overrides of `model`

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity = {self.granularity!r} is not one of {', '.join(GRANULARITIES)}"
                " (config/train.toml)"
            )

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        return cls.from_dict(tomllib.loads(path.read_text()))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """From the TOML file or the logged JSON artefact: values keep their types (str, bool, numbers)."""
        return cls(
            seed=int(raw["seed"]),
            test_weeks=int(raw["test_weeks"]),
            model=dict(raw["model"]),
            granularity=str(raw.get("granularity", "global")),
            max_failed_scenarios=int(raw.get("max_failed_scenarios", 0)),
            scenario_model=dict(raw.get("scenario_model", {})),
        )

    def with_granularity(self, granularity: str | None) -> TrainConfig:
        """The same parameters at another granularity (`make train-scenarios`); logged as trained."""
        if granularity is None:
            return self
        return replace(self, granularity=granularity)

    def for_one_scenario(self) -> TrainConfig:
        """What one scenario's model is fitted with: `model`, overridden by `scenario_model`."""
        return replace(self, model={**self.model, **self.scenario_model}, scenario_model={})

    def as_params(self) -> dict[str, Any]:
        """Flat, for MLflow's params view; `reproduce` reads the typed artefact instead."""
        return {
            "seed": self.seed,
            "test_weeks": self.test_weeks,
            "granularity": self.granularity,
            "max_failed_scenarios": self.max_failed_scenarios,
            **{f"model.{k}": v for k, v in self.model.items()},
            **{f"scenario_model.{k}": v for k, v in self.scenario_model.items()},
        }

    @property
    def scenario_min_weeks(self) -> int:
        """Weeks of history a series needs to be fitted and evaluated: training weeks plus the hold-out."""
        return MIN_TRAIN_WEEKS + self.test_weeks

    @property
    def min_series_weeks(self) -> int:
        """What the data gate demands of every series. A global model needs every series long enough; per
        scenario, a short series is skipped with its reason instead (a new store must not stop the rest)."""
        return self.scenario_min_weeks if self.granularity == "global" else 1


@dataclass(frozen=True)
class TrainingResult:
    pipeline: Any  # a scikit-learn Pipeline, or ScenarioModels (one pipeline per scenario)
    test: pd.DataFrame
    predictions: np.ndarray
    metrics: dict[str, float]
    scenarios: pd.DataFrame | None = field(default=None)  # per scenario: status, reason, slice, metrics


def time_split(frame: pd.DataFrame, test_weeks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the newest weeks: a forecast is judged on weeks it has not seen."""
    cutoff = np.sort(frame["week_start"].unique())[-test_weeks]
    return frame[frame["week_start"] < cutoff], frame[frame["week_start"] >= cutoff]


def fit_global(frame: pd.DataFrame, config: TrainConfig) -> TrainingResult:
    """One model for every series. Deterministic: the same frame and config give the same predictions."""
    ordered = frame.sort_values(["week_start", *SERIES_COLUMNS], ignore_index=True)
    train_rows, test_rows = time_split(ordered, config.test_weeks)
    pipeline = build_pipeline(config.model, config.seed)
    pipeline.fit(train_rows.drop(columns=TARGET), train_rows[TARGET])
    predictions = pipeline.predict(test_rows.drop(columns=TARGET))
    return TrainingResult(pipeline, test_rows, predictions, forecast_metrics(test_rows[TARGET], predictions))


def fit_scenario(rows: pd.DataFrame, config: TrainConfig) -> dict[str, Any]:
    """Fit and evaluate one scenario on its own rows; a record of plain values, so any engine (processes,
    Spark) can carry it back. Never raises: too little history is `skipped`, an error is `failed`, each with
    its reason, and the policy in `fit_per_scenario` decides what that means for the training."""
    rows = rows.sort_values(
        "week_start", ignore_index=True
    )  # engines may deliver a scenario's rows in any order
    weeks = int(rows["week_start"].nunique())
    record: dict[str, Any] = {
        "scenario": str(scenario_names(rows.head(1)).iloc[0]),
        "status": "trained",
        "reason": "",
        "rows": len(rows),
        "weeks": weeks,
        "data_fingerprint": fingerprint(rows),
        **dict.fromkeys(METRICS, float("nan")),
        "model": b"",
        "predictions": [],
    }
    if weeks < config.scenario_min_weeks:
        return {
            **record,
            "status": "skipped",
            "reason": f"{weeks} weeks of history, needs {config.scenario_min_weeks}",
        }
    try:
        result = fit_global(rows, config.for_one_scenario())
    except Exception as error:  # one scenario's failure must not end the others' fits
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        return {**record, "status": "failed", "reason": f"{type(error).__name__}: {reason}"}
    return {
        **record,
        **result.metrics,
        "model": pickle.dumps(result.pipeline, protocol=pickle.HIGHEST_PROTOCOL),
        "predictions": [float(value) for value in result.predictions],
    }


def fit_per_scenario(frame: pd.DataFrame, config: TrainConfig, engine: str = "local") -> TrainingResult:
    """Every scenario's model, fitted on `engine`, as one ScenarioModels; refuses when more fits failed than
    `max_failed_scenarios` allows, or when no scenario could be trained at all."""
    ordered = frame.sort_values([*SERIES_COLUMNS, "week_start"], ignore_index=True)
    records = sorted(
        run_fits(engine, ordered, partial(fit_scenario, config=config)), key=lambda r: r["scenario"]
    )
    failed = [record for record in records if record["status"] == "failed"]
    if len(failed) > config.max_failed_scenarios:
        named = "; ".join(f"{record['scenario']} ({record['reason']})" for record in failed[:5])
        raise ScenarioFitsFailed(
            f"{len(failed)} scenario fit(s) failed, the config allows {config.max_failed_scenarios}"
            f" (max_failed_scenarios in config/train.toml): {named}"
        )
    trained = [record for record in records if record["status"] == "trained"]
    if not trained:
        raise ScenarioFitsFailed(
            f"no scenario could be trained: all {len(records)} were skipped or failed (see their reasons)"
        )
    names = scenario_names(ordered)
    positions = names.groupby(names, sort=False).indices
    test = pd.concat(  # each scenario's hold-out rows, in the order its predictions came back
        [time_split(ordered.iloc[positions[record["scenario"]]], config.test_weeks)[1] for record in trained],
        ignore_index=True,
    )
    predictions = np.concatenate([np.asarray(record["predictions"], dtype=float) for record in trained])
    models = ScenarioModels({record["scenario"]: record["model"] for record in trained})
    table = pd.DataFrame(
        [{key: record[key] for key in (*SCENARIO_RECORD_COLUMNS, *METRICS)} for record in records]
    )
    return TrainingResult(models, test, predictions, forecast_metrics(test[TARGET], predictions), table)


def fit_and_evaluate(frame: pd.DataFrame, config: TrainConfig, engine: str = "local") -> TrainingResult:
    """The model the config asks for: one global model, or one per scenario fitted on `engine`."""
    if config.granularity == "per_scenario":
        return fit_per_scenario(frame, config, engine)
    return fit_global(frame, config)


def scenario_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many scenarios were trained, skipped and failed: logged as the run's metrics."""
    counts = scenario_status_counts(table.to_dict(orient="records"))
    return {f"scenarios_{status}": count for status, count in counts.items()}


def scenario_records(table: pd.DataFrame, run_id: str) -> list[dict[str, Any]]:
    """The per-scenario table as JSON-ready records, each naming the run its model came from: this run, or,
    for a scenario whose production model was kept, the run that model came from."""
    records = table.assign(run_id=table["run_id"].fillna(run_id) if "run_id" in table else run_id)
    return records.astype(object).where(records.notna(), None).to_dict(orient="records")


def scenario_summary(table: pd.DataFrame, engine: str) -> str:
    """What a per-scenario training did, for its log: counts, then every scenario not trained and why."""
    counts = scenario_counts(table)
    lines = [
        f"Per-scenario fits on engine {engine}: {counts['scenarios_trained']} trained,"
        f" {counts['scenarios_skipped']} skipped, {counts['scenarios_failed']} failed"
    ]
    for record in table[table["status"] != "trained"].itertuples():
        lines.append(f"  {record.status:<8} {record.scenario}: {record.reason}")
    return "\n".join(lines)
