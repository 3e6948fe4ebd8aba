"""ENGINE=local and ENGINE=spark train the same per-scenario models: same records, metrics and forecasts.

The rendered project's `[spark]` extra is installed into the shared venv; everything that imports PySpark runs
in a subprocess with the project's environment, and one Spark session (about 18 s to start here) serves the
whole comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import VENV, install_into_shared_venv, make, render, run

pytestmark = pytest.mark.e2e

SHORT = "S03:bakery"  # the scenario the data below gives too little history: skipped, on both engines

# Fits 12 scenarios (argv[1] too short) on each engine with the project's own config and prints what each gave.
# The local engine is disabled before the Spark fit, so a Spark path that quietly fell back to it fails.
COMPARE = """
import json
import sys
from datetime import date
from pathlib import Path

import pandas as pd

from demand_forecast import scenario_engines, spark_engine
from demand_forecast.data import generate_sales, newest_complete_week
from demand_forecast.fitting import TrainConfig, fit_per_scenario
from demand_forecast.scenario_models import scenario_names


def outcome(result):
    table = result.scenarios.astype(object).where(result.scenarios.notna(), None)
    return {
        "records": table.to_dict(orient="records"),
        "metrics": result.metrics,
        "predictions": [float(value) for value in result.predictions],
        "model_forecasts": [float(value) for value in result.pipeline.predict(result.test)],
        "test_rows": len(result.test),
    }


def refuse_local(*args, **kwargs):
    raise AssertionError("ENGINE=spark ran the local engine")


def main():
    frame = generate_sales(newest_complete_week(date.today()), scenarios=12)
    early = frame["week_start"] <= frame["week_start"].max() - pd.Timedelta(weeks=20)
    frame = frame[~((scenario_names(frame) == sys.argv[1]) & early)].reset_index(drop=True)
    config = TrainConfig.from_toml(Path("config/train.toml")).with_granularity("per_scenario")
    report = {"local": outcome(fit_per_scenario(frame, config, "local"))}
    scenario_engines.run_local = refuse_local
    with spark_engine.spark_session() as spark:  # the caller's session: the engine must leave it running
        report["spark"] = outcome(fit_per_scenario(frame, config, "spark"))
        report["spark_jobs"] = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
        report["session_left_running"] = spark.range(3).count() == 3
    from pyspark import SparkContext

    report["session_stopped_by_its_creator"] = SparkContext._active_spark_context is None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def spark_project(installed_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default project of its own, run with the installed one's `[spark]` extra added to the shared venv."""
    install_into_shared_venv(installed_project, "dev,monitor,spark")
    return render(tmp_path_factory.mktemp("spark-project"))


@pytest.fixture(scope="module")
def compared(spark_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    script = tmp_path_factory.mktemp("engines") / "compare_engines.py"
    script.write_text(COMPARE)
    # an odd time zone: dates must reach the fits unshifted wherever the driver and executors run
    result = run([str(VENV / "bin" / "python"), str(script), SHORT], spark_project, TZ="Pacific/Chatham")
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_both_engines_give_identical_per_scenario_records_metrics_and_forecasts(compared):
    local, spark = compared["local"], compared["spark"]
    assert len(local["records"]) == 12
    assert spark["records"] == local["records"]  # status, reason, rows, weeks, fingerprint, metrics: exactly
    assert spark["metrics"] == local["metrics"]
    assert spark["predictions"] == local["predictions"]
    assert spark["test_rows"] == local["test_rows"] == len(local["predictions"]) > 0
    # the models each engine sent back forecast exactly what their records say, and alike
    assert spark["model_forecasts"] == local["model_forecasts"] == local["predictions"]


def test_a_scenario_too_short_is_skipped_with_its_reason_on_both_engines(compared):
    for engine in ("local", "spark"):
        by_name = {record["scenario"]: record for record in compared[engine]["records"]}
        assert by_name[SHORT]["status"] == "skipped", engine
        assert by_name[SHORT]["reason"].startswith("20 weeks of history, needs "), engine
        assert sorted({record["status"] for record in by_name.values()}) == ["skipped", "trained"], engine


def test_spark_ran_the_fits_and_stopped_only_the_session_it_started(compared):
    assert compared["spark_jobs"] >= 1
    assert compared["session_left_running"]  # the caller's session survives run_spark
    assert compared["session_stopped_by_its_creator"]


def test_train_with_engine_spark_and_no_pyspark_refuses_in_one_line(spark_project: Path):
    # given data, and a Python that cannot import PySpark
    make(spark_project, "data", SCENARIOS="12")
    hide_pyspark = (
        "import sys; sys.modules['pyspark'] = None; from demand_forecast.cli import main;"
        " raise SystemExit(main(['train', '--granularity', 'per_scenario']))"
    )
    # when per-scenario training is asked to run on Spark
    result = run([str(VENV / "bin" / "python"), "-c", hide_pyspark], spark_project, check=False, ENGINE="spark")
    # then one line says what to install, and nothing was logged
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "train: ENGINE=spark needs PySpark and Java 17: pip install '.[spark]'"
        ' (see docs/platform-team.md, "Per-scenario training on Spark")'
    )
    assert "Registered" not in result.stdout


def test_engine_spark_without_java_refuses_in_one_line_before_starting_anything(spark_project: Path):
    fit_on_spark = (
        "import pandas as pd; from demand_forecast.scenario_engines import run_fits\n"
        "from demand_forecast.inputs import InputError\n"
        "try:\n"
        "    run_fits('spark', pd.DataFrame({'store_id': ['S01'], 'category': ['dairy']}), len)\n"
        "except InputError as error:\n"
        "    print(error)\n"
    )
    result = run(
        [str(VENV / "bin" / "python"), "-c", fit_on_spark],
        spark_project,
        PATH=str(VENV / "bin"),  # no java on PATH
        JAVA_HOME="",
    )
    assert result.stdout.strip() == (
        "ENGINE=spark needs Java 17 and found none (no `java` on PATH, JAVA_HOME unset): install a JRE"
        " (Debian: apt-get install openjdk-17-jre-headless) or set SPARK_REMOTE to a Spark Connect server"
        ' (see docs/platform-team.md, "Per-scenario training on Spark")'
    )
