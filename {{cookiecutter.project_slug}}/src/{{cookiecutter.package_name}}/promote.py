"""Release stage: promote a registry version dev -> staging -> production, or roll an environment back.

A promotion reads the evidence recorded on the version and refuses, with the registry and `deploy/`
untouched, unless every check holds. On success it pins the version in `deploy/<env>/` (one git commit),
moves the alias, and records who approved, when, and from which CI run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package_name }} import gitops, provenance, registry
from {{ cookiecutter.package_name }}.settings import Settings

APPROVER = re.compile(r"^[\w.@+ -]{2,100}$")


class PromotionRefused(Exception):
    """A promotion or rollback that must not happen; the message says why and what to do."""


@contextmanager
def release_lock(settings: Settings, environment: str) -> Iterator[None]:
    """One release per environment at a time: a second one refuses instead of racing the first."""
    lock = settings.deploy_dir / f".{environment}.lock"
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError as error:
        raise PromotionRefused(
            f"another release to {environment} is in progress ({lock} exists); wait for it, or remove the"
            " file if that release has died"
        ) from error
    try:
        os.write(descriptor, f"{os.getpid()}\n".encode())
        os.close(descriptor)
        yield
    finally:
        lock.unlink(missing_ok=True)


def approver_names(approver: str) -> list[str]:
    """The named humans behind a gate (it may report several, comma-separated)."""
    names = [name.strip() for name in approver.split(",") if name.strip()]
    if not names:
        raise PromotionRefused("an approver is required: the CI gate passes the identity of who approved")
    for name in names:
        if not APPROVER.match(name):
            raise PromotionRefused(f"approver {name!r} is not a user name or email")
    return names


def check_approver(approver: str, model_version: ModelVersion) -> None:
    """At least one approver who did not train the version (four-eyes)."""
    names = approver_names(approver)
    trainer = model_version.tags.get("trained_by", "").strip().lower()
    if all(name.lower() == trainer for name in names):
        raise PromotionRefused(
            f"{approver} trained version {model_version.version} and cannot also approve it (four-eyes):"
            " ask another reviewer"
        )


def check_evidence(client: MlflowClient, name: str, model_version: ModelVersion, environment: str) -> None:
    """The version's own records must show a passed data gate and a back-test against today's champion."""
    tags, number = model_version.tags, str(model_version.version)
    if tags.get("data_validation") != "passed":
        raise PromotionRefused(
            f"version {number} has no passing data-gate evidence (data_validation="
            f"{tags.get('data_validation', 'missing')}): retrain it through `make train`"
        )
    verdict = tags.get("backtest_verdict")
    if verdict is None:
        raise PromotionRefused(
            f"version {number} has not been back-tested: run `make backtest VERSION={number}`"
        )
    if verdict != "passed":
        raise PromotionRefused(
            f"version {number} failed its back-test (WAPE {tags.get('backtest_wape')} vs champion"
            f" {tags.get('backtest_champion_wape')}); report: run artifact {tags.get('backtest_report')}"
        )
    champion = registry.alias_holder(client, name, "production")
    current = str(champion.version) if champion and str(champion.version) != number else "none"
    if tags.get("backtest_champion", "none") != current:
        raise PromotionRefused(
            f"version {number} was back-tested against champion {tags.get('backtest_champion')}, but"
            f" production now runs {current}: run `make backtest VERSION={number}` again"
        )
    if environment == "production" and (
        tags.get("git_dirty") != "false" or tags.get("git_sha", "none") == "none"
    ):
        raise PromotionRefused(
            f"version {number} was trained from a dirty working tree or outside git (git_sha="
            f"{tags.get('git_sha')}): its code cannot be traced to a commit; retrain from a clean commit"
        )


def check_path(client: MlflowClient, name: str, model_version: ModelVersion, environment: str) -> None:
    """dev -> staging -> production, one step at a time; archived versions stay archived."""
    number, stage = str(model_version.version), model_version.tags.get("stage", "dev")
    holder = registry.alias_holder(client, name, environment)
    if holder is not None and str(holder.version) == number:
        raise PromotionRefused(f"version {number} is already in {environment}")
    if stage == "archived":
        raise PromotionRefused(f"version {number} is archived and cannot be promoted: train a new version")
    if environment == "staging" and stage != "dev":
        raise PromotionRefused(f"version {number} is at stage {stage}: only dev versions go to staging")
    if environment == "production":
        staging = registry.alias_holder(client, name, "staging")
        if staging is None or str(staging.version) != number:
            now = f"version {staging.version!s}" if staging else "nothing"
            raise PromotionRefused(
                f"version {number} is not in staging (staging holds {now}): production only takes the version"
                " now in staging; promote it to staging first"
            )


def _retire(client: MlflowClient, name: str, model_version: ModelVersion | None) -> None:
    """The previous holder keeps the stage of an environment it still runs in, or is archived."""
    if model_version is None:
        return
    number = str(model_version.version)
    still_in = {
        alias for alias, held in client.get_registered_model(name).aliases.items() if str(held) == number
    }
    stage = next((env for env in ("production", "staging") if env in still_in), "archived")
    registry.set_evidence(client, name, number, {"stage": stage})


def release(
    settings: Settings,
    client: MlflowClient,
    model_version: ModelVersion,
    environment: str,
    approver: str,
    action: str,
) -> str:
    """Pin in git first (undone if the commit fails), then move the alias and record the approval."""
    name, number = settings.model_name, str(model_version.version)
    env_dir = settings.deploy_dir / environment
    contents = gitops.pinned_contents(env_dir, number, model_version.tags.get("image_digest"))
    previous_holder = registry.alias_holder(client, name, environment)
    previous_files = gitops.write_atomically(contents)
    verb = "Promote" if action == "promotion" else "Roll back"
    message = f"{verb} {name} v{number} to {environment} (approved by {approver})"
    commit = "not a git repository: pins written, not committed"
    repository = gitops.repository_of(env_dir)
    try:
        if repository is not None:
            commit = gitops.commit(repository, list(contents), message)
    except gitops.PinError:
        gitops.write_atomically(previous_files)
        raise
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    client.set_registered_model_alias(name, environment, number)
    registry.set_evidence(
        client,
        name,
        number,
        {
            "stage": environment,
            f"approved_by_{environment}": approver,
            f"approved_at_{environment}": now,
            f"approval_ci_run_{environment}": settings.ci_run_url or provenance.ci_run_url() or "local",
            f"{action}_commit_{environment}": commit,
        },
    )
    _retire(client, name, previous_holder)
    print(f"{message}: alias {environment} -> v{number}, deploy/{environment} pinned ({commit})")
    return commit


def promote(settings: Settings, version: str, environment: str, approver: str) -> int:
    """Entry point of `make promote`: exit 0 when promoted, 1 with the reason when refused."""
    client = registry.connect(settings)
    try:
        with release_lock(settings, environment):
            try:
                model_version = registry.get_version(client, settings.model_name, version)
            except registry.RegistryError as error:
                raise PromotionRefused(str(error)) from error
            check_path(client, settings.model_name, model_version, environment)
            check_approver(approver, model_version)
            check_evidence(client, settings.model_name, model_version, environment)
            release(settings, client, model_version, environment, approver, "promotion")
    except (PromotionRefused, gitops.PinError) as refusal:
        print(f"Promotion refused: {refusal}")
        return 1
    return 0


def previous_release(client: MlflowClient, name: str, environment: str) -> ModelVersion | None:
    """The version that held the environment before the current holder, by approval time."""
    current = registry.alias_holder(client, name, environment)
    stamp = f"approved_at_{environment}"
    earlier = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if stamp in v.tags and (current is None or str(v.version) != str(current.version))
    ]
    return max(earlier, key=lambda v: v.tags[stamp], default=None)


def rollback(settings: Settings, environment: str, approver: str = "") -> int:
    """Entry point of `make rollback`: put the previous version back, with the same records and pins."""
    client = registry.connect(settings)
    approver = approver or provenance.identity()
    try:
        with release_lock(settings, environment):
            target = previous_release(client, settings.model_name, environment)
            if target is None:
                raise PromotionRefused(f"{environment} has no earlier version to roll back to")
            approver_names(approver)
            current = registry.alias_holder(client, settings.model_name, environment)
            release(settings, client, target, environment, approver, "rollback")
            if current is not None:
                registry.set_evidence(
                    client,
                    settings.model_name,
                    str(current.version),
                    {f"rolled_back_from_{environment}": str(target.version)},
                )
    except (PromotionRefused, gitops.PinError) as refusal:
        print(f"Rollback refused: {refusal}")
        return 1
    return 0
