"""Upgrade step: move releases recorded the pre-1.2 way (aliases and history on `<model>` itself) into the
environment models, so promotion, rollback, back-tests and the cluster's gate find them.

Those old records live where the training identity may write, so nothing is taken on their word: a version
is adopted only when its evidence passes the same checks a promotion makes (complete training evidence, a
passed back-test, four-eyes against its recorded approvers and against the person adopting it), and the
version an environment's old alias holds must be what git pins in `deploy/<env>/`. The person adopting is
recorded as `released_by`. For each environment whose model holds nothing yet, every approved earlier
release gets its copy (so rollback can restore it), the history moves over, and the environment's alias points
at the copy of what it runs. The old aliases stay, ignored (only an admin may delete them). Each step is safe
to repeat; a finished environment is skipped.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }} import ci, gitops, registry
from {{ cookiecutter.package_name }}.promote import (
    PROMOTION,
    PromotionRefused,
    check_four_eyes,
    check_training_evidence,
)
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient


def _refusal(version: ModelVersion, environment: str, approvers: list[str]) -> str | None:
    """Why an old release of `version` must not be adopted, or None when it passes a promotion's checks."""
    number, tags = str(version.version), version.tags
    recorded = [who for who in tags.get(f"approved_by_{environment}", "").split(",") if who.strip()]
    if not recorded:
        return f"v{number} has no {environment} approval on record"
    verdict = tags.get("backtest_verdict", "missing")
    if verdict != "passed":
        return f"v{number} has no passed back-test (backtest_verdict={verdict})"
    try:
        check_four_eyes(recorded, number, tags)
        check_four_eyes(approvers, number, tags)
        check_training_evidence(number, tags, environment)
    except (PromotionRefused, ci.ApprovalError) as refusal:
        return str(refusal)
    return None


def _adopt(settings: Settings, client: MlflowClient, environment: str, approvers: list[str]) -> list[str]:
    """One environment; lines saying what was adopted and what was not, and why."""
    name = settings.model_name
    held = registry.running_in(client, name, environment)
    if held is not None:
        return [f"{environment}: already runs v{held} from {registry.environment_model(name, environment)}"]
    legacy = registry.alias_holder(client, name, environment)
    if legacy is None:
        return [f"{environment}: nothing was released the old way"]
    current = str(legacy.version)
    old_tags = registry.model_tags(client, name)
    if registry.pending_key(environment) in old_tags:
        raise registry.RegistryError(
            f"{environment}: a release started the old way has not finished: complete it with the template"
            " version that started it, then run this again"
        )
    pinned = gitops.running_version(settings.deploy_dir / environment)
    if pinned != current:
        raise registry.RegistryError(
            f"{environment}: the old alias holds v{current} but deploy/{environment}/ pins v{pinned}: git is"
            " what runs; promote a version through the gate instead (`make promote`)"
        )
    refusal = _refusal(legacy, environment, approvers)
    if refusal:
        raise registry.RegistryError(f"{environment}: v{current} cannot be adopted: {refusal}")
    target = registry.environment_model(name, environment)
    registry.ensure_model(client, target)
    history = {key: value for key, value in old_tags.items() if key.startswith(registry.HISTORY_PREFIX)}
    entries = dict(zip(sorted(history), registry.release_history(history), strict=True))
    lines, latest = [], {}
    for key, entry in entries.items():
        if entry["environment"] != environment:
            continue
        client.set_registered_model_tag(target, key, history[key])
        if entry["action"] == PROMOTION:
            latest[entry["version"]] = key
    for number, key in latest.items():
        version = registry.get_version(client, name, number)
        refusal = _refusal(version, environment, approvers)
        if refusal:
            lines.append(f"{environment}: not adopted: {refusal} (rollback cannot restore it)")
            continue
        if registry.copies_of(client, name, environment, number, PROMOTION):
            continue
        approval = {tag: version.tags.get(tag, "") for tag in registry.approval_tags(environment)}
        release = {
            registry.RELEASE_KEY: key,
            registry.RELEASE_ACTION: PROMOTION,
            registry.RELEASED_BY: ",".join(approvers),
        }
        registry.copy_version(client, version, environment, approval | release)
    copies = registry.copies_of(client, name, environment, current, PROMOTION)
    if not copies:  # its approval was given before the history began: adopt it on its own record
        approval = {tag: legacy.tags.get(tag, "") for tag in registry.approval_tags(environment)}
        release = {
            registry.RELEASE_KEY: "adopted",
            registry.RELEASE_ACTION: PROMOTION,
            registry.RELEASED_BY: ",".join(approvers),
        }
        copies = [registry.copy_version(client, legacy, environment, approval | release)]
    client.set_registered_model_alias(target, environment, copies[-1].version)
    return [*lines, f"{environment}: adopted v{current} into {target}"]


def adopt_releases(settings: Settings) -> int:
    """Entry point of `make adopt-releases`: once, by hand (APPROVER=<you>), after upgrading from < 1.2."""
    try:
        if ci.provider_of(os.environ) is not None:
            raise ci.ApprovalError("adopt-releases runs once, by hand, outside CI: run it on a laptop")
        approvers = ci.approver_names(os.environ.get(ci.LOCAL_APPROVER_VARIABLE, ""))
        client = registry.connect(settings)
        for environment in registry.ENVIRONMENTS:
            print("\n".join(_adopt(settings, client, environment, approvers)))
    except (registry.RegistryError, gitops.PinError, ci.ApprovalError) as error:
        print(f"adopt-releases: {error}", file=sys.stderr)
        return 1
    return 0
