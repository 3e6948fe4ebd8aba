"""The producer half on a rendered project: data gate, training, registration, lineage, reproduce, serving.

Runs the rendered project's own `make` targets and CLI, on the embedded SQLite store and against a real
`mlflow server` backed by PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import DEFAULT_PACKAGE, make, render, run, use_rendered_package
from scoring import make_serve, post_rows, predict_in_process, read_rows
from servers import mlflow_server, postgres, postgres_bin

pytestmark = pytest.mark.e2e


def commit_all(project: Path) -> None:
    """Make the render a clean git checkout, as a product repo is."""
    git = ["git", "-c", "user.name=Template Test", "-c", "user.email=test@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "Initial commit"]):
        subprocess.run([*git, *args], cwd=project, check=True)


def cli(project: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["python", "-m", DEFAULT_PACKAGE, *args], project, check=check, **env)


def lineage(project: Path, version: str, **env: str) -> dict:
    return json.loads(cli(project, "lineage", "--version", version, "--json", **env).stdout)


def train_twice(project: Path, **env: str) -> list[dict]:
    """`make data data-test train`, twice, as the acceptance asks; returns both versions' lineage."""
    for _ in range(2):
        make(project, "data", "data-test", "train", **env)
    return [lineage(project, version, **env) for version in ("1", "2")]


def assert_fully_evidenced(record: dict, project: Path) -> None:
    use_rendered_package(project)
    from demand_forecast.registry import STAGE, TRAINING_EVIDENCE

    required = {STAGE, *TRAINING_EVIDENCE}
    assert set(record["evidence"]) >= required, required - set(record["evidence"])
    assert record["stage"] == "dev"
    assert record["evidence"]["data_validation"] == "passed"
    assert record["code"]["git_dirty"] == "false"
    assert len(record["code"]["git_sha"]) == 40
    assert len(record["data"]["fingerprint"]) == 64
    assert {"mae", "rmse", "wape", "bias"} <= set(record["metrics"])
    assert {"seed", "test_weeks", "model.learning_rate"} <= set(record["params"])
    assert record["environment_lock_hash"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, installed_project) -> tuple[Path, list[dict]]:
    project = render(tmp_path_factory.mktemp("ml-flow"))
    commit_all(project)
    return project, train_twice(project)


def test_two_trainings_register_two_versions_with_every_evidence_tag(trained):
    project, records = trained
    assert [r["version"] for r in records] == ["1", "2"]
    for record in records:
        assert_fully_evidenced(record, project)
    assert records[0]["data"]["fingerprint"] == records[1]["data"]["fingerprint"]
    assert records[0]["metrics"] == records[1]["metrics"]  # deterministic: same data, same seed


def test_data_gate_writes_data_docs(trained):
    project, _ = trained
    assert "raw_sales" in (project / "reports" / "data-docs" / "index.html").read_text()


def test_lineage_names_code_data_params_metrics_environment_and_evidence(trained):
    project, records = trained
    text = cli(project, "lineage", "--version", "2").stdout
    for expected in (
        records[1]["code"]["git_sha"],
        records[1]["data"]["fingerprint"],
        records[1]["data"]["snapshot"],
        f"sha256:{records[1]['environment_lock_hash']}",
        "model.learning_rate",
        "wape",
        "stage=dev",
        "data_validation",
        "trained_by",
    ):
        assert expected in text


def test_reproduce_matches_a_version_trained_from_a_clean_tree(trained):
    project, _ = trained
    result = make(project, "reproduce", "VERSION=1")
    assert "predictions on" in result.stdout and "Reproduced." in result.stdout


def test_corrupted_data_fails_training_and_registers_nothing(trained, tmp_path):
    # given corrupted data where training reads it (every kind is covered by the rendered unit tests)
    project, _ = trained
    bad = tmp_path / "sales.parquet"
    read_rows(project).assign(category="toys").to_parquet(bad, index=False)
    # when
    result = make(project, "train", check=False, DATA_URI=str(bad))
    # then
    assert result.returncode != 0
    assert "expect_column_values_to_be_in_set(category)" in result.stdout
    assert cli(project, "candidate").stdout.strip() == "2"


def test_make_serve_answers_single_rows_and_batches_like_the_model_in_process(trained):
    # given a registry version served by `make serve` on a free loopback port
    project, _ = trained
    with make_serve(project, "1") as url:
        rows = read_rows(project).tail(50).drop(columns="units_sold").reset_index(drop=True)
        # when it gets single rows, then all of them in one request
        singles = [post_rows(f"{url}/invocations", rows.iloc[[index]])[0] for index in range(5)]
        batch = post_rows(f"{url}/invocations", rows)
        probes = [urllib.request.urlopen(f"{url}{path}", timeout=10).status for path in ("/livez", "/readyz")]
    # then both equal the model's own predictions, and the probes answer
    expected = predict_in_process(project, rows)
    assert singles == pytest.approx(expected[:5], rel=1e-9)
    assert batch == pytest.approx(expected, rel=1e-9)
    assert probes == [200, 200]


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (Debian package postgresql)")
def test_the_same_flow_runs_against_an_mlflow_server_on_postgresql(tmp_path, installed_project):
    # given a real tracking server with a PostgreSQL backend store, on loopback
    project = render(tmp_path / "render")
    commit_all(project)
    with postgres() as database, mlflow_server(database, tmp_path) as url:
        # when
        records = train_twice(project, MLFLOW_TRACKING_URI=url)
        reproduced = make(project, "reproduce", "VERSION=2", MLFLOW_TRACKING_URI=url)
    # then
    assert [r["version"] for r in records] == ["1", "2"]
    for record in records:
        assert_fully_evidenced(record, project)
    assert "Reproduced." in reproduced.stdout
    assert not (project / "mlflow.db").exists()
