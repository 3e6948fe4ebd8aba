"""Promotion and rollback move a version only on evidence and a second person's approval.

Every refusal leaves the registry and deploy/ exactly as they were; an interrupted release is completed by
re-running it; the release history only grows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from conftest import new_version, open_registry
from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.promote import promote, rollback


@pytest.fixture
def client(settings, tmp_path, blank_store):
    return open_registry(settings, tmp_path, blank_store)


def history(client, settings) -> list[dict]:
    return registry.release_history(registry.release_tags(client, settings.model_name))


def registry_state(client, settings) -> list[tuple]:
    """Versions, tags and aliases of the training model and of both environment models."""
    names = [settings.model_name]
    names += [registry.environment_model(settings.model_name, env) for env in registry.ENVIRONMENTS]
    state = []
    for name in names:
        versions = client.search_model_versions(f"name = '{name}'")
        try:
            model = client.get_registered_model(name)
            held = dict(model.aliases), dict(model.tags)
        except MlflowException:
            held = None
        state.append((name, sorted((str(v.version), sorted(v.tags.items())) for v in versions), held))
    return state


def released(client, settings, environment: str):
    """The copy an environment runs, checked to be a copy of a training version; (its source, its tags)."""
    copy = registry.environment_copy(client, settings.model_name, environment)
    source = registry.source_of(copy, settings.model_name)
    original = client.get_model_version(settings.model_name, source)
    assert (copy.source, copy.run_id) == (f"models:/{settings.model_name}/{source}", original.run_id)
    return source, copy.tags


def deploy_state(settings) -> dict[str, bytes]:
    return {
        str(p.relative_to(settings.deploy_dir)): p.read_bytes()
        for p in settings.deploy_dir.rglob("*")
        if p.is_file()
    }


def in_production(client, settings) -> str:
    """A version already promoted to staging and production: the champion."""
    version = new_version(client, settings)
    assert promote(settings, version, "staging", "dave") == 0
    assert promote(settings, version, "production", "erin") == 0
    return version


def refuse_nonexistent(client, settings):
    return "99", "staging", "dave"


def refuse_archived(client, settings):
    return new_version(client, settings, stage="archived"), "staging", "dave"


def refuse_skipping_staging(client, settings):
    return new_version(client, settings), "production", "dave"


def refuse_already_there(client, settings):
    version = new_version(client, settings)
    assert promote(settings, version, "staging", "dave") == 0
    return version, "staging", "dave"


def refuse_missing_data_gate(client, settings):
    return new_version(client, settings, data_validation=None), "staging", "dave"


def refuse_unknown_trainer(client, settings):
    return new_version(client, settings, trained_by=None), "staging", "dave"


def refuse_half_written_backtest(client, settings):
    return new_version(client, settings, backtest_champion=None), "staging", "dave"


def refuse_failed_data_gate(client, settings):
    return new_version(client, settings, data_validation="failed"), "staging", "dave"


def refuse_missing_backtest(client, settings):
    return new_version(client, settings, backtest_verdict=None), "staging", "dave"


def refuse_pending_backtest(client, settings):
    return new_version(client, settings, backtest_verdict="pending"), "staging", "dave"


def refuse_failed_backtest(client, settings):
    return new_version(client, settings, backtest_verdict="failed"), "staging", "dave"


def refuse_stale_champion(client, settings):
    in_production(client, settings)
    return new_version(client, settings, backtest_champion="none"), "staging", "dave"


def refuse_empty_approver(client, settings):
    return new_version(client, settings), "staging", "  "


def refuse_bad_approver(client, settings):
    return new_version(client, settings), "staging", "dave\nrm -rf /"


def refuse_own_approval(client, settings):
    return new_version(client, settings), "staging", "Carol"


def refuse_own_approval_in_other_form(client, settings):
    return new_version(client, settings), "staging", "\uff23arol  "  # fullwidth C: NFKC makes it Carol


def refuse_own_approval_with_an_accent(client, settings):
    return new_version(client, settings), "staging", "car\u00f3l"  # "caról": the same person to a reviewer


def refuse_trainer_with_an_invisible_character(client, settings):
    return new_version(client, settings, trained_by="carol\u200b"), "staging", "carol"  # reads as "carol"


def refuse_look_alike_approver(client, settings):
    return new_version(client, settings), "staging", "c\u0430rol"  # a Cyrillic a inside a Latin name


def copied_outside_the_gate(client, settings, version: str, **tags: str) -> None:
    """What anyone with write access to the staging model could do by hand: copy a version, move its alias."""
    staging = registry.environment_model(settings.model_name, "staging")
    copy = client.copy_model_version(f"models:/{settings.model_name}/{version}", staging)
    for key, value in tags.items():
        client.set_model_version_tag(staging, copy.version, key, value)
    client.set_registered_model_alias(staging, "staging", copy.version)


def refuse_staging_alias_moved_outside_the_gate(client, settings):
    version = new_version(client, settings)
    copied_outside_the_gate(client, settings, version, source_version=version)
    return version, "production", "erin"


def refuse_staging_alias_on_a_version_no_release_copied(client, settings):
    version = new_version(client, settings)
    copied_outside_the_gate(client, settings, version)
    return version, "production", "erin"


def refuse_alias_moved_on_the_training_model(client, settings):
    version = new_version(client, settings)
    client.set_registered_model_alias(settings.model_name, "staging", version)
    return version, "production", "erin"


def refuse_image_swapped_after_staging(client, settings):
    version = new_version(client, settings, image_digest="sha256:" + "a" * 64)
    assert promote(settings, version, "staging", "dave") == 0
    client.set_model_version_tag(settings.model_name, version, "image_digest", "sha256:" + "b" * 64)
    return version, "production", "erin"


def refuse_uncommitted_edit_in_the_environment(client, settings):
    init_git(settings.deploy_dir)
    kustomization = settings.deploy_dir / "staging" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "# a local experiment\n")
    return new_version(client, settings), "staging", "dave"


def refuse_dirty_tree_in_production(client, settings):
    version = new_version(client, settings, git_dirty="true")
    assert promote(settings, version, "staging", "dave") == 0
    return version, "production", "erin"


def refuse_concurrent_release(client, settings):
    (settings.deploy_dir / ".staging.lock").write_text("4242\n")
    return new_version(client, settings), "staging", "dave"


def refuse_broken_pins(client, settings):
    (settings.deploy_dir / "staging" / "model.env").unlink()
    return new_version(client, settings), "staging", "dave"


ILLEGAL = {
    refuse_nonexistent: "has no version 99",
    refuse_archived: "is archived and cannot be promoted",
    refuse_skipping_staging: "is not in staging",
    refuse_already_there: "is already in staging",
    refuse_missing_data_gate: "missing evidence: data_validation",
    refuse_unknown_trainer: "has no trainer on record",
    refuse_half_written_backtest: "incomplete back-test record (missing: backtest_champion)",
    refuse_failed_data_gate: "data_validation=failed",
    refuse_missing_backtest: "has no finished back-test",
    refuse_pending_backtest: "has no finished back-test",
    refuse_failed_backtest: "failed its back-test",
    refuse_stale_champion: "but production now runs",
    refuse_empty_approver: "an approver is required",
    refuse_bad_approver: "is not a user name or email",
    refuse_own_approval: "four-eyes",
    refuse_own_approval_in_other_form: "four-eyes",
    refuse_look_alike_approver: "mixes CYRILLIC and LATIN letters",
    refuse_own_approval_with_an_accent: "four-eyes",
    refuse_trainer_with_an_invisible_character: "trainer on record cannot be compared with its approvers",
    refuse_staging_alias_moved_outside_the_gate: "without a staging approval on record",
    refuse_staging_alias_on_a_version_no_release_copied: "is not a copy made by a release",
    refuse_alias_moved_on_the_training_model: "is not in staging (staging holds nothing)",
    refuse_image_swapped_after_staging: "image_digest changed after its staging approval",
    refuse_uncommitted_edit_in_the_environment: "has uncommitted changes (staging/kustomization.yaml)",
    refuse_dirty_tree_in_production: "dirty working tree",
    refuse_concurrent_release: "another release to staging is in progress",
    refuse_broken_pins: "needs kustomization.yaml and model.env",
}


@pytest.mark.parametrize("arrange", list(ILLEGAL), ids=lambda f: f.__name__)
def test_illegal_promotion_is_refused_and_changes_nothing(client, settings, capsys, arrange):
    # given
    version, environment, approver = arrange(client, settings)
    registry_before, deploy_before = registry_state(client, settings), deploy_state(settings)
    capsys.readouterr()
    # when
    code = promote(settings, version, environment, approver)
    # then
    assert code == 1
    assert ILLEGAL[arrange] in capsys.readouterr().err
    assert registry_state(client, settings) == registry_before
    assert deploy_state(settings) == deploy_before


def test_promotion_pins_moves_alias_and_records_the_approver(client, settings):
    # given a version whose image was pushed with a digest
    version = new_version(client, settings, image_digest="sha256:" + "a" * 64)
    production_pins = (settings.deploy_dir / "production" / "model.env").read_text()
    # when
    assert promote(settings, version, "staging", "dave") == 0
    # then
    source, approval = released(client, settings, "staging")
    assert source == version
    assert (approval["approved_by_staging"], approval["release_action"]) == ("dave", "promotion")
    assert approval["approved_at_staging"]
    assert approval["trained_by"] == "carol"  # the evidence travels with the copy
    assert client.get_model_version(settings.model_name, version).tags["stage"] == "staging"
    manifest = (settings.deploy_dir / "staging" / "kustomization.yaml").read_text()
    assert f'newTag: "v{version}"' in manifest
    assert "digest: sha256:" + "a" * 64 in manifest
    assert f"MODEL_VERSION={version}\n" in (settings.deploy_dir / "staging" / "model.env").read_text()
    assert (settings.deploy_dir / "production" / "model.env").read_text() == production_pins


def test_production_takes_the_staging_version_and_archives_the_old_champion(client, settings):
    champion = in_production(client, settings)
    challenger = new_version(client, settings, backtest_champion=champion)
    assert promote(settings, challenger, "staging", "dave") == 0
    assert promote(settings, challenger, "production", "erin") == 0
    assert registry.running_in(client, settings.model_name, "production") == challenger
    assert client.get_model_version(settings.model_name, champion).tags["stage"] == "archived"


def git_in(folder: Path) -> list[str]:
    return ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]


def init_git(folder: Path) -> None:
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "initial"]):
        subprocess.run([*git_in(folder), *args], check=True)


def test_promotion_commits_the_pins_inside_a_git_repository(client, settings):
    # given deploy/ under git
    init_git(settings.deploy_dir)
    git = git_in(settings.deploy_dir)
    version = new_version(client, settings)
    # when
    assert promote(settings, version, "staging", "dave") == 0
    # then one commit names version, environment and approver, and the tree is clean
    log = subprocess.run(
        [*git, "log", "-1", "--format=%s"], capture_output=True, text=True, check=True
    ).stdout
    assert f"v{version} to staging (approved by dave)" in log
    status = subprocess.run(
        [*git, "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    assert status == ""


def test_several_approvers_from_one_gate_are_all_recorded(client, settings):
    version = new_version(client, settings)
    assert promote(settings, version, "staging", "carol,dave") == 0
    assert released(client, settings, "staging")[1]["approved_by_staging"] == "carol,dave"


def test_rollback_returns_production_to_the_previous_version(client, settings):
    first = in_production(client, settings)
    second = new_version(client, settings, backtest_champion=first)
    assert promote(settings, second, "staging", "dave") == 0
    assert promote(settings, second, "production", "erin") == 0
    # when the gate's reviewer (not the trainer) approves the rollback
    assert rollback(settings, "production", "grace") == 0
    # then
    source, restored = released(client, settings, "production")
    assert source == first
    assert f"MODEL_VERSION={first}\n" in (settings.deploy_dir / "production" / "model.env").read_text()
    assert client.get_model_version(settings.model_name, second).tags["stage"] == "staging"  # still there
    assert restored["approved_by_production"] == "erin"  # the original approval is never overwritten
    assert (restored["release_action"], restored["released_by"]) == ("rollback", "grace")
    entries = [
        (e["action"], e["environment"], e["from_version"], e["version"]) for e in history(client, settings)
    ]
    assert entries == [
        ("promotion", "staging", "none", first),
        ("promotion", "production", "none", first),
        ("promotion", "staging", first, second),
        ("promotion", "production", first, second),
        ("rollback", "production", second, first),
    ]
    assert history(client, settings)[-1]["approved_by"] == "grace"


def test_rollback_without_history_is_refused(client, settings, capsys):
    assert rollback(settings, "production", "erin") == 1
    assert "no earlier release to roll back to" in capsys.readouterr().err


def two_production_releases(client, settings, **first_evidence: str) -> tuple[str, str]:
    first = new_version(client, settings, **first_evidence)
    assert promote(settings, first, "staging", "dave") == 0
    assert promote(settings, first, "production", "erin") == 0
    second = new_version(client, settings, backtest_champion=first)
    assert promote(settings, second, "staging", "dave") == 0
    assert promote(settings, second, "production", "erin") == 0
    return first, second


def test_rollback_is_refused_to_the_trainer_of_the_restored_version(client, settings, capsys):
    two_production_releases(client, settings)
    before = registry_state(client, settings), deploy_state(settings)
    assert rollback(settings, "production", "CAROL") == 1
    assert "four-eyes" in capsys.readouterr().err
    assert (registry_state(client, settings), deploy_state(settings)) == before


def test_rollback_rechecks_the_evidence_of_the_restored_version(client, settings, capsys):
    first, _ = two_production_releases(client, settings)
    client.set_model_version_tag(settings.model_name, first, "data_validation", "failed")
    assert rollback(settings, "production", "grace") == 1
    assert "data_validation=failed" in capsys.readouterr().err
    assert registry.running_in(client, settings.model_name, "production") != first


def test_an_interrupted_promotion_is_completed_by_rerunning_it(client, settings, monkeypatch, capsys):
    # given a promotion whose process dies right after the alias moved (before the version's stage)
    version = new_version(client, settings)
    real_set_evidence = registry.set_evidence

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(registry, "set_evidence", die)
    with pytest.raises(KeyboardInterrupt):
        promote(settings, version, "staging", "dave")
    monkeypatch.setattr(registry, "set_evidence", real_set_evidence)
    assert registry.running_in(client, settings.model_name, "staging") == version
    # then another release to staging is refused with the exact repair step
    other = new_version(client, settings)
    assert promote(settings, other, "staging", "dave") == 1
    assert f"complete it first with `make promote VERSION={version} ENV=staging`" in capsys.readouterr().err
    # and re-running the same command completes it, with the approval record and one history entry
    assert promote(settings, version, "staging", "dave") == 0
    assert released(client, settings, "staging")[1]["approved_by_staging"] == "dave"
    assert client.get_model_version(settings.model_name, version).tags["stage"] == "staging"
    assert [entry["version"] for entry in history(client, settings)] == [version]
    assert not any(
        key.startswith("release_pending.") for key in registry.release_tags(client, settings.model_name)
    )
    staging = registry.environment_model(settings.model_name, "staging")
    assert len(client.search_model_versions(f"name = '{staging}'")) == 1  # the re-run made no second copy


def test_release_commit_holds_only_the_pins_and_leaves_other_edits_alone(client, settings):
    # given deploy/ under git with an unrelated local edit in another environment's folder
    init_git(settings.deploy_dir)
    neighbour = settings.deploy_dir / "production" / "model.env"
    neighbour.write_text(neighbour.read_text() + "# not mine\n")
    version = new_version(client, settings)
    # when
    assert promote(settings, version, "staging", "dave") == 0
    # then the commit changed exactly the staging pins, and the edit is still uncommitted
    changed = subprocess.run(
        [*git_in(settings.deploy_dir), "show", "--name-only", "--format=", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(changed) == ["staging/kustomization.yaml", "staging/model.env"]
    assert neighbour.read_text().endswith("# not mine\n")


def test_a_lock_left_by_a_dead_process_is_taken_over(client, settings):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (settings.deploy_dir / ".staging.lock").write_text(f"{socket.gethostname()} {dead.stdout.strip()}\n")
    assert promote(settings, new_version(client, settings), "staging", "dave") == 0


def test_concurrent_promotions_to_one_environment_let_exactly_one_win(client, settings):
    # given two requests for the same environment at the same moment
    version = new_version(client, settings)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MODEL_NAME": settings.model_name,
        "DEPLOY_DIR": str(settings.deploy_dir),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}", "promote", "--version", version, "--to", "staging"]
    # when
    racers = [
        subprocess.Popen(command, env={**env, "APPROVER": who}, stdout=subprocess.PIPE, text=True)
        for who in ("dave", "frank")
    ]
    codes = [racer.wait(timeout=120) for racer in racers]
    # then
    assert sorted(codes) == [0, 1]
    assert not (settings.deploy_dir / ".staging.lock").exists()
