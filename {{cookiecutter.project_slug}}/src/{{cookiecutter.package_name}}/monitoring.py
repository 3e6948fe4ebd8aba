"""Production monitoring: does the version an environment runs still see the data it was trained on, and does
it still forecast as well as its back-test promised?

`make monitor ENV=production` compares the newest weeks of DATA_URI with the newest weeks of the version's
training snapshot (Evidently's data drift preset, one test per watched feature) and joins the version's batch
forecasts (FORECAST_URI) with the actuals that have arrived since. It prints a verdict table, writes
`reports/monitor-v<N>.{html,json}`, logs both to the version's run and records `monitor_*` tags on it.
Exit 0 healthy, 3 on a breach (in CI it then starts the training pipeline with the reason), 2 on a missing or
bad input, refused in one line before anything is logged or triggered. Thresholds: config/monitor.toml.

Evidently (the `monitor` extra) is imported only by `run_drift`: serving, training and the image never
load it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from {{ cookiecutter.package_name }} import gitops, registry
from {{ cookiecutter.package_name }}.contract import KEY_COLUMNS, SERIES_COLUMNS, TARGET, DataUnreadable, load_sales
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.inputs import InputError
from {{ cookiecutter.package_name }}.monitor_config import MONITOR_FILE, MonitorConfig
from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

EXIT_HEALTHY = 0
EXIT_BREACH = 3
ARTIFACT_DIR = "monitoring"  # on the version's run, beside its training and back-test artefacts
# Evidently's documented switches for its usage telemetry (evidently.telemetry, and its legacy config), set
# before it is imported: a monitoring job sends nothing anywhere but MLflow.
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
FAILED = "FAIL"  # the status of Evidently's per-column drift test when that column drifted


@dataclass(frozen=True)
class FeatureDrift:
    """Evidently's per-column result for one watched feature."""

    feature: str
    score: float
    threshold: float
    method: str
    drifted: bool


@dataclass(frozen=True)
class Accuracy:
    """Realised accuracy of the version's forecasts, against what its back-test promised."""

    wape: float
    bias: float
    promised_wape: float
    forecasts: int
    first_week: str
    last_week: str
    series: list[dict[str, Any]] = field(default_factory=list)

    def decayed(self, max_wape_decay: float) -> bool:
        return self.wape > self.promised_wape + max_wape_decay


@dataclass(frozen=True)
class Verdict:
    breach: bool
    reason: str  # only the parts that breached, e.g. "price, promo drift; WAPE 0.21 vs 0.12 promised"

    @property
    def line(self) -> str:
        return f"Verdict: breach — {self.reason}" if self.breach else "Verdict: healthy"


# ---------------------------------------------------------------- inputs, each refused in one line


def watched_version(settings: Settings, environment: str) -> str:
    """The version deploy/<environment>/ pins: what that environment runs."""
    try:
        return gitops.running_version(settings.deploy_dir / environment)
    except gitops.PinError as error:
        raise InputError(str(error)) from None


def promised_wape(model_version: ModelVersion) -> float:
    """The realised WAPE the version's back-test led us to expect."""
    text = model_version.tags.get("backtest_wape", "").strip()
    try:
        return float(text)
    except ValueError:
        raise InputError(
            f"version {model_version.version} has no backtest_wape ({text!r}), so there is no promise to"
            f" hold it to: back-test it (`make backtest VERSION={model_version.version}`)"
        ) from None


def newest_weeks(frame: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """The rows of the newest `weeks` distinct weeks (rows without a week are never in a window)."""
    newest = sorted(frame["week_start"].dropna().unique())[-weeks:]
    return frame[frame["week_start"].isin(newest)].reset_index(drop=True)


def require_features(frame: pd.DataFrame, features: Iterable[str], source: str) -> None:
    """Every watched feature is there and numeric: Evidently would otherwise fail deep inside its report."""
    missing = [feature for feature in features if feature not in frame.columns]
    if missing:
        raise InputError(
            f"{source} lacks the watched feature(s) {', '.join(missing)}: add them to the data or remove them"
            f" from features in {MONITOR_FILE}"
        )
    text = [feature for feature in features if not pd.api.types.is_numeric_dtype(frame[feature])]
    if text:
        raise InputError(
            f"{source}: the watched feature(s) {', '.join(text)} are not numeric; drift is measured on"
            f" numbers and 0/1 flags, so remove them from features in {MONITOR_FILE}"
        )


def require_rows(window: pd.DataFrame, source: str, weeks: int) -> None:
    if window.empty:
        raise InputError(
            f"{source} has no rows with a week_start in its newest {weeks} weeks: check its week_start column"
        )


def reference_window(model_version: ModelVersion, config: MonitorConfig) -> pd.DataFrame:
    """The newest `reference_weeks` of the data the version was trained on (its snapshot)."""
    from mlflow.exceptions import MlflowException

    from {{ cookiecutter.package_name }}.snapshot import snapshot_of_version

    try:
        snapshot = snapshot_of_version(model_version)
    except (KeyError, OSError, ValueError, MlflowException) as error:
        detail = " ".join(str(error).split())[:200]
        raise InputError(
            f"the training snapshot of version {model_version.version} cannot be found ({detail}): monitoring"
            " needs it as the reference; retrain with `make train` if it is gone"
        ) from None
    source = f"the training snapshot of version {model_version.version}"
    require_features(snapshot, config.features, source)
    window = newest_weeks(snapshot, config.reference_weeks)
    require_rows(window, source, config.reference_weeks)
    return window


def current_window(actuals: pd.DataFrame, config: MonitorConfig) -> pd.DataFrame:
    """The newest `window_weeks` of DATA_URI: what the version sees now."""
    require_features(actuals, config.features, "DATA_URI")
    window = newest_weeks(actuals, config.window_weeks)
    require_rows(window, "DATA_URI", config.window_weeks)
    return window


def load_actuals(data_uri: str) -> pd.DataFrame:
    try:
        return load_sales(data_uri)
    except DataUnreadable as error:
        raise InputError(str(error)) from None


# ---------------------------------------------------------------- realised accuracy


def _utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    return stamps.dt.tz_localize(UTC) if stamps.dt.tz is None else stamps.dt.tz_convert(UTC)


def matched_forecasts(forecasts: pd.DataFrame, version: str) -> pd.DataFrame:
    """One forecast of the version per series and week: the newest made before that week started.

    Only a forecast made before its week began forecasts it honestly. When none was (a run made mid-week
    forecasts the current week first), the newest made after the week started stands in: it still did not
    see that week's actuals, which arrive only when the week is over.
    """
    ours = forecasts[forecasts["model_version"].astype(str) == version]
    ours = ours.assign(week_start=pd.to_datetime(ours["week_start"]).astype("datetime64[ns]"))
    in_time = _utc(ours["generated_at"]) < _utc(ours["week_start"])
    ranked = ours.assign(_in_time=in_time, _at=_utc(ours["generated_at"])).sort_values(["_in_time", "_at"])
    return ranked.drop_duplicates(KEY_COLUMNS, keep="last").drop(columns=["_in_time", "_at"])


def realised_accuracy(forecasts: pd.DataFrame, actuals: pd.DataFrame, promised: float) -> Accuracy:
    """WAPE and bias of the forecasts whose weeks have actuals: per series and overall."""
    truth = actuals[[*KEY_COLUMNS, TARGET]].assign(
        week_start=pd.to_datetime(actuals["week_start"]).astype("datetime64[ns]")
    )
    joined = forecasts.merge(truth, on=KEY_COLUMNS, how="inner").dropna(subset=["forecast", TARGET])
    if joined.empty:
        weeks = pd.to_datetime(forecasts["week_start"])
        raise InputError(
            f"DATA_URI has no actuals yet for any forecast week ({weeks.min():%Y-%m-%d} to"
            f" {weeks.max():%Y-%m-%d}): re-run once the weeks are over and their sales are in DATA_URI"
        )
    overall = forecast_metrics(joined[TARGET], joined["forecast"])
    series = [
        {**dict(zip(SERIES_COLUMNS, keys, strict=True)), **_wape_and_bias(group)}
        for keys, group in joined.groupby(SERIES_COLUMNS, sort=True)
    ]
    return Accuracy(
        wape=overall["wape"],
        bias=overall["bias"],
        promised_wape=promised,
        forecasts=len(joined),
        first_week=f"{joined['week_start'].min():%Y-%m-%d}",
        last_week=f"{joined['week_start'].max():%Y-%m-%d}",
        series=series,
    )


def _wape_and_bias(group: pd.DataFrame) -> dict[str, float]:
    metrics = forecast_metrics(group[TARGET], group["forecast"])
    return {"wape": metrics["wape"], "bias": metrics["bias"], "weeks": len(group)}


def version_forecasts(forecast_uri: str, version: str, environment: str) -> pd.DataFrame:
    """The version's forecasts in FORECAST_URI, one per series and week; refused when there are none."""
    from {{ cookiecutter.package_name }}.forecast import read_forecasts

    matched = matched_forecasts(read_forecasts(forecast_uri), version)
    if matched.empty:
        raise InputError(
            f"{shareable_uri(forecast_uri)} holds no forecasts of version {version} yet: run"
            f" `make forecast ENV={environment}` first, then monitor once their weeks have actuals"
        )
    return matched


# ---------------------------------------------------------------- drift


def _evidently() -> tuple[Any, Any, Any, Any]:
    """Evidently's report API, imported on first use with its telemetry off."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
    try:
        with warnings.catch_warnings():  # Evidently's own use of deprecated APIs, not this project's
            warnings.simplefilter("ignore", DeprecationWarning)
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset
    except ImportError:
        raise InputError(
            "Evidently is not installed: `make install` adds it (the `monitor` extra of pyproject.toml)"
        ) from None
    return Report, DataDriftPreset, Dataset, DataDefinition


def run_drift(reference: pd.DataFrame, current: pd.DataFrame, config: MonitorConfig) -> tuple[Any, dict]:
    """Evidently's data drift report of the watched features; the snapshot and its `.dict()`."""
    report_class, preset, dataset, definition = _evidently()
    features = list(config.features)
    # Flags are 0/1 numbers here: one distance and one threshold then mean the same for every feature.
    numbers = definition(numerical_columns=features)

    def data(frame: pd.DataFrame) -> Any:
        return dataset.from_pandas(frame[features].astype("float64"), data_definition=numbers)

    # The report's dataset-level verdict ("Dataset Drift is detected") then agrees with ours: a breach when
    # more than max_drifted_features drift, i.e. when the drifted share reaches (max + 1) / watched.
    drift_share = (config.max_drifted_features + 1) / len(features)
    report = report_class(
        [
            preset(
                columns=features,
                method=config.drift_method,
                threshold=config.drift_threshold,
                drift_share=drift_share,
            )
        ],
        include_tests=True,
    )
    try:
        snapshot = report.run(current_data=data(current), reference_data=data(reference))
    except ValueError as error:  # e.g. a drift_method Evidently does not know
        detail = " ".join(str(error).split())[:300]
        raise InputError(f"{MONITOR_FILE}: Evidently cannot compute drift ({detail})") from None
    return snapshot, snapshot.dict()


def drift_summary(result: Mapping[str, Any], features: Iterable[str]) -> list[FeatureDrift]:
    """Per watched feature, Evidently's drift score (its ValueDrift metric) and verdict (its test)."""
    scores = {
        metric["config"]["column"]: metric
        for metric in result.get("metrics", [])
        if metric.get("config", {}).get("type", "").endswith(":ValueDrift")
    }
    statuses = {
        test["metric_config"]["params"]["column"]: str(getattr(test["status"], "value", test["status"]))
        for test in result.get("tests", [])
        if test.get("metric_config", {}).get("params", {}).get("type", "").endswith(":ValueDrift")
    }
    summary = []
    for feature in features:
        if feature not in scores or feature not in statuses:
            raise RuntimeError(
                f"Evidently's report has no drift result for {feature!r}: run `make install` (Evidently 0.7)"
            )
        config = scores[feature]["config"]
        summary.append(
            FeatureDrift(
                feature=feature,
                score=float(scores[feature]["value"]),
                threshold=float(config["threshold"]),
                method=str(config["method"]),
                drifted=statuses[feature] == FAILED,
            )
        )
    return summary


# ---------------------------------------------------------------- verdict and its record


def decide(drifts: list[FeatureDrift], accuracy: Accuracy, config: MonitorConfig) -> Verdict:
    """A breach when more features drift than allowed, or realised WAPE exceeds the promise by more."""
    parts = []
    drifted = [drift.feature for drift in drifts if drift.drifted]
    if len(drifted) > config.max_drifted_features:
        parts.append(f"{', '.join(drifted)} drift")
    if accuracy.decayed(config.max_wape_decay):
        parts.append(f"WAPE {accuracy.wape:.2f} vs {accuracy.promised_wape:.2f} promised")
    return Verdict(breach=bool(parts), reason="; ".join(parts))


def verdict_table(drifts: list[FeatureDrift], accuracy: Accuracy, config: MonitorConfig) -> str:
    """What a person reads first: one row per feature, then accuracy against the promise."""
    width = max(len("feature"), *(len(drift.feature) for drift in drifts))
    rows = [f"{'feature':<{width}}  drift score  threshold  drifted"]
    rows += [
        f"{drift.feature:<{width}}  {drift.score:>11.3f}  {drift.threshold:>9.3f}  {_yes_no(drift.drifted)}"
        for drift in drifts
    ]
    limit = accuracy.promised_wape + config.max_wape_decay
    rows.append(
        f"WAPE {accuracy.wape:.3f} vs {accuracy.promised_wape:.3f} promised (breach above {limit:.3f}),"
        f" bias {accuracy.bias:+.3f}: {accuracy.forecasts} forecasts, weeks {accuracy.first_week} to"
        f" {accuracy.last_week}"
    )
    return "\n".join(rows)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def summary_of(
    version: str,
    environment: str,
    windows: dict[str, pd.DataFrame],
    drifts: list[FeatureDrift],
    accuracy: Accuracy,
    verdict: Verdict,
    at: str,
) -> dict[str, Any]:
    """The machine-readable verdict: reports/monitor-v<N>.json and the run's monitoring/ artefact."""
    return {
        "version": version,
        "environment": environment,
        "window": _weeks_of(windows["current"]),
        "reference": _weeks_of(windows["reference"]),
        "features": [asdict(drift) for drift in drifts],
        "drifted": {drift.feature: drift.score for drift in drifts if drift.drifted},
        "accuracy": asdict(accuracy),
        "verdict": "breach" if verdict.breach else "healthy",
        "reason": verdict.reason,
        "at": at,
    }


def _weeks_of(window: pd.DataFrame) -> dict[str, Any]:
    weeks = pd.to_datetime(window["week_start"])
    return {"from": f"{weeks.min():%Y-%m-%d}", "to": f"{weeks.max():%Y-%m-%d}", "weeks": int(weeks.nunique())}


def record(
    settings: Settings, client: MlflowClient, model_version: ModelVersion, snapshot: Any, summary: dict
) -> Path:
    """Write the report and summary, log both to the version's run, and tag the version with the verdict."""
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    page = settings.reports_dir / f"monitor-v{model_version.version}.html"
    snapshot.save_html(str(page))
    data = page.with_suffix(".json")
    data.write_text(json.dumps(summary, indent=2) + "\n")
    for path in (page, data):
        client.log_artifact(model_version.run_id, str(path), artifact_path=ARTIFACT_DIR)
    # The verdict goes last: an interrupted write never pairs a new verdict with an old reason.
    registry.set_evidence(
        client,
        settings.model_name,
        model_version.version,
        {
            "monitor_at": summary["at"],
            "monitor_reason": summary["reason"] or "within thresholds",
            "monitor_report": f"{ARTIFACT_DIR}/{page.name}",
            "monitor_verdict": summary["verdict"],
        },
    )
    return page


def request_retraining(verdict: Verdict, env: Mapping[str, str]) -> None:
    """In CI, start the training pipeline with the reason (failing to start fails the job); say so locally."""
    from {{ cookiecutter.package_name }}.ci import provider_of

    if provider_of(env) is None:
        print("Not in CI, so no training pipeline was started (in CI it would be); to retrain: make train")
        return
    from {{ cookiecutter.package_name }}.retrain_trigger import request_retraining as start_training

    print(start_training(verdict.reason, env))


# ---------------------------------------------------------------- the command


def run_monitor(
    settings: Settings, environment: str, env: Mapping[str, str] = os.environ, now: datetime | None = None
) -> int:
    """Entry point of `make monitor`: drift and realised accuracy of what `environment` runs; exit 0 or 3."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for the one line
    config = MonitorConfig.from_toml()
    version = watched_version(settings, environment)
    client = registry.connect(settings)
    try:
        model_version = registry.get_version(client, settings.model_name, version)
    except registry.RegistryError as error:
        raise InputError(
            f"{settings.deploy_dir / environment}/ pins version {version}, but {error}"
        ) from None
    promised = promised_wape(model_version)
    forecasts = version_forecasts(settings.forecast_uri, version, environment)
    actuals = load_actuals(settings.data_uri)
    windows = {
        "current": current_window(actuals, config),
        "reference": reference_window(model_version, config),
    }
    accuracy = realised_accuracy(forecasts, actuals, promised)

    print(
        f"Monitoring version {version} in {environment}: the newest {config.window_weeks} weeks of DATA_URI"
        f" against the newest {config.reference_weeks} weeks it was trained on.",
        flush=True,
    )
    snapshot, result = run_drift(windows["reference"], windows["current"], config)
    drifts = drift_summary(result, config.features)
    verdict = decide(drifts, accuracy, config)
    at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    summary = summary_of(version, environment, windows, drifts, accuracy, verdict, at)
    page = record(settings, client, model_version, snapshot, summary)
    print(verdict_table(drifts, accuracy, config))
    print(
        f"Report: {page}, summary {page.with_suffix('.json')} (also on the version's run, {ARTIFACT_DIR}/)."
    )
    try:
        if verdict.breach:
            request_retraining(verdict, env)
    finally:  # the job log ends with the verdict, even when the request failed
        print(verdict.line, flush=True)
    return EXIT_BREACH if verdict.breach else EXIT_HEALTHY
