"""Per-scenario training: one model per store x category, trained, registered, traced and served as one."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }} import inputs, registry
from {{ cookiecutter.package_name }}.contract import CATEGORIES, STORE_ID_PATTERN, TARGET
from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.fitting import (
    ScenarioFitsFailed,
    TrainConfig,
    fit_global,
    fit_per_scenario,
    time_split,
)
from {{ cookiecutter.package_name }}.scenario_models import ScenarioModels, UnknownScenario, scenario_names
from {{ cookiecutter.package_name }}.snapshot import fingerprint

FAST = TrainConfig(
    seed=7, test_weeks=8, model={"max_iter": 20, "learning_rate": 0.1}, granularity="per_scenario"
)
SHORT = "S03:bakery"  # the scenario each data set below gives too little history


def scenario_sales(scenarios: int = 12, weeks: int = 104) -> pd.DataFrame:
    """Fresh synthetic sales of `scenarios` series, where SHORT only has its newest 21 weeks."""
    frame = generate_sales(newest_complete_week(date.today()), weeks=weeks, scenarios=scenarios)
    names = scenario_names(frame)
    early = frame["week_start"] < frame["week_start"].max() - pd.Timedelta(weeks=20)
    return frame[~((names == SHORT) & early)].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, object]:
    frame = scenario_sales()
    return frame, fit_per_scenario(frame, FAST)


def test_the_generator_makes_the_scenarios_asked_for_and_keeps_its_default():
    week = newest_complete_week(date(2026, 3, 18))
    default = generate_sales(week, weeks=4)
    assert default.groupby(["store_id", "category"]).ngroups == 8 * len(CATEGORIES)
    assert default.equals(generate_sales(week, weeks=4, scenarios=None))
    many = generate_sales(week, weeks=2, scenarios=501)
    assert scenario_names(many).nunique() == 501
    assert many["store_id"].str.fullmatch(STORE_ID_PATTERN.strip("^$")).all()  # S01 ... S101 pass the gate
    assert scenario_names(generate_sales(week, weeks=2, scenarios=7)).nunique() == 7


def test_each_row_is_forecast_by_its_own_scenario_s_model(fitted):
    frame, result = fitted
    models = result.pipeline
    assert isinstance(models, ScenarioModels) and len(models.scenarios) == 11
    # the bundle predicts each scenario exactly as that scenario's model fitted alone does
    for name in ("S01:beverages", "S02:produce", "S03:beverages"):
        alone = fit_global(frame[scenario_names(frame) == name], FAST.for_one_scenario())
        together = models.predict(alone.test.drop(columns=TARGET))
        np.testing.assert_array_equal(together, alone.predictions)
    # rows of many scenarios in any order come back in their order, each from its own model
    shuffled = result.test.sample(frac=1.0, random_state=3)
    np.testing.assert_array_equal(
        models.predict(shuffled.drop(columns=TARGET)),
        pd.Series(result.predictions, index=result.test.index).loc[shuffled.index].to_numpy(),
    )


def test_a_scenario_with_too_little_history_is_skipped_with_its_reason_never_dropped(fitted):
    frame, result = fitted
    table = result.scenarios.set_index("scenario")
    assert table.loc[SHORT, "status"] == "skipped"
    assert table.loc[SHORT, "reason"] == f"21 weeks of history, needs {FAST.scenario_min_weeks}"
    assert (table.drop(index=SHORT)["status"] == "trained").all() and len(table) == 12
    # and a row for it is refused by name, never answered by another scenario's model
    row = frame[scenario_names(frame) == SHORT].drop(columns=TARGET).head(1)
    with pytest.raises(UnknownScenario, match=SHORT):
        result.pipeline.predict(row)


@pytest.mark.parametrize("allowed", [0, 1])
def test_a_failed_fit_refuses_the_training_unless_the_policy_allows_it(allowed):
    frame = scenario_sales()
    frame[TARGET] = frame[TARGET].astype("float64")
    frame.loc[scenario_names(frame) == "S02:dairy", TARGET] = np.nan  # the model cannot learn from NaN
    config = TrainConfig(FAST.seed, FAST.test_weeks, FAST.model, "per_scenario", max_failed_scenarios=allowed)
    if allowed == 0:
        with pytest.raises(
            ScenarioFitsFailed, match=r"1 scenario fit\(s\) failed.*max_failed_scenarios.*S02:dairy"
        ):
            fit_per_scenario(frame, config)
        return
    result = fit_per_scenario(frame, config)
    failed = result.scenarios[result.scenarios["status"] == "failed"]
    assert failed["scenario"].tolist() == ["S02:dairy"] and "ValueError" in failed["reason"].iloc[0]
    assert "S02:dairy" not in result.pipeline.scenarios


def test_scenario_models_load_lazily_into_a_bounded_cache(fitted, monkeypatch):
    _, result = fitted
    rows = result.test.drop(columns=TARGET)
    expected = result.pipeline.predict(rows)
    copy = pickle.loads(pickle.dumps(result.pipeline))
    assert copy.loaded == 0  # nothing is unpickled until a scenario is asked for
    monkeypatch.setenv("SCENARIO_CACHE_SIZE", "2")
    np.testing.assert_array_equal(copy.predict(rows), expected)
    assert copy.loaded == 2


def test_the_server_refuses_a_request_naming_a_scenario_its_version_has_no_model_for(monkeypatch):
    from {{ cookiecutter.package_name }} import serving
    from {{ cookiecutter.package_name }}.serve import dataframe_split

    rows = scenario_sales(scenarios=2, weeks=2).drop(columns=TARGET)
    monkeypatch.setitem(serving.KNOWN_SCENARIOS, "4", frozenset({"S01:beverages"}))
    assert len(serving.rows_for_version("4", dataframe_split(rows.head(1)))) == 1
    with pytest.raises(ValueError, match="no model for scenario S01:bakery in version 4"):
        serving.rows_for_version("4", dataframe_split(rows))
    assert len(serving.rows_for_version("5", dataframe_split(rows))) == len(rows)  # a global version


@pytest.mark.parametrize("value", ["0", "-3", "1e3", "12\n", "\uff11\uff12", "9" * 7, "$(touch x)", "12 "])
def test_scenarios_must_be_a_whole_number_in_range(value):
    with pytest.raises(inputs.InputError, match=r"^SCENARIOS=.* is not a number of series") as refused:
        inputs.scenarios(value)
    assert "\n" not in str(refused.value).replace(repr(value), "")


@pytest.mark.parametrize("value", ["S01", "S01:Dairy", "S1:dairy", "S01:dairy\n", ":dairy", "S01:dairy:x"])
def test_a_scenario_is_named_store_colon_category(value):
    with pytest.raises(inputs.InputError, match=r"^SCENARIO=.* is not a scenario: pass STORE:CATEGORY"):
        inputs.scenario(value)


def test_engines_are_local_or_spark():
    assert inputs.engine(None, {}) == "local" and inputs.engine("spark") == "spark"
    with pytest.raises(inputs.InputError, match="pass ENGINE=local or ENGINE=spark"):
        inputs.engine("dask")


def test_the_spark_engine_is_refused_in_one_line_without_java_unless_spark_connect_is_remote():
    pytest.importorskip("pyspark")  # the optional `spark` extra
    from {{ cookiecutter.package_name }}.spark_engine import SparkUnavailable, check_ready

    with pytest.raises(SparkUnavailable, match=r"^ENGINE=spark needs Java 17 and found none") as refused:
        check_ready({"PATH": "/nonexistent", "SPARK_REMOTE": "local"})  # a local Connect server starts a JVM
    assert "\n" not in str(refused.value)
    check_ready({"PATH": "/nonexistent", "SPARK_REMOTE": "sc://spark.example.org:15002"})  # the cluster's


def test_a_per_scenario_training_registers_one_version_traced_per_scenario(
    settings, blank_store, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    from {{ cookiecutter.package_name }}.lineage import show_lineage
    from {{ cookiecutter.package_name }}.train import train

    # given a fast per-scenario config and data with one scenario too short
    shutil.copy(blank_store, settings.tracking_uri.removeprefix("sqlite:///"))
    config = tmp_path / "train.toml"
    config.write_text(
        'seed = 7\ntest_weeks = 8\ngranularity = "per_scenario"\n'
        "[model]\nmax_iter = 20\nlearning_rate = 0.1\n"
    )
    frame = scenario_sales()
    Path(settings.data_uri).parent.mkdir(parents=True)
    frame.to_parquet(settings.data_uri, index=False)
    # when it trains
    assert train(settings, config) == 0
    out = capsys.readouterr().out
    assert "Per-scenario fits on engine local: 11 trained, 1 skipped, 0 failed" in out
    assert f"skipped  {SHORT}: 21 weeks of history, needs 34" in out
    # then the registry grew by one model and one version, whatever the number of scenarios
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert [model.name for model in client.search_registered_models()] == [settings.model_name]
    (version,) = client.search_model_versions(f"name = '{settings.model_name}'")
    assert version.tags[registry.GRANULARITY] == "per_scenario"
    # and lineage answers for one scenario: its own slice, metrics, run and code
    assert show_lineage(settings, "1", as_json=True, scenario=("S02", "dairy")) == 0
    record = json.loads(capsys.readouterr().out)["scenario"]
    own_rows = frame[scenario_names(frame) == "S02:dairy"].sort_values("week_start", ignore_index=True)
    assert record["data_fingerprint"] == fingerprint(own_rows)
    assert record["status"] == "trained" and record["run_id"] == version.run_id
    expected = fit_global(own_rows, FAST.for_one_scenario()).metrics
    assert record["wape"] == pytest.approx(expected["wape"], rel=1e-12)
    assert (
        record["code"]["git_sha"] == version.tags["git_sha"]
        and record["params"]["granularity"] == "per_scenario"
    )
    assert show_lineage(settings, "1", scenario=tuple(SHORT.split(":"))) == 0
    assert re.search(r"status\s+skipped", capsys.readouterr().out)
    # a scenario the version does not have is refused by name
    with pytest.raises(registry.RegistryError, match="version 1 has no scenario S09:dairy: it has 12"):
        show_lineage(settings, "1", scenario=("S09", "dairy"))


def test_the_hold_out_of_each_scenario_is_its_own_newest_weeks(fitted):
    frame, result = fitted
    for name, test_rows in result.test.groupby(scenario_names(result.test)):
        own = frame[scenario_names(frame) == name]
        assert test_rows["week_start"].min() == time_split(own, FAST.test_weeks)[1]["week_start"].min()
