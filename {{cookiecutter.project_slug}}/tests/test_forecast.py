"""Batch forecasts: every series, the next horizon_weeks, with the version an environment runs; none lost.

What a user notices: the weeks forecast are the ones after the history, each run adds a file and keeps the
earlier ones, an environment without a release is refused in one line, and the serving image forecasts
from the model baked into it without asking the registry.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package_name }} import cli, gitops
from {{ cookiecutter.package_name }}.contract import SERIES_COLUMNS, TARGET
from {{ cookiecutter.package_name }}.features import build_pipeline
from {{ cookiecutter.package_name }}.forecast import COLUMNS, future_frame, read_forecasts, run_forecast
from {{ cookiecutter.package_name }}.inputs import InputError
from {{ cookiecutter.package_name }}.monitor_config import MonitorConfig
from {{ cookiecutter.package_name }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
HORIZON = MonitorConfig.from_toml(PROJECT / "config" / "monitor.toml").horizon_weeks
MONDAY = datetime(2026, 3, 23, 5, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def in_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where `make forecast` runs (config/monitor.toml), with no model baked in or pinned by env."""
    monkeypatch.chdir(PROJECT)
    for name in ("MODEL_DIR", "MODEL_VERSION", "FORECAST_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def fitted(sales: pd.DataFrame):
    return build_pipeline({"max_iter": 20}, seed=7).fit(sales.drop(columns=TARGET), sales[TARGET])


@pytest.fixture(scope="module")
def released(tmp_path_factory, blank_store, sales, fitted) -> tuple[Settings, str]:
    """A registry holding one version of a small model, pinned by deploy/staging/, and its sales history."""
    import mlflow

    root = tmp_path_factory.mktemp("released")
    settings = Settings.in_folder(root, "forecast-model")
    shutil.copy(blank_store, root / "mlflow.db")
    Path(settings.data_uri).parent.mkdir()
    sales.to_parquet(settings.data_uri, index=False)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    experiment = mlflow.create_experiment("forecasts", (root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            fitted,
            name="model",
            registered_model_name=settings.model_name,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
        )
    version = str(info.registered_model_version)
    for env in ("staging", "production"):
        shutil.copytree(PROJECT / "deploy" / env, settings.deploy_dir / env)
    gitops.write_atomically(gitops.pinned_contents(settings.deploy_dir / "staging", version, None))
    return settings, version


def own_folder(settings: Settings, tmp_path: Path) -> Settings:
    """The released store and data, with forecasts written into this test's own folder."""
    return replace(settings, forecast_uri=str(tmp_path / "forecasts"))


def settings_series(settings: Settings) -> int:
    """How many series (store x category) the settings' sales history holds."""
    return len(pd.read_parquet(settings.data_uri)[SERIES_COLUMNS].drop_duplicates())


# ---------------------------------------------------------------- the rows to forecast


def test_future_rows_are_the_weeks_after_each_series_newest_week(sales):
    # given a history in which one series stops two weeks before the others
    newest = sales["week_start"].max()
    lagging = (sales["store_id"] == "S01") & (sales["category"] == "bakery")
    stopped = lagging & (sales["week_start"] > newest - timedelta(weeks=2))
    history = sales[~stopped].sample(frac=1, random_state=3)
    # when
    future = future_frame(history.drop(columns=TARGET), horizon_weeks=3)
    # then every series gets exactly the three weeks after its own newest week, in series order
    series = sales[SERIES_COLUMNS].drop_duplicates()
    assert len(future) == 3 * len(series)
    weeks = future.groupby(SERIES_COLUMNS)["week_start"].apply(list)
    after = [newest + timedelta(weeks=k) for k in (1, 2, 3)]
    assert weeks[("S01", "bakery")] == [week - timedelta(weeks=2) for week in after]
    assert weeks[("S02", "dairy")] == after
    keys = list(zip(future["store_id"], future["category"], strict=True))
    assert keys == sorted(keys)


def test_future_rows_are_business_as_usual_at_each_series_regular_price(sales):
    # given a history whose newest week is a promotion for one series
    sales = sales.copy()
    newest_week = sales["week_start"] == sales["week_start"].max()
    promoted = newest_week & (sales["store_id"] == "S01") & (sales["category"] == "dairy")
    sales.loc[promoted, ["promo", "discount", "price"]] = [1, 0.3, 0.01]
    regular = sales[sales["promo"] == 0].sort_values("week_start").groupby(SERIES_COLUMNS).tail(1)
    # when
    future = future_frame(sales.drop(columns=TARGET), horizon_weeks=2).set_index(SERIES_COLUMNS)
    # then each series is at the price of its newest week without a promotion, with no discount or promotion
    assert (future["price"] == regular.set_index(SERIES_COLUMNS)["price"].reindex(future.index)).all()
    assert future.loc[("S01", "dairy"), "price"].min() > 0.01
    assert (future["discount"] == 0).all() and (future["promo"] == 0).all() and (future["holiday"] == 0).all()
    assert list(future.reset_index().columns) == [c for c in sales.columns if c != TARGET]


# ---------------------------------------------------------------- run_forecast end to end


def test_each_run_adds_a_file_and_read_forecasts_returns_every_run(released, tmp_path, capsys):
    # given the version staging runs
    settings, version = released
    settings = own_folder(settings, tmp_path)
    # when forecasting twice, a week apart: once by environment, once by version
    first = run_forecast(settings, environment="staging", version=None, now=MONDAY)
    second = run_forecast(settings, environment=None, version=version, now=MONDAY + timedelta(weeks=1))
    # then both files are kept, side by side
    assert first != second
    assert sorted(path.name for path in (tmp_path / "forecasts").iterdir()) == sorted(
        [Path(first).name, Path(second).name]
    )
    assert Path(first).name == f"forecast-20260323T050000000000Z-v{version}.parquet"
    # and the user is told what was written, in one line per run
    series = settings_series(settings)
    lines = capsys.readouterr().out.splitlines()
    summary = f"({series} series x {HORIZON} weeks) of version {version}"
    assert lines == [f"Wrote {series * HORIZON} forecasts {summary} to {url}" for url in (first, second)]
    # and monitoring reads both runs back
    forecasts = read_forecasts(settings.forecast_uri)
    assert list(forecasts.columns) == COLUMNS
    assert len(forecasts) == 2 * series * HORIZON
    assert set(forecasts["model_version"]) == {version}
    assert forecasts.groupby("generated_at").size().to_dict() == {
        pd.Timestamp(MONDAY): series * HORIZON,
        pd.Timestamp(MONDAY + timedelta(weeks=1)): series * HORIZON,
    }
    assert (forecasts["forecast"] >= 0).all() and forecasts["forecast"].dtype == "float64"
    assert (forecasts["forecast"] == forecasts["forecast"].round(1)).all()
    newest = pd.read_parquet(settings.data_uri)["week_start"].max()
    assert forecasts["week_start"].min() == newest + timedelta(weeks=1)
    assert forecasts["week_start"].max() == newest + timedelta(weeks=HORIZON)


def test_an_empty_or_missing_folder_reads_as_no_forecasts_with_the_columns(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        forecasts = read_forecasts(str(folder))
        assert forecasts.empty
        assert list(forecasts.columns) == COLUMNS


def test_the_serving_image_forecasts_from_its_baked_model_without_the_registry(
    released, fitted, tmp_path, monkeypatch
):
    # given the image's layout (MODEL_DIR/<N>/, MODEL_VERSION from the ConfigMap) and no reachable registry
    import mlflow.sklearn

    settings, _ = released
    settings = replace(own_folder(settings, tmp_path), tracking_uri="http://127.0.0.1:9")
    mlflow.sklearn.save_model(fitted, str(tmp_path / "models" / "7"), serialization_format="cloudpickle")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODEL_VERSION", "7")
    # when the CronJob runs it (neither ENV nor VERSION given)
    written = run_forecast(settings, environment=None, version=None, now=MONDAY)
    # then version 7 forecast every series without asking the registry
    forecasts = pd.read_parquet(written)
    assert set(forecasts["model_version"]) == {"7"}
    assert len(forecasts) == settings_series(settings) * HORIZON


# ---------------------------------------------------------------- refusals


def test_an_environment_without_a_release_is_refused_in_one_line(settings, monkeypatch, capsys):
    # given the overlays as rendered: nothing promoted yet
    for env in ("staging", "production"):
        shutil.copytree(PROJECT / "deploy" / env, settings.deploy_dir / env)
    monkeypatch.setenv("DEPLOY_DIR", str(settings.deploy_dir))
    monkeypatch.setenv("FORECAST_URI", settings.forecast_uri)
    # when
    code = cli.main(["forecast", "--env", "production"])
    # then
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1
    assert "production/ pins no version yet ('unreleased')" in error
    assert "make promote VERSION=N ENV=production" in error
    assert not Path(settings.forecast_uri).exists()


def test_without_env_version_or_model_version_it_says_what_to_pass(settings):
    with pytest.raises(InputError, match="ENV or VERSION is required"):
        run_forecast(settings, environment=None, version=None)
