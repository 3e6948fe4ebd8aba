"""Production monitoring: what `make monitor ENV=production` tells a user, and what it records and starts.

What a user notices: unchanged data is healthy and starts nothing; a market that moved is named feature by
feature; forecasts that stopped keeping the back-test's promise are named with both WAPEs; in CI a breach
starts training with that reason; every missing or bad input is refused in one line, with exit 2, before
anything is written, logged or started. Evidently costs seconds to import, so few tests run it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }} import registry, retrain_trigger
from {{ cookiecutter.package_name }}.ci import ApprovalError
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.contract import KEY_COLUMNS, TARGET
from {{ cookiecutter.package_name }}.data import STORES, generate_sales
from {{ cookiecutter.package_name }}.forecast import FILE_PREFIX
from {{ cookiecutter.package_name }}.inputs import InputError
from {{ cookiecutter.package_name }}.monitor_config import MonitorConfig
from {{ cookiecutter.package_name }}.monitoring import (
    Accuracy,
    FeatureDrift,
    decide,
    drift_summary,
    matched_forecasts,
    newest_weeks,
    realised_accuracy,
    run_drift,
)
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.snapshot import fingerprint, save_snapshot

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED = MonitorConfig.from_toml(PROJECT / "config" / "monitor.toml")
PROMISED_WAPE = 0.10
NOW = datetime(2026, 4, 14, 6, 0, tzinfo=UTC)


# ---------------------------------------------------------------- data a monitor sees


def later_history(sales: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """The same synthetic process `weeks` further on: what DATA_URI holds once those actuals arrived."""
    newest = sales["week_start"].max() + pd.Timedelta(weeks=weeks)
    return generate_sales(newest.date(), weeks=sales["week_start"].nunique() + weeks)


def market_moved(history: pd.DataFrame, weeks: int, seed: int = 3) -> pd.DataFrame:
    """Prices up 30 % and promotions on half the weeks, for half the stores, in the newest `weeks`."""
    moved = history.copy()
    recent = moved["week_start"].isin(sorted(moved["week_start"].unique())[-weeks:])
    half = recent & moved["store_id"].isin(STORES[: len(STORES) // 2])
    moved.loc[half, "price"] = (moved.loc[half, "price"] * 1.3).round(2)
    moved.loc[half, "promo"] = (np.random.default_rng(seed).random(int(half.sum())) < 0.5).astype("int64")
    return moved


def forecasts_for(
    actuals: pd.DataFrame, weeks: list, factor: float, version: str, at: datetime
) -> pd.DataFrame:
    """Forecasts of `weeks` that miss the actuals by `factor` (1.1: 10 % too high everywhere)."""
    rows = actuals[actuals["week_start"].isin(weeks)]
    return rows[KEY_COLUMNS].assign(
        forecast=rows[TARGET] * factor, model_version=version, generated_at=pd.Timestamp(at)
    )


def write_forecasts(settings: Settings, frame: pd.DataFrame, at: datetime) -> None:
    """A forecast file as `make forecast` names it."""
    folder = Path(settings.forecast_uri)
    folder.mkdir(parents=True, exist_ok=True)
    version = frame["model_version"].iloc[0] if len(frame) else "0"
    frame.to_parquet(folder / f"{FILE_PREFIX}{at:%Y%m%dT%H%M%S%fZ}-v{version}.parquet", index=False)


# ---------------------------------------------------------------- a production environment to monitor


@dataclass
class Production:
    settings: Settings
    client: object
    version: str
    training: pd.DataFrame  # the version's snapshot
    actuals: pd.DataFrame  # DATA_URI: the training history plus the weeks forecast since
    forecast_weeks: list


@pytest.fixture
def production(settings, tmp_path, blank_store, sales, monkeypatch) -> Production:
    """v1 in production, trained on `sales`, back-tested at WAPE 0.10; it forecast the next 4 weeks 8 % too
    high and their actuals have arrived, unchanged. `main` runs where make runs it, against this folder."""
    shutil.copy(blank_store, settings.tracking_uri.removeprefix("sqlite:///"))
    client = registry.connect(settings)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("monitor", (tmp_path / "art").as_uri()))
    client.create_registered_model(settings.model_name)
    data_fingerprint = fingerprint(sales)
    snapshot = save_snapshot(sales, settings.snapshot_dir, data_fingerprint)
    with mlflow.start_run() as run:
        mlflow.log_text("placeholder", "model/MLmodel")
    tags = {"data_snapshot": str(snapshot), "data_fingerprint": data_fingerprint, "backtest_wape": "0.100000"}
    version = str(
        client.create_model_version(
            settings.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags
        ).version
    )
    shutil.copytree(PROJECT / "deploy" / "production", settings.deploy_dir / "production")
    pin(settings, version)
    actuals = later_history(sales, 4)
    forecast_weeks = sorted(actuals["week_start"].unique())[-4:]
    Path(settings.data_uri).parent.mkdir(parents=True, exist_ok=True)
    actuals.to_parquet(settings.data_uri, index=False)
    made = days_before(forecast_weeks[0], 2)
    write_forecasts(settings, forecasts_for(actuals, forecast_weeks, 1.08, version, made), made)
    monkeypatch.chdir(PROJECT)
    for name, value in {
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MODEL_NAME": settings.model_name,
        "DATA_URI": settings.data_uri,
        "FORECAST_URI": settings.forecast_uri,
        "SNAPSHOT_DIR": str(settings.snapshot_dir),
        "REPORTS_DIR": str(settings.reports_dir),
        "DEPLOY_DIR": str(settings.deploy_dir),
    }.items():
        monkeypatch.setenv(name, value)
    return Production(settings, client, version, sales, actuals, forecast_weeks)


def days_before(week, days: int) -> datetime:
    return pd.Timestamp(week).tz_localize(UTC).to_pydatetime() - timedelta(days=days)


def pin(settings: Settings, version: str) -> None:
    (settings.deploy_dir / "production" / "model.env").write_text(
        f"MODEL_NAME={settings.model_name}\nMODEL_VERSION={version}\n"
    )


@pytest.fixture
def retraining(monkeypatch) -> list[str]:
    """The reasons training was requested with (the CI call itself is retrain_trigger's to test)."""
    reasons: list[str] = []

    def request(reason: str, env) -> str:
        reasons.append(reason)
        return f"Requested retraining: GitHub workflow train.yml on main (reason: {reason})"

    monkeypatch.setattr(retrain_trigger, "request_retraining", request)
    return reasons


def monitor(capsys) -> tuple[int, list[str], str]:
    """Run `make monitor ENV=production`: exit code, stdout lines, stderr."""
    code = main(["monitor", "--env", "production"])
    printed = capsys.readouterr()
    return code, printed.out.splitlines(), printed.err


def monitor_tags(production: Production) -> dict[str, str]:
    tags = production.client.get_model_version(production.settings.model_name, production.version).tags
    return {key: value for key, value in tags.items() if key in registry.MONITORING_EVIDENCE}


# ---------------------------------------------------------------- drift, calibrated on the synthetic data


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("the newest weeks of the training data itself", set()),
        ("fresh weeks of the same process, generated with a later end week", set()),
        ("prices up 30 % and promotions at 50 % in half the stores", {"price", "promo"}),
    ],
)
def test_only_a_market_that_moved_drifts_and_the_summary_names_its_features(sales, scenario, expected):
    # given the newest weeks of a version's training data as reference, and a window of new data
    window = SHIPPED.window_weeks
    current = {
        "the newest weeks of the training data itself": sales,
        "fresh weeks of the same process, generated with a later end week": later_history(sales, window),
        "prices up 30 % and promotions at 50 % in half the stores": market_moved(
            later_history(sales, window), window
        ),
    }[scenario]
    # when Evidently compares them with the shipped thresholds
    _, result = run_drift(
        newest_weeks(sales, SHIPPED.reference_weeks), newest_weeks(current, window), SHIPPED
    )
    drifts = drift_summary(result, SHIPPED.features)
    # then exactly the moved features drift, each with Evidently's score against its threshold
    assert [drift.feature for drift in drifts] == list(SHIPPED.features)
    assert {drift.feature for drift in drifts if drift.drifted} == expected
    assert all((drift.score >= drift.threshold) == drift.drifted for drift in drifts), drifts


@pytest.mark.parametrize("allowed", [0, 1, 2])
def test_the_report_calls_dataset_drift_exactly_when_the_verdict_would(sales, allowed):
    # given a window where two of the three watched features drift (price and promo)
    window = SHIPPED.window_weeks
    current = market_moved(later_history(sales, window), window)
    config = replace(SHIPPED, max_drifted_features=allowed)
    # when Evidently compares it with the training weeks
    _, result = run_drift(newest_weeks(sales, SHIPPED.reference_weeks), newest_weeks(current, window), config)
    # then the HTML report's "Dataset Drift is detected" test fails exactly when monitoring breaches
    drifted_share = "Share of Drifted Columns"
    (dataset_test,) = [test for test in result["tests"] if test["name"].startswith(drifted_share)]
    drifted = 2
    assert (dataset_test["status"] == "FAIL") == (drifted > allowed), dataset_test["description"]


def test_a_drift_method_evidently_does_not_know_is_refused_in_one_line_naming_the_config(sales):
    window = newest_weeks(sales, SHIPPED.window_weeks)
    with pytest.raises(InputError, match=r"^config/monitor.toml: Evidently cannot compute drift \(.*bogus"):
        run_drift(window, window, replace(SHIPPED, drift_method="bogus"))


def test_evidently_runs_with_its_usage_telemetry_off(sales):
    window = newest_weeks(sales, SHIPPED.window_weeks)
    run_drift(window, window, SHIPPED)
    from evidently.telemetry import event_logger

    assert not event_logger.is_enabled()


# ---------------------------------------------------------------- realised accuracy


def forecast_rows(rows: list[tuple[str, str, float, str, str]]) -> pd.DataFrame:
    """(store, week, forecast, version, generated_at) rows of one category."""
    return pd.DataFrame(
        {
            "store_id": [row[0] for row in rows],
            "category": "dairy",
            "week_start": pd.to_datetime([row[1] for row in rows]),
            "forecast": [row[2] for row in rows],
            "model_version": [row[3] for row in rows],
            "generated_at": pd.to_datetime([row[4] for row in rows], utc=True),
        }
    )


def test_each_week_is_judged_by_the_newest_forecast_made_before_it_started_else_the_newest():
    # given forecasts of one series: week 1 made twice before it started and once after; week 2 only after;
    # and one by another version
    forecasts = forecast_rows(
        [
            ("S01", "2026-03-16", 10.0, "1", "2026-03-02T06:00"),
            ("S01", "2026-03-16", 20.0, "1", "2026-03-09T06:00"),
            ("S01", "2026-03-16", 30.0, "1", "2026-03-17T06:00"),
            ("S01", "2026-03-23", 40.0, "1", "2026-03-24T06:00"),
            ("S01", "2026-03-23", 50.0, "1", "2026-03-25T06:00"),
            ("S01", "2026-03-23", 99.0, "2", "2026-03-20T06:00"),
        ]
    )
    # when
    kept = matched_forecasts(forecasts, "1").sort_values("week_start")
    # then
    assert kept["forecast"].tolist() == [20.0, 50.0]


def test_accuracy_joins_forecasts_with_the_weeks_that_have_actuals_per_series_and_overall():
    # given two series forecast for three weeks, of which two have actuals
    forecasts = forecast_rows(
        [
            (store, week, value, "1", "2026-03-09T06:00")
            for store, values in (("S01", (110.0, 90.0, 100.0)), ("S02", (60.0, 60.0, 60.0)))
            for week, value in zip(("2026-03-16", "2026-03-23", "2026-03-30"), values, strict=True)
        ]
    )
    actuals = pd.DataFrame(
        {
            "store_id": ["S01", "S01", "S02", "S02"],
            "category": "dairy",
            "week_start": pd.to_datetime(["2026-03-16", "2026-03-23"] * 2),
            TARGET: [100, 100, 50, 50],
        }
    )
    # when
    accuracy = realised_accuracy(forecasts, actuals, promised=0.05)
    # then errors 10, 10, 10, 10 on 300 units: WAPE 40/300; over-forecast 20 of them: bias 20/300
    assert accuracy.wape == pytest.approx(40 / 300) and accuracy.bias == pytest.approx(20 / 300)
    assert (accuracy.forecasts, accuracy.first_week, accuracy.last_week) == (4, "2026-03-16", "2026-03-23")
    by_series = {row["store_id"]: (row["wape"], row["bias"], row["weeks"]) for row in accuracy.series}
    assert by_series == {
        "S01": (pytest.approx(0.1), 0.0, 2),
        "S02": (pytest.approx(0.2), pytest.approx(0.2), 2),
    }


# ---------------------------------------------------------------- the verdict


def accuracy_at(wape: float) -> Accuracy:
    return Accuracy(wape=wape, bias=0.0, promised_wape=0.12, forecasts=1, first_week="", last_week="")


def drifts_of(*drifted: str) -> list[FeatureDrift]:
    return [
        FeatureDrift(feature, 0.3 if feature in drifted else 0.05, 0.2, "wasserstein", feature in drifted)
        for feature in ("price", "discount", "promo")
    ]


@pytest.mark.parametrize(
    ("drifted", "wape", "allowed", "line"),
    [
        ((), 0.16, 0, "Verdict: healthy"),
        (("price", "promo"), 0.16, 0, "Verdict: breach — price, promo drift"),
        ((), 0.21, 0, "Verdict: breach — WAPE 0.21 vs 0.12 promised"),
        (("price", "promo"), 0.21, 0, "Verdict: breach — price, promo drift; WAPE 0.21 vs 0.12 promised"),
        (("price",), 0.16, 1, "Verdict: healthy"),
    ],
)
def test_the_verdict_names_only_what_breached(drifted, wape, allowed, line):
    config = replace(SHIPPED, max_drifted_features=allowed, max_wape_decay=0.05)
    assert decide(drifts_of(*drifted), accuracy_at(wape), config).line == line


# ---------------------------------------------------------------- the command


def test_unchanged_data_is_healthy_recorded_on_the_version_and_starts_nothing(production, retraining, capsys):
    # when production's version is monitored in CI with the data unchanged
    code, out, err = monitor(capsys)
    # then the table shows every feature and the accuracy against the promise, and the verdict comes last
    assert code == 0, err
    assert out[-1] == "Verdict: healthy"
    assert any(line.startswith("WAPE 0.080 vs 0.100 promised") for line in out), out
    assert all(
        any(line.startswith(feature) and line.endswith(" no") for line in out) for feature in SHIPPED.features
    )
    assert retraining == []
    # and the report, the summary and the verdict are kept with the version
    reports = production.settings.reports_dir
    summary = json.loads((reports / f"monitor-v{production.version}.json").read_text())
    assert (summary["version"], summary["verdict"], summary["drifted"]) == (production.version, "healthy", {})
    assert summary["accuracy"]["wape"] == pytest.approx(0.08)
    assert (reports / f"monitor-v{production.version}.html").stat().st_size > 10_000
    tags = monitor_tags(production)
    assert (
        tags["monitor_verdict"] == "healthy"
        and tags["monitor_report"] == f"monitoring/monitor-v{production.version}.html"
    )
    run_id = production.client.get_model_version(production.settings.model_name, production.version).run_id
    logged = {item.path for item in production.client.list_artifacts(run_id, "monitoring")}
    assert logged == {
        f"monitoring/monitor-v{production.version}.html",
        f"monitoring/monitor-v{production.version}.json",
    }


def move_the_market_and_miss(production: Production) -> None:
    """The newest weeks' prices and promotions moved, and the newest forecasts of them were 30 % too high."""
    market_moved(production.actuals, SHIPPED.window_weeks).to_parquet(
        production.settings.data_uri, index=False
    )
    made = days_before(production.forecast_weeks[0], 1)
    missed = forecasts_for(production.actuals, production.forecast_weeks, 1.3, production.version, made)
    write_forecasts(production.settings, missed, made)


def test_a_breach_in_ci_names_features_and_wape_and_starts_training_once_with_that_reason(
    production, retraining, capsys, monkeypatch
):
    # given a market that moved and forecasts that missed, newer than the ones that did not
    move_the_market_and_miss(production)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    # when
    code, out, err = monitor(capsys)
    # then
    reason = "price, promo drift; WAPE 0.30 vs 0.10 promised"
    assert (code, out[-1]) == (3, f"Verdict: breach — {reason}"), err
    assert retraining == [reason]
    assert any(line.startswith("Requested retraining:") for line in out)
    assert monitor_tags(production)["monitor_reason"] == reason


def test_a_breach_outside_ci_says_how_to_retrain_by_hand(production, retraining, capsys):
    move_the_market_and_miss(production)
    code, out, _ = monitor(capsys)
    assert code == 3 and retraining == []
    assert any("make train" in line for line in out[:-1]), out


def test_a_retraining_request_that_cannot_be_sent_fails_the_job_after_the_verdict(
    production, capsys, monkeypatch
):
    # given CI whose token may not start the training pipeline
    move_the_market_and_miss(production)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")

    def refused(reason: str, env) -> str:
        raise ApprovalError("retraining was not requested: HTTP 403; the job needs `actions: write`")

    monkeypatch.setattr(retrain_trigger, "request_retraining", refused)
    # when
    code, out, err = monitor(capsys)
    # then the job fails in one line, and its log still ends with the verdict
    assert code == 1 and out[-1].startswith("Verdict: breach — ")
    assert err.count("\n") == 1 and "retraining was not requested" in err, err


# ---------------------------------------------------------------- bad inputs: one line, exit 2, nothing done


def nothing_released(production: Production) -> None:
    pin(production.settings, "unreleased")


def no_forecasts_of_this_version(production: Production) -> None:
    shutil.rmtree(production.settings.forecast_uri)
    other = forecasts_for(production.actuals, production.forecast_weeks, 1.0, "7", NOW)
    write_forecasts(production.settings, other, NOW)


def no_actuals_yet(production: Production) -> None:
    production.training.to_parquet(production.settings.data_uri, index=False)


def snapshot_gone(production: Production) -> None:
    shutil.rmtree(production.settings.snapshot_dir)


def no_weeks_in_the_data(production: Production) -> None:
    production.actuals.assign(week_start=pd.NaT).to_parquet(production.settings.data_uri, index=False)


def a_watched_feature_missing(production: Production) -> None:
    production.actuals.drop(columns="promo").to_parquet(production.settings.data_uri, index=False)


def never_back_tested(production: Production) -> None:
    production.client.delete_model_version_tag(
        production.settings.model_name, production.version, "backtest_wape"
    )


@pytest.mark.parametrize(
    ("arrange", "says"),
    [
        (nothing_released, "pins no version yet ('unreleased'): promote one first"),
        (no_forecasts_of_this_version, "no forecasts of version 1 yet: run `make forecast ENV=production`"),
        (no_actuals_yet, "DATA_URI has no actuals yet for any forecast week"),
        (snapshot_gone, "the training snapshot of version 1 cannot be found"),
        (
            no_weeks_in_the_data,
            f"DATA_URI has no rows with a week_start in its newest {SHIPPED.window_weeks} weeks",
        ),
        (a_watched_feature_missing, "DATA_URI lacks the watched feature(s) promo"),
        (never_back_tested, "version 1 has no backtest_wape"),
    ],
)
def test_a_bad_input_is_refused_in_one_line_and_nothing_is_written_logged_or_started(
    production, retraining, capsys, monkeypatch, arrange, says
):
    # given production in CI, with one input missing or wrong
    arrange(production)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    # when
    code, out, err = monitor(capsys)
    # then
    assert code == 2 and out == []
    assert err.count("\n") == 1 and err.startswith("monitor: ") and says in err, err
    assert retraining == [] and monitor_tags(production) == {}
    assert not list(production.settings.reports_dir.glob("monitor-*"))
