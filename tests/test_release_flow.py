"""The consumer half on a rendered project: `make release-demo` walks every gate on the embedded SQLite store."""

from __future__ import annotations

import subprocess

import pytest

from conftest import make, render

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory, installed_project):
    project = render(tmp_path_factory.mktemp("release"))
    return project, make(project, "release-demo")


def test_every_gate_behaves_as_expected(demo):
    _, result = demo
    table = result.stdout[result.stdout.index("step ") :]
    rows = [line for line in table.splitlines() if line.endswith(("  yes", "  NO"))]
    assert len(rows) == 14
    assert all(row.endswith("  yes") for row in rows), table
    assert "back-test v2 vs champion v1                  refuse    refused" in table
    assert "promote v2 to staging                        refuse    refused" in table
    assert "production now runs version 1" in table


def test_the_worse_model_is_refused_for_its_failed_back_test(demo):
    project, result = demo
    assert "Promotion refused: version 2 failed its back-test" in result.stdout
    report = (project / "reports" / "backtest-v2.md").read_text()
    assert "FAILED" in report and "| window |" in report
    assert (project / "reports" / "backtest-v2.png").stat().st_size > 0


def test_git_records_every_promotion_and_the_rollback(demo):
    project, _ = demo
    log = subprocess.run(
        ["git", "log", "--format=%s", "--", "deploy"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert log == [
        "Roll back demand-forecast-model v1 to production (approved by bob.release-manager)",
        "Promote demand-forecast-model v3 to production (approved by bob.release-manager)",
        "Promote demand-forecast-model v3 to staging (approved by alice.reviewer)",
        "Promote demand-forecast-model v1 to production (approved by bob.release-manager)",
        "Promote demand-forecast-model v1 to staging (approved by alice.reviewer)",
        "Initial commit",
    ]
    assert 'newTag: "v1"' in (project / "deploy" / "production" / "kustomization.yaml").read_text()
    assert "MODEL_VERSION=3" in (project / "deploy" / "staging" / "model.env").read_text()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_each_version_names_one_commit_the_run_recorded_as_its_source(demo):
    # given the demo's three trainings, run in one process with promotion commits in between
    from mlflow.tracking import MlflowClient

    project, _ = demo
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    versions = client.search_model_versions("name = 'demand-forecast-model'")
    assert len(versions) == 3
    for version in versions:
        # then the version's git_sha is the commit MLflow recorded as the run's source
        run_tags = client.get_run(version.run_id).data.tags
        assert version.tags["git_sha"] == run_tags["mlflow.source.git.commit"], version.version


def test_lineage_shows_the_append_only_release_history(demo):
    project, _ = demo
    text = make(project, "lineage", "VERSION=1").stdout
    assert "releases (append-only history):" in text
    assert "rollback  production v3 -> v1  approved by bob.release-manager" in text
    assert "promotion staging    none -> v1  approved by alice.reviewer" in text
