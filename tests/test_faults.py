"""Gates fail closed under faults: a tracking server killed by its PID at each write of a training or a
promotion, and an unreachable store.

The rendered project's own `train` and `promote` run in this process against a real MLflow server (the app
`mlflow server` runs, on a store copied from a pre-migrated one) behind `KillSwitch`, which kills the serving
process just before the chosen write reaches it. A fresh server on the same store then shows what was left.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import make, render, use_rendered_package
from servers import ForkedServer, KillSwitch, ServerForks, kind_of

pytestmark = pytest.mark.e2e

MODEL = "fault-model"
TRAINER, APPROVER = "carol", "dave"
# A small model: every kill point repeats a whole training, and what is written does not depend on its size.
FAST_CONFIG = "seed = 1\ntest_weeks = 26\n[model]\nmax_iter = 10\nmax_leaf_nodes = 8\n"
GRANULARITIES = ("global", "per_scenario")  # one model, or one per store x category registered as one version


@pytest.fixture(scope="module")
def forks() -> Iterator[ServerForks]:
    forks = ServerForks()
    yield forks
    forks.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory, installed_project) -> Path:
    """A committed render with synthetic data; this process imports the same package from the install."""
    project = render(tmp_path_factory.mktemp("faults"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "Initial commit"]):
        subprocess.run([*git, *args], cwd=project, check=True)
    make(project, "data")
    use_rendered_package(project)
    return project


@pytest.fixture(scope="module")
def migrated_store(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def quick_failures(monkeypatch, project):
    """No client retries (a dead server stays dead), and the project's folder as the working directory."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("TRAINED_BY", TRAINER)
    monkeypatch.chdir(project)


def store_copy(migrated_store: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def client_of(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def settings_for(project: Path, folder: Path, url: str):
    from demand_forecast.settings import Settings

    base = Settings.in_folder(folder, MODEL)
    return replace(base, tracking_uri=url, data_uri=str(project / "data" / "raw" / "sales.parquet"))


def train_through(
    switch_url: str, project: Path, folder: Path, granularity: str = "global", config_text: str = FAST_CONFIG
) -> None:
    from demand_forecast.train import train

    config = folder / "train-fast.toml"
    config.write_text(config_text)
    assert train(settings_for(project, folder, switch_url), config, granularity) == 0


@pytest.fixture(scope="module")
def training_writes(forks, project, migrated_store, tmp_path_factory) -> dict[str, list[str]]:
    """Every write a whole training makes at each granularity, in order, seen by a switch that kills nothing."""
    writes = {}
    for granularity in GRANULARITIES:
        folder = tmp_path_factory.mktemp(f"baseline-{granularity}")
        server = forks.start(store_copy(migrated_store, folder), folder)
        switch = KillSwitch(server)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRAINED_BY", TRAINER)
            patch.chdir(project)
            train_through(switch.url, project, folder, granularity)
        switch.close()
        server.kill()
        writes[granularity] = list(switch.writes)
    return writes


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_training_killed_at_any_write_leaves_no_version_that_could_pass_a_gate(
    forks, project, migrated_store, tmp_path, quick_failures, training_writes, granularity
):
    from demand_forecast import registry

    # given every kind of write a training makes (each endpoint, and an artefact upload)
    kinds = list(dict.fromkeys(kind_of(write) for write in training_writes[granularity]))
    assert "POST /api/2.0/mlflow/model-versions/create" in kinds
    outcomes = []
    for number, kind in enumerate(kinds):
        folder = tmp_path / f"kill-{number}"
        server = forks.start(store_copy(migrated_store, folder), folder)
        switch = KillSwitch(server, kill_on=kind)
        # when the server dies just before this write
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises, training must not succeed
            train_through(switch.url, project, folder, granularity)
        switch.close()
        # then a fresh server on the same store shows no incomplete version, and no candidate but a complete one
        revived = forks.start(f"sqlite:///{folder / 'mlflow.db'}", folder)
        client = client_of(revived.url)
        versions = client.search_model_versions(f"name = '{MODEL}'") if client.search_registered_models() else []
        assert switch.killed.is_set(), kind
        assert all(registry.is_complete(version) for version in versions), kind
        candidate = registry.latest_version(client, MODEL) if versions else None
        assert candidate is None or registry.is_complete(candidate)
        outcomes.append((kind, len(versions)))
        revived.kill()
    # the version exists exactly when the kill came after its creation, and then it is complete
    assert outcomes[-1] == ("POST /api/2.0/mlflow/runs/update", 1)
    assert all(count == 0 for _, count in outcomes[:-1]), outcomes


def test_the_next_training_ends_the_run_a_killed_training_left_running(
    forks, project, migrated_store, tmp_path, quick_failures
):
    # given a training killed before it could register its version (its run stays RUNNING)
    folder = tmp_path / "killed"
    server = forks.start(store_copy(migrated_store, folder), folder)
    switch = KillSwitch(server, kill_on="POST /api/2.0/mlflow/model-versions/create")
    with pytest.raises(Exception):  # noqa: B017
        train_through(switch.url, project, folder)
    switch.close()
    revived = forks.start(f"sqlite:///{folder / 'mlflow.db'}", folder)
    client = client_of(revived.url)
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    assert [run.info.status for run in client.search_runs([experiment])] == ["RUNNING"]
    # when the next training runs
    train_through(revived.url, project, folder)
    # then no run is left RUNNING, the dead one is KILLED, and the new version is complete
    statuses = sorted(run.info.status for run in client.search_runs([experiment]))
    assert statuses == ["FINISHED", "KILLED"]
    revived.kill()


def good_evidence(project: Path) -> dict[str, str]:
    """The evidence of a version ready for release, as the rendered promotion tests define it."""
    spec = importlib.util.spec_from_file_location("rendered_conftest", project / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {**module.GOOD_EVIDENCE, "trained_by": TRAINER}


def release_ready_store(migrated_store: Path, folder: Path, forks: ServerForks, project: Path) -> str:
    """A store holding one complete, back-tested version, and deploy/ as its own git repository."""
    url = store_copy(migrated_store, folder)
    server = forks.start(url, folder)
    client = client_of(server.url)
    client.create_registered_model(MODEL)
    experiment = client.create_experiment("promotions")
    run_id = client.create_run(experiment).info.run_id
    client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id, tags=good_evidence(project))
    server.kill()
    shutil.copytree(project / "deploy", folder / "deploy")
    git = ["git", "-C", str(folder / "deploy"), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "initial"]):
        subprocess.run([*git, *args], check=True)
    return url


def git_log(folder: Path) -> list[str]:
    return subprocess.run(
        ["git", "-C", str(folder / "deploy"), "log", "--format=%s"], capture_output=True, text=True, check=True
    ).stdout.splitlines()


def test_a_promotion_killed_at_any_write_is_completed_by_rerunning_it(
    forks, project, migrated_store, tmp_path, quick_failures
):
    from demand_forecast import registry
    from demand_forecast.promote import promote

    # given the writes a whole promotion makes
    folder = tmp_path / "baseline"
    server = forks.start(release_ready_store(migrated_store, folder, forks, project), folder)
    switch = KillSwitch(server)
    assert promote(settings_for(project, folder, switch.url), "1", "staging", APPROVER) == 0
    switch.close()
    server.kill()
    writes = list(switch.writes)
    assert len(writes) >= 5
    for kill_at in range(1, len(writes) + 1):
        folder = tmp_path / f"kill-{kill_at}"
        server = forks.start(release_ready_store(migrated_store, folder, forks, project), folder)
        switch = KillSwitch(server, kill_at=kill_at)
        # when the server dies just before this write
        with pytest.raises(Exception):  # noqa: B017 - the store failing underneath is not a refusal
            promote(settings_for(project, folder, switch.url), "1", "staging", APPROVER)
        switch.close()
        revived = forks.start(f"sqlite:///{folder / 'mlflow.db'}", folder)
        client = client_of(revived.url)
        # then a moved alias never stands without the approval: its copy was made with the approval in one call
        holder = registry.environment_copy(client, MODEL, "staging")
        if holder is not None:
            assert holder.tags.get("approved_by_staging") == APPROVER
        # and re-running the same promotion completes it, exactly once
        settings = settings_for(project, folder, revived.url)
        assert promote(settings, "1", "staging", APPROVER) == 0, writes[kill_at - 1]
        assert registry.get_version(client, MODEL, "1").tags["stage"] == "staging"
        copies = client.search_model_versions(f"name = '{registry.environment_model(MODEL, 'staging')}'")
        assert [(registry.source_of(copy, MODEL), copy.tags["approved_by_staging"]) for copy in copies] == [
            ("1", APPROVER)
        ]  # exactly one copy, however often the release was interrupted
        assert registry.running_in(client, MODEL, "staging") == "1"
        history = registry.release_history(registry.release_tags(client, MODEL))
        assert [(entry["version"], entry["approved_by"]) for entry in history] == [("1", APPROVER)]
        assert registry.pending_key("staging") not in registry.release_tags(client, MODEL)
        assert git_log(folder) == [f"Promote {MODEL} v1 to staging (approved by {APPROVER})", "initial"]
        revived.kill()


@pytest.fixture(scope="module")
def backtested(forks, project, migrated_store, tmp_path_factory) -> Path:
    """A folder whose store holds v1, trained and back-tested (passed): back-testing it again overwrites a
    passed verdict, the most a crash could leave standing."""
    from demand_forecast.backtest import run_backtest

    folder = tmp_path_factory.mktemp("backtested")
    server = forks.start(store_copy(migrated_store, folder), folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINED_BY", TRAINER)
        patch.chdir(project)
        # the project's own model: the fast one misses the back-test's floor, and only a passed verdict matters
        default_config = (project / "config" / "train.toml").read_text()
        train_through(server.url, project, folder, config_text=default_config)
        assert run_backtest(settings_for(project, folder, server.url), "1") == 0
    server.kill()
    return folder


def test_a_backtest_killed_at_any_write_never_leaves_a_verdict_its_record_does_not_back(
    forks, project, backtested, tmp_path, quick_failures
):
    from demand_forecast.backtest import run_backtest
    from demand_forecast.evidence import gather

    def store_like_backtested(folder: Path) -> ForkedServer:
        shutil.copytree(backtested, folder, ignore=shutil.ignore_patterns("mlflow-server-*.log"))
        return forks.start(f"sqlite:///{folder / 'mlflow.db'}", folder)

    def on_this_server(settings):
        """MLflow caches a run's artefact store by run id alone, and every copy here holds the same run on
        another server: forget the dead ones before each back-test."""
        from mlflow.tracking._tracking_service import utils

        utils._artifact_repos_cache.clear()
        return settings

    # given the writes a whole second back-test of v1 makes
    folder = tmp_path / "baseline"
    server = store_like_backtested(folder)
    switch = KillSwitch(server)
    assert run_backtest(on_this_server(settings_for(project, folder, switch.url)), "1") == 0
    switch.close()
    server.kill()
    writes = list(switch.writes)
    assert any(kind_of(write) == "PUT artifact upload" for write in writes), writes
    for kill_at in range(1, len(writes) + 1):
        folder = tmp_path / f"kill-{kill_at}"
        server = store_like_backtested(folder)
        switch = KillSwitch(server, kill_at=kill_at)
        # when the server dies just before this write
        with pytest.raises(Exception):  # noqa: B017 - the store failing underneath is not a verdict
            run_backtest(on_this_server(settings_for(project, folder, switch.url)), "1")
        switch.close()
        revived = forks.start(f"sqlite:///{folder / 'mlflow.db'}", folder)
        settings = on_this_server(settings_for(project, folder, revived.url))
        evidence = gather(client_of(revived.url), settings, "1")
        # then the verdict promotion reads is the old one with the very record it was written with (killed at
        # the first write), or pending: never a passed verdict beside a report of another run
        left = evidence.tags["backtest_verdict"], evidence.backtest is not None
        assert left == (("passed", True) if kill_at == 1 else ("pending", False)), (
            writes[kill_at - 1],
            evidence.backtest_missing,
        )
        if kill_at == len(writes):  # and back-testing again completes it (once: every pending state is alike)
            assert run_backtest(settings, "1") == 0
            completed = gather(client_of(revived.url), settings, "1")
            assert completed.verdict == "PASSED"
            assert completed.backtest is not None
        revived.kill()


def test_the_cli_reports_a_store_dying_mid_training_in_one_line(forks, project, migrated_store, tmp_path):
    # given `make train` whose tracking server dies just before the version is created
    server = forks.start(store_copy(migrated_store, tmp_path), tmp_path)
    switch = KillSwitch(server, kill_on="POST /api/2.0/mlflow/model-versions/create")
    (project / "build").mkdir(exist_ok=True)
    (project / "build" / "train-fast.toml").write_text(FAST_CONFIG)  # build/ is git-ignored
    # when
    result = make(
        project,
        "train",
        check=False,
        MLFLOW_TRACKING_URI=switch.url,
        MODEL_NAME=MODEL,
        SNAPSHOT_DIR=str(tmp_path / "snapshots"),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        CONFIG="build/train-fast.toml",
    )
    switch.close()
    assert switch.killed.is_set()
    # then it fails with one line naming the store, no traceback
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("train:")]
    assert len(lines) == 1 and switch.url in lines[0], result.stderr[-2000:]


@pytest.mark.parametrize(
    "command",
    [
        ["promote", "VERSION=1", "ENV=staging", "APPROVER=dave"],
        ["rollback", "ENV=production", "APPROVER=dave"],
        ["candidate"],
        ["lineage"],
        ["backtest", "VERSION=1"],
    ],
    ids=lambda command: command[0],
)
def test_an_unreachable_store_fails_within_30_seconds_in_one_line(project, command):
    # given a tracking URI nobody answers on
    started = time.monotonic()
    # when
    result = make(project, *command, check=False, MLFLOW_TRACKING_URI="http://127.0.0.1:1")
    # then
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "the tracking store http://127.0.0.1:1 is unreachable" in result.stderr
