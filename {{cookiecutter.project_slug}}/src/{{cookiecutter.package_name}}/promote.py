"""Release stage: promote a registry version dev -> staging -> production, or roll an environment back.

Both are releases: the same gate (an approver from the CI system, four-eyes, the version's own evidence)
and the same all-or-nothing sequence, which a crash or a dead tracking store cannot leave half-done:

1. record the release as pending on the environment's registered model (who approved, when, which CI run);
2. pin the version in `deploy/<env>/` (one git commit holding exactly the pins);
3. copy the version into the environment's model with the approval, and move that model's alias to it;
4. append the release to the history (never overwritten) and clear the pending record.

Re-running the same command after a failure at any step completes the pending release; any other release
to that environment is refused until it is completed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }} import ci, gitops, registry
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

PROMOTION, ROLLBACK = "promotion", "rollback"
# What production must share with the staging approval: the code, data and image that staging was shown.
STAGING_BOUND = (*registry.TRAINING_EVIDENCE, "image", "image_digest")


class PromotionRefused(Exception):
    """A promotion or rollback that must not happen; the message says why and what to do."""


@dataclass(frozen=True)
class Release:
    """One release of a version into an environment: the pending record and, once done, a history entry."""

    action: str
    environment: str
    version: str
    from_version: str
    approved_by: str
    approved_at: str
    ci_run: str
    history_key: str
    commit: str = ""

    @classmethod
    def new(cls, action: str, environment: str, version: str, holder: str, approvers: list[str]) -> Release:
        now = datetime.now(UTC)
        return cls(
            action=action,
            environment=environment,
            version=version,
            from_version=holder,
            approved_by=",".join(approvers),
            approved_at=now.isoformat(timespec="microseconds"),
            ci_run=ci.ci_run_url(os.environ),
            history_key=registry.history_key(environment, now),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def command(self) -> str:
        if self.action == ROLLBACK:
            return f"make rollback ENV={self.environment}"
        return f"make promote VERSION={self.version} ENV={self.environment}"


@contextmanager
def release_lock(settings: Settings, environment: str) -> Iterator[None]:
    """One release per environment at a time on this machine; a lock left by a dead process is taken over."""
    lock = settings.deploy_dir / f".{environment}.lock"
    owner = f"{socket.gethostname()} {os.getpid()}\n"
    for attempt in (1, 2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError as error:
            if attempt == 1 and _holder_is_dead(lock.read_text(errors="replace")):
                lock.unlink(missing_ok=True)
                continue
            raise PromotionRefused(
                f"another release to {environment} is in progress ({lock} exists); wait for it, or remove the"
                " file if that release has died"
            ) from error
    try:
        os.write(descriptor, owner.encode())
        os.close(descriptor)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _holder_is_dead(owner: str) -> bool:
    """True when the lock names a process on this host that no longer exists."""
    host, _, pid = owner.strip().rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def check_four_eyes(approvers: list[str], number: str, tags: Mapping[str, str]) -> None:
    """At least one approver who did not train the version; a version with no known trainer is refused."""
    trainer = tags.get("trained_by", "").strip()
    if not trainer or trainer == "unknown":
        raise PromotionRefused(
            f"version {number} has no trainer on record, so four-eyes cannot be checked: retrain it through"
            " `make train`"
        )
    try:
        trainer_key = ci.identity_key(ci.check_identity(trainer, "trainer"))
    except ci.ApprovalError as error:
        raise PromotionRefused(
            f"version {number}'s trainer on record cannot be compared with its approvers ({error}):"
            " retrain it through `make train`"
        ) from None
    if all(ci.identity_key(name) == trainer_key for name in approvers):
        raise PromotionRefused(
            f"{', '.join(approvers)} trained version {number} and cannot also approve it (four-eyes):"
            " ask another reviewer"
        )


def check_training_evidence(number: str, tags: Mapping[str, str], environment: str) -> None:
    """Complete training evidence with a passed data gate; production also needs a traceable commit."""
    missing = registry.missing_evidence(tags, registry.TRAINING_EVIDENCE)
    if missing:
        raise PromotionRefused(
            f"version {number} is incomplete (missing evidence: {', '.join(missing)}): its training did not"
            " finish; train a new version with `make train`"
        )
    if tags["data_validation"] != "passed":
        raise PromotionRefused(
            f"version {number} has no passing data-gate evidence (data_validation="
            f"{tags['data_validation']}): retrain it through `make train`"
        )
    if environment == "production" and (tags["git_dirty"] != "false" or tags["git_sha"] == "none"):
        raise PromotionRefused(
            f"version {number} was trained from a dirty working tree or outside git (git_sha="
            f"{tags['git_sha']}): its code cannot be traced to a commit; retrain from a clean commit"
        )


def check_backtest(client: MlflowClient, name: str, model_version: ModelVersion) -> None:
    """A complete, passed back-test against the champion production runs today."""
    tags, number = model_version.tags, str(model_version.version)
    if tags.get("backtest_verdict", registry.BACKTEST_PENDING) == registry.BACKTEST_PENDING:
        raise PromotionRefused(
            f"version {number} has no finished back-test: run `make backtest VERSION={number}`"
        )
    missing = registry.missing_evidence(model_version.tags, registry.BACKTEST_EVIDENCE)
    if missing:
        raise PromotionRefused(
            f"version {number} has an incomplete back-test record (missing: {', '.join(missing)}): run"
            f" `make backtest VERSION={number}` again"
        )
    if tags["backtest_verdict"] != "passed":
        raise PromotionRefused(
            f"version {number} failed its back-test (WAPE {tags['backtest_wape']} vs champion"
            f" {tags['backtest_champion_wape']}); report: run artifact {tags['backtest_report']}"
        )
    champion = registry.running_in(client, name, "production")
    current = champion if champion and champion != number else "none"
    if tags["backtest_champion"] != current:
        raise PromotionRefused(
            f"version {number} was back-tested against champion {tags['backtest_champion']}, but"
            f" production now runs {current}: run `make backtest VERSION={number}` again"
        )


def check_path(client: MlflowClient, name: str, model_version: ModelVersion, environment: str) -> None:
    """dev -> staging -> production, one step at a time, each approved; archived versions stay archived."""
    number, stage = str(model_version.version), model_version.tags.get("stage", "dev")
    if registry.running_in(client, name, environment) == number:
        raise PromotionRefused(f"version {number} is already in {environment}")
    earlier = registry.copies_of(client, name, environment, number, PROMOTION)
    if earlier:
        raise PromotionRefused(
            f"version {number} was released to {environment} before (approved by"
            f" {earlier[-1].tags.get(f'approved_by_{environment}', '?')}) and has left it: train a new"
            " version"
        )
    if stage == "archived":
        raise PromotionRefused(f"version {number} is archived and cannot be promoted: train a new version")
    if environment == "staging" and stage != "dev":
        raise PromotionRefused(f"version {number} is at stage {stage}: only dev versions go to staging")
    if environment == "production":
        staging = registry.environment_copy(client, name, "staging")
        held = registry.source_of(staging, name) if staging else None
        if held != number:
            now = f"version {held}" if held else "nothing"
            raise PromotionRefused(
                f"version {number} is not in staging (staging holds {now}): production only takes the version"
                " now in staging; promote it to staging first"
            )
        if not staging.tags.get("approved_by_staging"):
            raise PromotionRefused(
                f"version {number} holds the staging alias without a staging approval on record (moved"
                " outside the gate?): promote it to staging through the gate first"
            )
        tags = model_version.tags
        changed = [key for key in STAGING_BOUND if tags.get(key, "") != staging.tags.get(key, "")]
        if changed:
            raise PromotionRefused(
                f"version {number}'s {', '.join(changed)} changed after its staging approval: production"
                " takes exactly what staging was approved with; train and release a new version"
            )


def pending_release(client: MlflowClient, name: str, environment: str) -> Release | None:
    """The release to this environment that started and did not finish, if any."""
    text = registry.release_tags(client, name).get(registry.pending_key(environment))
    return Release(**json.loads(text)) if text else None


def _check_pinnable(settings: Settings, environment: str) -> None:
    """Refuse before anything is recorded when deploy/<env>/ cannot take a pin commit."""
    env_dir = settings.deploy_dir / environment
    gitops.read_pins(env_dir)
    repository = gitops.repository_of(env_dir)
    if repository is not None:
        gitops.require_clean(repository, env_dir)


def _pin(settings: Settings, release: Release, digest: str | None) -> str:
    """Pin the version in deploy/<env>/ as one commit holding exactly the pin files; idempotent."""
    env_dir = settings.deploy_dir / release.environment
    contents = gitops.pinned_contents(env_dir, release.version, digest)
    repository = gitops.repository_of(env_dir)
    if repository is None:
        gitops.write_atomically(contents)
        return "not a git repository: pins written, not committed"
    already = all(path.read_text() == text for path, text in contents.items())
    dirty = gitops.uncommitted(repository, env_dir)
    pin_files = {str(path.resolve().relative_to(repository)) for path in contents}
    if already and not dirty:
        return gitops.last_commit(repository, env_dir)  # a re-run after the commit: nothing to redo
    if not (already and set(dirty) <= pin_files):
        gitops.require_clean(repository, env_dir)
    previous = gitops.write_atomically(contents)
    verb = "Promote" if release.action == PROMOTION else "Roll back"
    message = (
        f"{verb} {settings.model_name} v{release.version} to {release.environment}"
        f" (approved by {release.approved_by})"
    )
    try:
        return gitops.commit(repository, list(contents), message)
    except gitops.PinError:
        gitops.write_atomically(previous)
        raise


def _release_copy(
    client: MlflowClient, name: str, release: Release, source: ModelVersion, commit: str
) -> ModelVersion:
    """The environment's copy this release made (found again on a re-run) or a new one with its approval.

    A promotion's copy carries this approval; a rollback's carries the approval of the promotion it restores.
    """
    environment = release.environment
    made = [
        copy
        for copy in registry.copies_of(client, name, environment, release.version)
        if copy.tags.get(registry.RELEASE_KEY) == release.history_key
    ]
    if made:
        return made[-1]
    keys = registry.approval_tags(environment)
    if release.action == PROMOTION:
        values = (release.approved_by, release.approved_at, release.ci_run, commit)
        approval = dict(zip(keys, values, strict=True))
    else:
        restored = registry.copies_of(client, name, environment, release.version, PROMOTION)[-1].tags
        approval = {key: restored.get(key, "") for key in keys}
    release_record = {
        registry.RELEASE_KEY: release.history_key,
        registry.RELEASE_ACTION: release.action,
        registry.RELEASED_BY: release.approved_by,
    }
    return registry.copy_version(client, source, environment, approval | release_record)


def _retire(client: MlflowClient, name: str, number: str) -> None:
    """A version that left an environment keeps the stage of one it still runs in, or is archived."""
    still_in = {env for env, held in registry.environment_aliases(client, name).items() if held == number}
    stage = next((env for env in ("production", "staging") if env in still_in), "archived")
    registry.set_evidence(client, name, number, {registry.STAGE: stage})


def carry_out(settings: Settings, client: MlflowClient, release: Release, pending: bool = False) -> str:
    """Steps 1-4 of the module docstring; every step is safe to repeat, so a re-run completes a release."""
    name, environment, number = settings.model_name, release.environment, release.version
    target = registry.environment_model(name, environment)
    if not pending:
        _check_pinnable(settings, environment)
        registry.ensure_model(client, target)
        client.set_registered_model_tag(target, registry.pending_key(environment), release.to_json())
    model_version = registry.get_version(client, name, number)
    commit = _pin(settings, release, model_version.tags.get("image_digest"))
    copy = _release_copy(client, name, release, model_version, commit)
    holder = registry.environment_copy(client, name, environment)
    if holder is None or holder.version != copy.version:
        client.set_registered_model_alias(target, environment, copy.version)
    registry.set_evidence(client, name, number, {registry.STAGE: environment})
    if release.from_version not in ("none", number):
        _retire(client, name, release.from_version)
    client.set_registered_model_tag(target, release.history_key, replace(release, commit=commit).to_json())
    client.delete_registered_model_tag(target, registry.pending_key(environment))
    print(
        f"{'Promoted' if release.action == PROMOTION else 'Rolled back'} {name} v{number} to {environment}"
        f" (approved by {release.approved_by}): alias {environment} -> v{number}, deploy/{environment}"
        f" pinned ({commit})"
    )
    return commit


def _resume_or_refuse(
    settings: Settings, client: MlflowClient, environment: str, action: str, version: str | None
) -> bool:
    """Complete this same release if it was interrupted (True); refuse while another one is pending."""
    pending = pending_release(client, settings.model_name, environment)
    if pending is None:
        return False
    if pending.action == action and version in (None, pending.version):
        print(
            f"Completing the interrupted {action} of v{pending.version} to {environment}, approved by"
            f" {pending.approved_by} at {pending.approved_at}."
        )
        carry_out(settings, client, pending, pending=True)
        return True
    raise PromotionRefused(
        f"the {pending.action} of v{pending.version} to {environment} (approved by {pending.approved_by})"
        f" did not finish: complete it first with `{pending.command}`"
    )


# What to run after a release; CI pipelines do both, in this order.
NEXT_TO_PRODUCTION = "Next: make promote VERSION={version} ENV=production APPROVER=<another reviewer>"
NEXT_TO_CLUSTER = (
    "Next: push the pin commit (CI: make release-pr ENV={environment}); Flux deploys it on merge"
)


def promote(settings: Settings, version: str, environment: str, approver: str) -> int:
    """Entry point of `make promote`: exit 0 when promoted (or an interrupted promotion completed)."""
    client = registry.connect(settings)
    try:
        approvers = ci.approver_names(approver)
        with release_lock(settings, environment):
            if _resume_or_refuse(settings, client, environment, PROMOTION, version):
                return 0
            try:
                model_version = registry.get_version(client, settings.model_name, version)
            except registry.RegistryError as error:
                raise PromotionRefused(str(error)) from error
            check_path(client, settings.model_name, model_version, environment)
            check_four_eyes(approvers, version, model_version.tags)
            check_training_evidence(version, model_version.tags, environment)
            check_backtest(client, settings.model_name, model_version)
            previous = registry.running_in(client, settings.model_name, environment) or "none"
            carry_out(settings, client, Release.new(PROMOTION, environment, version, previous, approvers))
    except (PromotionRefused, registry.RegistryError, gitops.PinError, ci.ApprovalError) as refusal:
        print(f"Promotion refused: {refusal}", file=sys.stderr)
        return 1
    upcoming = NEXT_TO_PRODUCTION if environment == "staging" else NEXT_TO_CLUSTER
    print(upcoming.format(version=version, environment=environment))
    return 0


def rollback_target(history: list[dict[str, str]]) -> str | None:
    """The release before the current one: promotions stack up, each rollback takes the top one off."""
    stack: list[str] = []
    for entry in history:
        if entry["action"] == PROMOTION:
            stack.append(entry["version"])
        elif stack:
            stack.pop()
    return stack[-2] if len(stack) >= 2 else None


def rollback(settings: Settings, environment: str, approver: str) -> int:
    """Entry point of `make rollback`: a release of the previous version, through the same gate."""
    client = registry.connect(settings)
    name = settings.model_name
    try:
        approvers = ci.approver_names(approver)
        with release_lock(settings, environment):
            if _resume_or_refuse(settings, client, environment, ROLLBACK, None):
                return 0
            history = registry.release_history(registry.release_tags(client, name), environment)
            target_number = rollback_target(history)
            if target_number is None:
                raise PromotionRefused(f"{environment} has no earlier release to roll back to")
            target = registry.get_version(client, name, target_number)
            if not registry.copies_of(client, name, environment, target_number, PROMOTION):
                raise PromotionRefused(
                    f"version {target_number} was never approved for {environment}: it cannot be restored"
                )
            check_four_eyes(approvers, target_number, target.tags)
            check_training_evidence(target_number, target.tags, environment)
            current = registry.running_in(client, name, environment) or "none"
            release = Release.new(ROLLBACK, environment, target_number, current, approvers)
            carry_out(settings, client, release)
    except (PromotionRefused, registry.RegistryError, gitops.PinError, ci.ApprovalError) as refusal:
        print(f"Rollback refused: {refusal}", file=sys.stderr)
        return 1
    print(NEXT_TO_CLUSTER.format(environment=environment))
    return 0
