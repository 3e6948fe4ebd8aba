"""Many models on a rendered project: one model per store x category, released through the same gates as one.

Runs the rendered project's own `make` targets: synthetic data of 12 scenarios, per-scenario training,
back-test, staging, production; a second version trained with more boosting rounds per scenario, which takes
the new model where it is better and keeps production's elsewhere; rollback; then serves a per-scenario version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import DEFAULT_PACKAGE, make, render, run, use_rendered_package
from scoring import make_serve, post_raw, post_rows, predict_in_process, read_rows
from test_ml_flow import commit_all

pytestmark = pytest.mark.e2e
SCENARIOS = 12


@pytest.fixture(scope="module")
def released(tmp_path_factory, installed_project) -> tuple[Path, dict[str, str]]:
    """Two per-scenario versions through the whole gated flow, then production rolled back to the first."""
    project = render(tmp_path_factory.mktemp("many-models"))
    commit_all(project)
    outputs = {"data": make(project, "data", SCENARIOS=str(SCENARIOS)).stdout}
    for version in ("1", "2"):
        if version == "2":  # a challenger that is better on some scenarios and not on others
            config = project / "config" / "train.toml"
            config.write_text(config.read_text().replace("\nmax_iter = 60\n", "\nmax_iter = 120\n"))
            commit_all(project)
        outputs[f"train v{version}"] = make(project, "train-scenarios").stdout
        outputs[f"backtest v{version}"] = make(project, "backtest", VERSION=version).stdout
        make(project, "promote", VERSION=version, ENV="staging", APPROVER="alice")
        make(project, "promote", VERSION=version, ENV="production", APPROVER="bob")
    make(project, "rollback", ENV="production", APPROVER="carol")
    return project, outputs


def registered_models(project: Path) -> dict[str, int]:
    """Each registered model of the project's store and how many versions it holds."""
    script = (
        "import json, mlflow; c = mlflow.MlflowClient('sqlite:///mlflow.db', 'sqlite:///mlflow.db');"
        "print(json.dumps({m.name: len(c.search_model_versions(f\"name = '{m.name}'\"))"
        " for m in c.search_registered_models()}))"
    )
    return json.loads(run(["python", "-c", script], project).stdout)


def test_each_training_adds_one_version_whatever_the_number_of_scenarios(released):
    project, outputs = released
    assert f"({SCENARIOS} store x category series)" in outputs["data"]
    assert f"Per-scenario fits on engine local: {SCENARIOS} trained, 0 skipped, 0 failed" in outputs["train v1"]
    # two trainings: two versions of the model; one copy per release in each environment's model
    assert registered_models(project) == {
        "demand-forecast-model": 2,
        "demand-forecast-model-staging": 2,
        "demand-forecast-model-production": 3,  # two promotions and the rollback
    }


def test_the_second_release_takes_the_better_model_per_scenario_and_keeps_production_s_elsewhere(released):
    project, outputs = released
    assert (
        f"against no production model (first release): {SCENARIOS} scenarios: 0 improved, {SCENARIOS} new, 0 kept"
        in outputs["train v1"]
    )
    decided = re.search(
        r"against production's v1: \d+ scenarios: (\d+) improved, 0 new, (\d+) kept, 0 failed", outputs["train v2"]
    )
    assert decided and int(decided[1]) > 0 and int(decided[2]) > 0
    assert int(decided[1]) + int(decided[2]) == SCENARIOS
    # the back-test judges the composite per scenario against production and finds the same mix
    assert f"{SCENARIOS} scenarios: {decided[1]} improved, 0 new, {decided[2]} kept, 0 failed" in outputs["backtest v2"]
    assert "production's own model (the same forecasts)" in outputs["backtest v2"]
    # lineage of a kept scenario names the first version's run; of an improved one, the second's
    verdicts = json.loads((project / "reports" / "backtest-v2-scenarios.json").read_text())
    runs = {}
    for version in ("1", "2"):
        runs[version] = json.loads(
            run(["python", "-m", DEFAULT_PACKAGE, "lineage", "--json"], project, VERSION=version).stdout
        )["run_id"]
    for outcome, version in (("kept", "1"), ("improved", "2")):
        scenario = next(v["scenario"] for v in verdicts if v["outcome"] == outcome)
        record = json.loads(
            run(["python", "-m", DEFAULT_PACKAGE, "lineage", "--json"], project, VERSION="2", SCENARIO=scenario).stdout
        )["scenario"]
        assert record["decision"] == outcome and record["run_id"] == runs[version]
    # and the composite reproduces: its own scenarios refitted, the kept ones named as carried over
    reproduced = make(project, "reproduce", VERSION="2").stdout
    assert "Reproduced." in reproduced and "this version kept" in reproduced


def test_production_rolled_back_to_the_first_per_scenario_version(released):
    project, _ = released
    assert "MODEL_VERSION=1" in (project / "deploy" / "production" / "model.env").read_text()
    assert "MODEL_VERSION=2" in (project / "deploy" / "staging" / "model.env").read_text()


def test_lineage_answers_for_one_scenario_of_a_released_version(released):
    project, _ = released
    result = run(["python", "-m", DEFAULT_PACKAGE, "lineage", "--json"], project, VERSION="1", SCENARIO="S02:dairy")
    record = json.loads(result.stdout)
    assert record["aliases"] == ["production"]
    scenario = record["scenario"]
    assert scenario["scenario"] == "S02:dairy" and scenario["status"] == "trained"
    assert len(scenario["data_fingerprint"]) == 64 and scenario["params"]["granularity"] == "per_scenario"
    refused = make(project, "lineage", check=False, VERSION="1", SCENARIO="S09:dairy")
    assert refused.returncode != 0
    assert "version 1 has no scenario S09:dairy" in refused.stderr


def test_the_server_answers_each_scenario_with_its_own_model_and_refuses_an_unknown_one(released):
    project, _ = released
    with make_serve(project, "1") as url:
        rows = read_rows(project).tail(3 * SCENARIOS).drop(columns="units_sold").reset_index(drop=True)
        singles = [post_rows(f"{url}/invocations", rows.iloc[[index]])[0] for index in range(SCENARIOS)]
        batch = post_rows(f"{url}/invocations", rows)
        unknown = rows.head(2).assign(store_id=["S01", "S77"])
        status, body = post_raw(
            f"{url}/invocations",
            {"dataframe_split": json.loads(unknown.to_json(orient="split", index=False, date_format="iso"))},
        )
        after = post_rows(f"{url}/invocations", rows.head(1))
    use_rendered_package(project)  # the version unpickles the rendered package's ScenarioModels
    expected = predict_in_process(project, rows)
    assert singles == pytest.approx(expected[:SCENARIOS], rel=1e-9)
    assert batch == pytest.approx(expected, rel=1e-9)
    assert status == 400 and "no model for scenario S77:" in body  # never another scenario's forecast
    assert after == pytest.approx(expected[:1], rel=1e-9)  # and the server keeps serving
