"""Champion/challenger per scenario: a per-scenario release serves each scenario's better model, new ones only
when they meet the floor, and the back-test holds it to that against production."""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.backtest import (
    Replayed,
    ScoringRefused,
    Verdict,
    compare_to_champion,
    rolling_windows,
    scenario_gate,
    window_scores,
)
from {{ cookiecutter.package_name }}.backtest_record import Policy, ScenarioSummary
from {{ cookiecutter.package_name }}.contract import TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.fitting import ScenarioFitsFailed, fit_global, fit_per_scenario
from {{ cookiecutter.package_name }}.scenario_models import scenario_names
from {{ cookiecutter.package_name }}.scenario_release import Champion, choose, compose, judge, judge_scenarios
from test_scenarios import FAST, SHORT, scenario_sales

POLICY = Policy(
    windows=2, window_weeks=4, wape_floor=0.15, max_wape_regression=0.005, scenario_wape_floor=0.3
)
CHALLENGER = replace(FAST, model={"max_iter": 40, "learning_rate": 0.2})  # better on some scenarios only


@pytest.fixture(scope="module")
def fits():
    frame = scenario_sales()
    return frame, fit_per_scenario(frame, FAST), fit_per_scenario(frame, CHALLENGER)


def per_scenario_champion(result) -> Champion:
    records = {
        row["scenario"]: {**row, "run_id": "run-of-v1"}
        for row in result.scenarios.to_dict(orient="records")
        if row["status"] == "trained"
    }
    return Champion("1", result.pipeline, records, "run-of-v1", "fp-of-v1")


@pytest.mark.parametrize(
    ("challenger", "champion", "outcome"),
    [
        (0.10, 0.12, "improved"),
        (0.12, 0.12, "kept"),  # not better: production's model stays
        (0.13, 0.12, "kept"),
        (0.35, 0.40, "kept"),  # better, but above the floor
        (None, 0.12, "kept"),  # no challenger (too little history, or its fit failed)
        (0.20, None, "new"),
        (0.31, None, "failed"),  # a new scenario must meet the floor
        (math.nan, None, "failed"),  # a new scenario with no rows to check it by
        (None, None, "untrained"),
    ],
)
def test_each_scenario_takes_the_challenger_only_when_it_is_better_and_meets_the_floor(
    challenger, champion, outcome
):
    assert choose(challenger, champion, POLICY).outcome == outcome


def test_a_composite_serves_the_better_model_per_scenario_with_the_lineage_of_each(fits):
    frame, champion_fit, challenger_fit = fits
    composite = compose(challenger_fit, per_scenario_champion(champion_fit), POLICY)
    table = composite.scenarios.set_index("scenario")
    decisions = table["decision"].to_dict()
    assert {"improved", "kept"} <= set(decisions.values()) and decisions[SHORT] == "untrained"
    rows = frame.drop(columns=TARGET)
    names = scenario_names(rows)
    for scenario, decision in decisions.items():
        if decision == "untrained":
            assert scenario not in composite.pipeline.scenarios
            continue
        source = challenger_fit if decision == "improved" else champion_fit
        own = rows[names == scenario]
        np.testing.assert_array_equal(composite.pipeline.predict(own), source.pipeline.predict(own))
        # a kept scenario names production's run; an improved one is this training's (filled in when logged)
        assert (table.loc[scenario, "run_id"] == "run-of-v1") == (decision == "kept")
        assert (table.loc[scenario, "champion_wape"] < table.loc[scenario, "challenger_wape"]) == (
            decision == "kept"
        ) or table.loc[scenario, "champion_wape"] == table.loc[scenario, "challenger_wape"]
    expected = forecast_metrics(
        composite.test[TARGET], composite.pipeline.predict(composite.test.drop(columns=TARGET))
    )
    assert composite.metrics == pytest.approx(expected, rel=1e-12)


def test_a_new_scenario_that_misses_the_floor_is_not_served_and_none_at_all_refuses(fits):
    _, _, challenger_fit = fits
    wapes = compose(challenger_fit, None, POLICY).scenarios.set_index("scenario")["challenger_wape"].dropna()
    floor = float(wapes.median())
    composite = compose(challenger_fit, None, replace(POLICY, scenario_wape_floor=floor))
    failed = composite.scenarios[composite.scenarios["decision"] == "failed"]["scenario"]
    assert len(failed) > 0 and set(failed).isdisjoint(composite.pipeline.scenarios)
    assert set(failed).isdisjoint(scenario_names(composite.test))  # nor in the metrics it is registered with
    with pytest.raises(ScenarioFitsFailed, match="no scenario has a model that meets the floor"):
        compose(challenger_fit, None, replace(POLICY, scenario_wape_floor=0.0001))


def test_a_global_champion_kept_for_many_scenarios_is_stored_once(fits):
    frame, _, challenger_fit = fits
    global_fit = fit_global(frame[scenario_names(frame) != SHORT], replace(FAST, granularity="global"))
    size = len(pickle.dumps(global_fit.pipeline, protocol=pickle.HIGHEST_PROTOCOL))
    champion = Champion(
        "1", global_fit.pipeline, None, "run-of-v1", "fp-of-v1", pickle.dumps(global_fit.pipeline)
    )
    composite = compose(challenger_fit, champion, POLICY)
    kept = composite.scenarios[composite.scenarios["decision"] == "kept"]["scenario"].tolist()
    assert len(kept) >= 2
    assert len(pickle.dumps(composite.pipeline)) < size * 2 + len(pickle.dumps(challenger_fit.pipeline))
    rows = frame[scenario_names(frame).isin(kept)].drop(columns=TARGET)
    np.testing.assert_array_equal(composite.pipeline.predict(rows), global_fit.pipeline.predict(rows))
    assert composite.pipeline.loaded == 1  # the kept scenarios share one unpickled model


@pytest.mark.parametrize(
    ("wape", "champion", "outcome", "reason"),
    [
        (0.12, 0.12, "kept", "production's own model"),
        (0.125, 0.12, "failed", "production changed since this version was trained"),
        (None, 0.12, "failed", "production serves it; this version has no model for it"),
        (0.10, 0.12, "improved", "vs production's 0.1200"),
    ],
)
def test_the_backtest_holds_each_scenario_to_the_rule_against_production_now(wape, champion, outcome, reason):
    verdict = judge("S01:dairy", wape, champion, POLICY)
    assert verdict.outcome == outcome and reason in verdict.reason


def replayed(model, rows, serves=None) -> Replayed:
    """What the back-test's replay gives for `rows`: forecasts for the scenarios in `serves` (None: all)."""
    asked = np.ones(len(rows), dtype=bool) if serves is None else scenario_names(rows).isin(serves).to_numpy()
    forecasts = np.full(len(rows), np.nan)
    forecasts[asked] = model.predict(rows[asked].drop(columns=TARGET))
    return Replayed(forecasts, asked)


def test_the_backtest_fails_a_version_with_more_failed_scenarios_than_the_policy_allows(fits):
    _, champion_fit, _ = fits
    rows = champion_fit.test.reset_index(drop=True)
    table = [
        {"scenario": name, "status": "trained", "decision": "new", "run_id": "r"}
        for name in champion_fit.pipeline.scenarios
    ]
    table.append({"scenario": SHORT, "status": "trained", "decision": "failed", "decision_reason": "above"})
    verdicts = judge_scenarios(rows, replayed(champion_fit.pipeline, rows), None, None, table, POLICY)
    assert {v.scenario: v.outcome for v in verdicts}[SHORT] == "failed"
    passed = Verdict(True, "mean WAPE meets the floor", 0.1, None)
    assert not scenario_gate(passed, verdicts, POLICY).passed
    assert scenario_gate(passed, verdicts, replace(POLICY, max_failed_backtest_scenarios=1)).passed
    refused = scenario_gate(passed, verdicts, POLICY).reason
    assert refused.startswith("1 scenario(s) failed, the policy allows 0") and SHORT in refused


def test_a_scenario_production_serves_and_the_version_lacks_fails_even_without_recent_rows(fits):
    _, champion_fit, _ = fits
    rows = champion_fit.test.reset_index(drop=True)
    serves = set(champion_fit.pipeline.scenarios)
    gone = sorted(serves)[0]
    table = [{"scenario": name, "status": "trained", "decision": "kept"} for name in sorted(serves - {gone})]
    recent = rows[scenario_names(rows) != gone].reset_index(drop=True)  # no rows of it in the windows
    verdicts = judge_scenarios(
        recent,
        replayed(champion_fit.pipeline, recent, serves - {gone}),
        replayed(champion_fit.pipeline, recent),
        serves,
        table,
        POLICY,
    )
    by_name = {v.scenario: v for v in verdicts}
    assert by_name[gone].outcome == "failed" and "this version has no model for it" in by_name[gone].reason
    assert all(v.outcome == "kept" for name, v in by_name.items() if name != gone)


def test_new_scenarios_harder_than_average_do_not_fail_the_comparison_with_production():
    # production serves S01 at WAPE 0.10; the candidate keeps that model and adds S02 at 0.20
    def frame(wapes: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"window": [1, 2], "wape": wapes})

    verdict = compare_to_champion(frame([0.15, 0.15]), frame([0.10, 0.10]), POLICY, frame([0.10, 0.10]))
    assert verdict.passed and "on the scenarios both serve" in verdict.reason
    worse = compare_to_champion(frame([0.15, 0.15]), frame([0.10, 0.10]), POLICY, frame([0.11, 0.11]))
    assert not worse.passed and "worse than the champion's" in worse.reason
    assert not compare_to_champion(frame([math.nan, math.nan]), None, POLICY).passed  # nothing scored


def test_models_with_no_shared_rows_in_a_window_cannot_be_compared(fits):
    _, champion_fit, _ = fits
    windows = rolling_windows(champion_fit.test, POLICY.windows, POLICY.window_weeks)
    rows = pd.concat(windows, ignore_index=True)
    with pytest.raises(ScoringRefused, match="window 1 has no row of a scenario both"):
        window_scores(windows, replayed(champion_fit.pipeline, rows), np.zeros(len(rows), dtype=bool))


def test_a_verdict_without_rows_to_measure_records_no_number_and_stays_readable():
    verdict = judge("S01:dairy", math.nan, math.nan, POLICY)
    assert verdict.outcome == "kept" and verdict.wape is None and verdict.champion_wape is None
    summary = ScenarioSummary.of([verdict])
    assert ScenarioSummary.from_dict(json.loads(json.dumps(asdict(summary)))) == summary


@pytest.mark.parametrize(
    "counts",
    [{"failed": 1e999}, {"failed": -1}, {"failed": "3"}, {"failed": True}],
)
def test_a_hostile_scenario_summary_is_refused_as_malformed(counts):
    raw = {"counts": {**dict.fromkeys(registry.SCENARIO_OUTCOMES, 0), **counts}, "worst": []}
    with pytest.raises((ValueError, OverflowError)):
        ScenarioSummary.from_dict(json.loads(json.dumps(raw)))


@pytest.mark.parametrize(
    "table",
    [
        {"not": "a list"},
        [{"scenario": 1, "status": "trained"}],
        [{"scenario": "S01:dairy", "status": "won"}],
        [{"scenario": "S01:dairy", "status": "trained", "decision": "promoted"}],
        ["S01:dairy"],
    ],
)
def test_a_malformed_scenario_table_is_refused_in_one_line(table, monkeypatch):
    import mlflow

    monkeypatch.setattr(mlflow.artifacts, "load_dict", lambda uri: table)
    with pytest.raises(
        registry.RegistryError,
        match=r"^version 3: its scenarios/scenarios.json is missing or not a per-scenario",
    ):
        registry.scenario_table("3", "run", {registry.GRANULARITY: "per_scenario"})


def test_a_scenario_table_mlflow_cannot_parse_is_refused_in_one_line(monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    def unparsable(uri: str) -> None:
        raise MlflowException("Unable to form a JSON object", error_code=INVALID_PARAMETER_VALUE)

    monkeypatch.setattr(mlflow.artifacts, "load_dict", unparsable)
    with pytest.raises(
        registry.RegistryError, match=r"^version 3: its scenarios/scenarios.json is missing or not"
    ):
        registry.scenario_table("3", "run", {registry.GRANULARITY: "per_scenario"})


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_failed_backtest_scenarios = -1", "not a count: -1"),
        ("scenario_wape_floor = nan", "not a finite"),
    ],
)
def test_a_bad_policy_value_is_refused_in_one_line_naming_the_file(tmp_path, line, problem):
    from {{ cookiecutter.package_name }}.inputs import InputError

    policy = tmp_path / "backtest.toml"
    policy.write_text(
        "windows = 2\nwindow_weeks = 4\nwape_floor = 0.15\nmax_wape_regression = 0.005\n" + line
    )
    with pytest.raises(InputError, match=rf"^{re.escape(str(policy))}: .*{problem}"):
        Policy.from_toml(policy)


def test_a_scoring_server_answering_the_wrong_number_of_forecasts_is_refused(fits, monkeypatch):
    from {{ cookiecutter.package_name }} import serve
    from {{ cookiecutter.package_name }}.backtest import replay

    _, champion_fit, _ = fits
    windows = rolling_windows(champion_fit.test, POLICY.windows, POLICY.window_weeks)
    monkeypatch.setattr(serve, "score", lambda url, rows: np.zeros(len(rows) - 1))
    with pytest.raises(ScoringRefused, match=r"candidate v2: the scoring server returned forecasts of shape"):
        replay("http://127.0.0.1:9", windows, "candidate v2")


def test_a_global_model_is_limited_by_its_max_bins_too(fits):
    from {{ cookiecutter.package_name }}.features import too_many_categories

    frame, _, _ = fits  # 3 stores
    assert too_many_categories(frame, {}) is None
    assert (
        too_many_categories(frame, {"max_bins": 2})
        == "3 distinct store_id values, and one global model takes at most 2"
    )
