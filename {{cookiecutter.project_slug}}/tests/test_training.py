"""Training is deterministic, never evaluates on weeks it trained on, and measures forecasts correctly."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict

import mlflow
import numpy as np
import pytest

from {{ cookiecutter.package_name }} import provenance, registry
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.fitting import TrainConfig, fit_and_evaluate, time_split
from {{ cookiecutter.package_name }}.snapshot import fingerprint, load_snapshot, save_snapshot
from {{ cookiecutter.package_name }}.train import CONFIG_ARTIFACT, DEFAULT_CONFIG, retrain_evidence

FAST = TrainConfig(seed=7, test_weeks=8, model={"max_iter": 20, "learning_rate": 0.1})


def test_metrics_on_a_known_forecast():
    metrics = forecast_metrics(np.array([10.0, 20.0, 30.0]), np.array([12.0, 18.0, 36.0]))
    assert metrics["mae"] == pytest.approx(10 / 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(44 / 3))
    assert metrics["wape"] == pytest.approx(10 / 60)
    assert metrics["bias"] == pytest.approx(6 / 60)


def test_time_split_holds_out_the_newest_weeks(sales):
    train_rows, test_rows = time_split(sales, test_weeks=8)
    assert train_rows["week_start"].max() < test_rows["week_start"].min()
    assert test_rows["week_start"].nunique() == 8
    assert len(train_rows) + len(test_rows) == len(sales)


def test_same_data_and_seed_give_the_same_model(sales):
    first = fit_and_evaluate(sales, FAST)
    second = fit_and_evaluate(sales.sample(frac=1.0, random_state=1), FAST)
    np.testing.assert_array_equal(first.predictions, second.predictions)
    assert first.metrics == second.metrics


def test_model_beats_a_naive_mean_forecast(sales):
    result = fit_and_evaluate(sales, TrainConfig.from_toml(DEFAULT_CONFIG))
    naive = forecast_metrics(
        result.test["units_sold"], np.full(len(result.test), result.test["units_sold"].mean())
    )
    assert result.metrics["wape"] < 0.5 * naive["wape"]


def test_config_with_string_bool_and_number_parameters_survives_the_round_trip(
    sales, settings, tmp_path, blank_store
):
    # given a config whose model parameters are a string, a bool, a float and an int
    path = tmp_path / "train.toml"
    path.write_text(
        'seed = 3\ntest_weeks = 8\n[model]\nloss = "poisson"\nearly_stopping = false\n'
        "learning_rate = 0.2\nmax_iter = 15\n"
    )
    config = TrainConfig.from_toml(path)
    # when it is logged with a run and read back the way `reproduce` reads it
    shutil.copy(blank_store, settings.tracking_uri.removeprefix("sqlite:///"))
    registry.connect(settings)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("round-trip", (tmp_path / "art").as_uri()))
    with mlflow.start_run() as run:
        mlflow.log_dict(asdict(config), CONFIG_ARTIFACT)
    restored = TrainConfig.from_dict(mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{CONFIG_ARTIFACT}"))
    # then every value keeps its type, and it trains the same model
    assert restored == config
    assert restored.model["early_stopping"] is False and restored.model["loss"] == "poisson"
    np.testing.assert_array_equal(
        fit_and_evaluate(sales, restored).predictions, fit_and_evaluate(sales, config).predictions
    )


def test_fingerprint_follows_content_not_row_order_of_storage(sales, tmp_path):
    assert fingerprint(sales) == fingerprint(sales.copy())
    changed = sales.copy()
    changed.loc[0, "units_sold"] += 1
    assert fingerprint(changed) != fingerprint(sales)


def test_snapshot_is_addressed_by_fingerprint_and_refuses_tampering(sales, tmp_path):
    data_fp = fingerprint(sales)
    path = save_snapshot(sales, tmp_path, data_fp)
    assert path.name == f"{data_fp}.parquet"
    assert fingerprint(load_snapshot(path, data_fp)) == data_fp
    sales.head(10).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="altered"):
        load_snapshot(path, data_fp)


def test_outside_git_training_says_up_front_that_production_will_refuse_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert provenance.git_dirty()
    assert "not a git repository" in provenance.untraceable_reason()


def test_code_is_traceable_only_from_a_clean_commit(tmp_path, monkeypatch):
    # given a git repository with one commit
    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (tmp_path / "train.py").write_text("print('v1')\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "v1"]):
        subprocess.run([*git, *args], check=True)
    assert not provenance.git_dirty() and len(provenance.git_sha()) == 40
    assert provenance.untraceable_reason() is None
    # when a committed file changes and a new one appears, the code is untraceable, and training says why
    (tmp_path / "train.py").write_text("print('v1.1')\n")
    (tmp_path / "features_v2.py").write_text("print('v2')\n")
    assert provenance.git_dirty()
    assert provenance.untraceable_reason() == (
        "uncommitted changes in train.py, features_v2.py (see `git status`)"
    )
    (tmp_path / "train.py").write_text("print('v1')\n")
    # and ignored outputs (data, stores, reports) do not count
    (tmp_path / "features_v2.py").unlink()
    (tmp_path / ".gitignore").write_text("mlflow.db\n")
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-qm", "ignore the store"], check=True)
    (tmp_path / "mlflow.db").write_text("")
    assert not provenance.git_dirty()


def test_training_records_why_monitoring_asked_for_it_as_one_short_line():
    # given the reason the training pipeline was started with: a newline, a terminal escape, far too long
    env = {"RETRAIN_REASON": "drift in price\n\x1b[2J" + "x" * 500}
    # when training assembles the evidence it registers the version with
    evidence = retrain_evidence(env)
    # then the reason is there under the registry's key, as one bounded, printable line
    (reason,) = evidence.values()
    assert list(evidence) == [registry.RETRAIN_REASON]
    assert reason.startswith("drift in price [2Jxxx") and len(reason) == 300 and reason.isprintable()


@pytest.mark.parametrize("env", [{}, {"RETRAIN_REASON": " \n "}])
def test_training_on_a_push_or_the_schedule_records_no_reason(env):
    assert retrain_evidence(env) == {}
