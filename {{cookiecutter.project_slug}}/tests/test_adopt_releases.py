"""Releases recorded before the environment models (aliases and history on `<model>`) are adopted once, so
rollback, back-tests and the cluster's gate keep working after the upgrade."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest

from conftest import new_version, open_registry
from {{ cookiecutter.package_name }} import gitops, registry
from {{ cookiecutter.package_name }}.adopt_releases import adopt_releases
from {{ cookiecutter.package_name }}.promote import rollback


@pytest.fixture
def client(settings, tmp_path, blank_store):
    return open_registry(settings, tmp_path, blank_store)


def released_the_old_way(
    client, settings, version: str, environment: str, at: datetime, previous: str
) -> None:
    """What promotion wrote before 1.2: the approval on the version, the alias and history on the model."""
    name = settings.model_name
    approval = {
        f"approved_by_{environment}": "erin",
        f"approved_at_{environment}": at.isoformat(),
        f"approval_ci_run_{environment}": "local",
        f"promotion_commit_{environment}": "abc123",
    }
    registry.set_evidence(client, name, version, {"stage": environment, **approval})
    client.set_registered_model_alias(name, environment, version)
    key = registry.history_key(environment, at)
    entry = {
        "action": "promotion", "environment": environment, "version": version, "from_version": previous,
        "approved_by": "erin", "approved_at": at.isoformat(), "ci_run": "local", "history_key": key,
        "commit": "abc123",
    }  # fmt: skip
    client.set_registered_model_tag(name, key, json.dumps(entry))


@pytest.fixture
def legacy(client, settings, monkeypatch):
    """v1 then v2 promoted to staging and production the old way and pinned in deploy/; grace adopts them."""
    first, second = new_version(client, settings), new_version(client, settings)
    for day, (version, previous) in enumerate([(first, "none"), (second, first)], start=1):
        for hour, environment in enumerate(registry.ENVIRONMENTS):
            at = datetime(2026, 11, day, 9 + hour, tzinfo=UTC)
            released_the_old_way(client, settings, version, environment, at, previous)
    for environment in registry.ENVIRONMENTS:
        gitops.write_atomically(gitops.pinned_contents(settings.deploy_dir / environment, second, None))
    monkeypatch.setenv("APPROVER", "grace")
    return first, second


def test_old_releases_are_adopted_and_rollback_restores_an_adopted_version(client, settings, legacy, capsys):
    first, second = legacy
    # when
    assert adopt_releases(settings) == 0
    # then each environment runs what its old alias held, with the approval that was recorded
    held = registry.environment_aliases(client, settings.model_name)
    assert held == {"staging": second, "production": second}
    copy = registry.environment_copy(client, settings.model_name, "production")
    assert (copy.tags["approved_by_production"], copy.tags["released_by"]) == ("erin", "grace")
    history = registry.release_history(registry.release_tags(client, settings.model_name), "production")
    assert [entry["version"] for entry in history] == [first, second]
    assert f"production: adopted v{second} into {settings.model_name}-production" in capsys.readouterr().out
    # and rollback, through the same gate, restores the adopted earlier release
    assert rollback(settings, "production", "grace") == 0
    assert registry.running_in(client, settings.model_name, "production") == first


def test_adopting_again_changes_nothing(client, settings, legacy, capsys):
    assert adopt_releases(settings) == 0
    names = [registry.environment_model(settings.model_name, env) for env in registry.ENVIRONMENTS]

    def copies() -> list:
        versions = [client.search_model_versions(f"name = '{name}'") for name in names]
        return [sorted((v.version, sorted(v.tags.items())) for v in each) for each in versions]

    before = copies()
    capsys.readouterr()
    assert adopt_releases(settings) == 0
    assert copies() == before
    assert capsys.readouterr().out.splitlines() == [
        f"staging: already runs v{legacy[1]} from {names[0]}",
        f"production: already runs v{legacy[1]} from {names[1]}",
    ]


def test_an_old_release_still_in_flight_is_refused_and_nothing_is_moved(client, settings, legacy, capsys):
    client.set_registered_model_tag(settings.model_name, registry.pending_key("staging"), "{}")
    assert adopt_releases(settings) == 1
    assert "staging: a release started the old way has not finished" in capsys.readouterr().err
    assert registry.environment_aliases(client, settings.model_name) == {}
    assert str(client.get_registered_model(settings.model_name).aliases["staging"]) == legacy[1]


def self_approved(client, settings, first, second):
    client.set_model_version_tag(settings.model_name, second, "approved_by_production", "carol")


def back_test_failed(client, settings, first, second):
    client.set_model_version_tag(settings.model_name, second, "backtest_verdict", "failed")


def pinned_elsewhere(client, settings, first, second):
    gitops.write_atomically(gitops.pinned_contents(settings.deploy_dir / "production", first, None))


def adopted_by_its_trainer(client, settings, first, second):
    os.environ["APPROVER"] = "Carol"


FORGED = {
    self_approved: "production: v2 cannot be adopted: carol trained version 2 and cannot also approve it",
    back_test_failed: "staging: v2 cannot be adopted: v2 has no passed back-test (backtest_verdict=failed)",
    pinned_elsewhere: "production: the old alias holds v2 but deploy/production/ pins v1",
    adopted_by_its_trainer: "staging: v2 cannot be adopted: Carol trained version 2 and cannot also approve",
}


@pytest.mark.parametrize("arrange", list(FORGED), ids=lambda f: f.__name__)
def test_old_records_the_trainer_could_have_written_are_checked_like_a_promotion(
    client, settings, legacy, capsys, arrange
):
    # given old records that a promotion's checks would refuse (the training identity may write them)
    arrange(client, settings, *legacy)
    # when
    code = adopt_releases(settings)
    # then that environment is refused in one line and holds nothing
    assert code == 1
    assert FORGED[arrange] in capsys.readouterr().err
    assert registry.running_in(client, settings.model_name, "production") is None


def test_a_fresh_registry_has_nothing_to_adopt(client, settings, capsys, monkeypatch):
    monkeypatch.setenv("APPROVER", "grace")
    assert adopt_releases(settings) == 0
    assert capsys.readouterr().out.splitlines() == [
        "staging: nothing was released the old way",
        "production: nothing was released the old way",
    ]
