"""Upgrade step: move releases recorded the pre-1.2 way (aliases and history on `<model>` itself) into the
environment models, so promotion, rollback, back-tests and the cluster's gate find them.

For each environment whose model holds nothing yet: every version the legacy history promoted there and that
carries its approval tags gets its copy (so rollback can restore it), the history entries move over, the
environment's alias points at the copy of what the legacy alias held. The legacy aliases stay, ignored (the
release identity may not delete them; an admin may).
Each step is safe to repeat: a re-run after a crash finishes the job, and a finished environment is skipped.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PROMOTION = "promotion"


def _adopt(client: MlflowClient, name: str, environment: str) -> str:
    """One environment; a line saying what was done."""
    held = registry.running_in(client, name, environment)
    if held is not None:
        return f"{environment}: already runs v{held} from {registry.environment_model(name, environment)}"
    legacy = registry.alias_holder(client, name, environment)
    if legacy is None:
        return f"{environment}: nothing was released the old way"
    old_tags = registry.model_tags(client, name)
    if registry.pending_key(environment) in old_tags:
        raise registry.RegistryError(
            f"{environment}: a release started the old way has not finished: complete it with the template"
            " version that started it, then run this again"
        )
    target = registry.environment_model(name, environment)
    registry.ensure_model(client, target)
    history = {key: value for key, value in old_tags.items() if key.startswith(registry.HISTORY_PREFIX)}
    entries = {
        key: entry for key, entry in zip(sorted(history), registry.release_history(history), strict=True)
    }
    keys = registry.approval_tags(environment)
    adopted = 0
    for key, entry in entries.items():
        if entry["environment"] != environment:
            continue
        client.set_registered_model_tag(target, key, history[key])
        version = registry.get_version(client, name, entry["version"])
        approval = {tag: version.tags.get(tag, "") for tag in keys}
        copied = registry.copies_of(client, name, environment, entry["version"])
        if entry["action"] != PROMOTION or not approval[keys[0]] or copied:
            continue
        release = {
            registry.RELEASE_KEY: key,
            registry.RELEASE_ACTION: PROMOTION,
            registry.RELEASED_BY: entry["approved_by"],
        }
        registry.copy_version(client, version, environment, approval | release)
        adopted += 1
    copies = registry.copies_of(client, name, environment, str(legacy.version), PROMOTION)
    if not copies:
        raise registry.RegistryError(
            f"{environment}: v{legacy.version} holds the old {environment} alias without a recorded approval:"
            f" promote a version to {environment} through the gate instead (`make promote`)"
        )
    client.set_registered_model_alias(target, environment, copies[-1].version)
    return f"{environment}: adopted v{legacy.version} ({adopted} approved release(s) copied into {target})"


def adopt_releases(settings: Settings) -> int:
    """Entry point of `make adopt-releases`: run once after upgrading from a template before 1.2."""
    client = registry.connect(settings)
    try:
        for environment in registry.ENVIRONMENTS:
            print(_adopt(client, settings.model_name, environment))
    except registry.RegistryError as error:
        print(f"adopt-releases: {error}", file=sys.stderr)
        return 1
    return 0
