"""The MLflow model registry as the broker between stages, and the one place its contract is written down.

Training produces versions and release stages consume them; they talk only through what is recorded:
tags on each version (`stage=dev|staging|production|archived` plus evidence) and the environments'
registered models. MLflow stages (`transition_model_version_stage`) are deprecated and not used.

What an environment runs lives in its own registered model, `<model>-staging` / `<model>-production`:
promotion copies the approved version there (MLflow's copy: same artefacts and run, with its evidence) with
the approval in the same call, moves that model's alias, and appends to the release history kept as its tags.
MLflow permissions are per registered model and moving an alias needs only EDIT, which the training identity
needs on `<model>` to register versions; with the environments in models only the release identity may
edit, the registry server itself refuses anyone else (`make registry-permissions`).

A version is complete or it is not a candidate: training evidence is written in the same call that creates
the version, and back-test evidence is written verdict last, so a half-written record never reads as passed.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri

if TYPE_CHECKING:  # MLflow takes seconds to import: the CLI checks its inputs before paying for it.
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

ENVIRONMENTS = ("staging", "production")
CHAMPION_ENVIRONMENT = "production"  # what a candidate is compared with: the model serving users
STAGE = "stage"
# Written with the version itself, in one call: a version without all of them never existed.
TRAINING_EVIDENCE = (
    "git_sha",
    "git_dirty",
    "data_fingerprint",
    "data_snapshot",
    "data_validation",
    "data_validation_suite",
    "trained_by",
    "ci_run_url",
    "config",
)
# Written by the back-test; the verdict goes last and so commits the record (a re-run marks it pending first).
BACKTEST_PENDING = "pending"
BACKTEST_EVIDENCE = (
    "backtest_champion",
    "backtest_wape",
    "backtest_champion_wape",
    "backtest_report",
    "backtest_at",
    "backtest_verdict",
)
# Why a version was trained, when monitoring asked for it (the CI trigger passes it; train.py records it).
RETRAIN_REASON = "retrain_reason"
GRANULARITY = "granularity"  # "global", or "per_scenario": the version holds one model per scenario
SCENARIOS_ARTIFACT = "scenarios/scenarios.json"  # a per-scenario run's table: status, slice, metrics, run
SCENARIO_STATUSES = ("trained", "skipped", "failed")  # of each scenario's fit, in that table
# Champion/challenger per scenario (scenario_release.py): what a release decided for each scenario, and what
# a back-test found. A version serves a model for the first three.
SCENARIO_OUTCOMES = ("improved", "new", "kept", "failed", "untrained")
CHALLENGER_OUTCOMES = SCENARIO_OUTCOMES[:2]  # the version serves the model its own training fitted
SERVING_OUTCOMES = SCENARIO_OUTCOMES[:3]  # ... or production's, kept
# Written by `make monitor` on the version it watched: the newest verdict, why, and where its report is.
MONITORING_EVIDENCE = ("monitor_at", "monitor_verdict", "monitor_reason", "monitor_report")
VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,8}")
# On an environment's copy: the version it copies and the release that made it (with the approval tags).
SOURCE_VERSION = "source_version"
RELEASE_KEY = "release_key"
RELEASE_ACTION = "release_action"
RELEASED_BY = "released_by"
# Per environment, written with the copy a promotion makes (a rollback carries the restored version's).
APPROVAL_TAGS = ("approved_by_{env}", "approved_at_{env}", "approval_ci_run_{env}", "promotion_commit_{env}")
# Environment-model tags: one entry per release, never overwritten; one marker per release in flight.
HISTORY_PREFIX = "release_history."
PENDING_PREFIX = "release_pending."
# An unreachable store must fail within seconds, not after MLflow's default of minutes of retries.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
PROBE_TIMEOUT_SECONDS = 5


class RegistryError(Exception):
    """A registry lookup failed in a way the user can fix; the message says how."""


def scenario_status_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many scenarios of a per-scenario table this run's fits trained, skipped and failed (a kept
    scenario's row is production's model; `fit_status` says what this run did)."""
    statuses = [row.get("fit_status", row.get("status")) for row in rows]
    return {status: statuses.count(status) for status in SCENARIO_STATUSES}


def scenario_table(version: str, run_id: str, tags: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """A per-scenario version's table (SCENARIOS_ARTIFACT on its run); None for a global version. Checked
    row by row: whoever can write to the registry can write it, and the back-test, the next release and
    lineage read from it which model each scenario serves."""
    import mlflow

    if tags.get(GRANULARITY) != "per_scenario":
        return None
    from mlflow.exceptions import MlflowException

    try:
        table = mlflow.artifacts.load_dict(f"runs:/{run_id}/{SCENARIOS_ARTIFACT}")
    except MlflowException as error:  # missing, or not JSON; a store that is down is not this version's fault
        if error.error_code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            raise
        table = None
    except ValueError:
        table = None
    if not isinstance(table, list) or not all(map(_is_scenario_row, table)):
        raise RegistryError(
            f"version {version}: its {SCENARIOS_ARTIFACT} is missing or not a per-scenario table (a row per"
            " scenario: its name, its fit's status and, once decided, its outcome): train a new version, or,"
            " if production runs it, roll production back to a version whose table reads"
        )
    return table


def _is_scenario_row(row: Any) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("scenario"), str)
        and row.get("status") in SCENARIO_STATUSES
        and row.get("decision", "untrained") in SCENARIO_OUTCOMES
        and isinstance(row.get("run_id"), str | None)
    )


def served_scenarios(table: list[dict[str, Any]] | None) -> set[str] | None:
    """The scenarios a version has a model for; None (all) for a global version. Tables written before
    champion/challenger per scenario have no decision: there, every trained scenario is served."""
    if table is None:
        return None
    return {
        row["scenario"]
        for row in table
        if row.get("decision") in SERVING_OUTCOMES or ("decision" not in row and row["status"] == "trained")
    }


def parse_version(text: str | None, variable: str = "VERSION") -> str:
    """A registry version number, checked as a whole string (no signs, spaces, newlines or look-alikes)."""
    if text is None or not text.strip():
        raise RegistryError(f"{variable} is required: pass a registry version number, e.g. {variable}=3")
    if not VERSION_NUMBER.fullmatch(text):
        raise RegistryError(
            f"{variable}={text!r} is not a registry version number: pass digits only, e.g. {variable}=3"
        )
    return text


def _probe(uri: str) -> None:
    """Any HTTP answer means the server is up; no answer at all means the command cannot work."""
    health = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_SECONDS):  # nosec B310 # http(s): see connect
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise RegistryError(
            f"the tracking store {shareable_uri(uri)} is unreachable ({reason}): start it or fix"
            " MLFLOW_TRACKING_URI (credentials go in MLFLOW_TRACKING_USERNAME/PASSWORD, not in the URI)"
        ) from error


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store, failing fast and in one line when a server is unreachable."""
    for variable, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    if settings.tracking_uri.startswith(("http://", "https://")):
        _probe(settings.tracking_uri)
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _absent(error: Exception) -> bool:
    """MLflow's answer for a name, version or alias that does not exist (any other error propagates)."""
    return getattr(error, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """Fetch one version, or explain that it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if not _absent(error):
            raise
        raise RegistryError(
            f"model {name!r} has no version {version}: list them with `make versions`"
        ) from error


def missing_evidence(tags: Mapping[str, str], required: tuple[str, ...]) -> list[str]:
    """The required tags a version's `tags` lack (empty values count as missing)."""
    return [key for key in required if not tags.get(key, "").strip()]


def is_complete(model_version: ModelVersion) -> bool:
    """Every piece of training evidence is there: only such versions are candidates."""
    return not missing_evidence(model_version.tags, TRAINING_EVIDENCE)


def latest_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The newest complete version, or None when nothing complete has been trained yet."""
    versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
    return next((version for version in versions if is_complete(version)), None)


def register_version(
    client: MlflowClient, name: str, model_info: Any, run_id: str, evidence: Mapping[str, object]
) -> str:
    """Create the version and its evidence in one call: it exists complete or not at all."""
    ensure_model(client, name)
    created = client.create_model_version(
        name,
        model_info.model_uri,
        run_id=run_id,
        tags={key: str(value) for key, value in evidence.items()},
        model_id=model_info.model_id,
    )
    return str(created.version)


def alias_holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at (search results do not carry aliases, so ask directly)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if not _absent(error):
            raise
        return None


def set_evidence(client: MlflowClient, name: str, version: str | int, tags: Mapping[str, object]) -> None:
    """Record evidence on a version as tags, in the given order (put the committing tag last)."""
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def model_tags(client: MlflowClient, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).tags)


def history_key(environment: str, at: datetime) -> str:
    """A key that sorts by time and is never reused: one release, one key."""
    return f"{HISTORY_PREFIX}{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.{environment}"


def release_history(tags: Mapping[str, str], environment: str | None = None) -> list[dict[str, str]]:
    """Every recorded release (oldest first), optionally of one environment; a malformed entry is refused."""
    keys = sorted(key for key in tags if key.startswith(HISTORY_PREFIX))
    try:
        entries = [json.loads(tags[key]) for key in keys]
        return [entry for entry in entries if environment in (None, entry["environment"])]
    except (ValueError, KeyError, TypeError) as error:
        raise RegistryError(
            f"the release history has a malformed entry ({error!r}): repair that {HISTORY_PREFIX}* tag on"
            " the registered model, then re-run"
        ) from error


def pending_key(environment: str) -> str:
    return f"{PENDING_PREFIX}{environment}"


def model_uri(name: str, version: str | int) -> str:
    """The URI MLflow loads and serves a registry version from."""
    return f"models:/{name}/{version}"


def approval_tags(environment: str) -> tuple[str, ...]:
    return tuple(tag.format(env=environment) for tag in APPROVAL_TAGS)


def environment_model(name: str, environment: str) -> str:
    """The registered model holding what an environment runs; only the release identity may edit it."""
    return f"{name}-{environment}"


def ensure_model(client: MlflowClient, name: str) -> None:
    """Create a registered model unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def source_of(copy: ModelVersion, name: str) -> str:
    """The version of `name` an environment's copy was made from, checked against MLflow's own source."""
    number = copy.tags.get(SOURCE_VERSION, "")
    if not VERSION_NUMBER.fullmatch(number) or copy.source != model_uri(name, number):
        raise RegistryError(
            f"version {copy.version} of {copy.name} is not a copy made by a release (source {copy.source!r},"
            f" {SOURCE_VERSION}={number!r}): release through `make promote`, which copies versions itself"
        )
    return number


def environment_copy(client: MlflowClient, name: str, environment: str) -> ModelVersion | None:
    """The copy an environment's alias points at: what it runs, or None before its first release."""
    return alias_holder(client, environment_model(name, environment), environment)


def running_in(client: MlflowClient, name: str, environment: str) -> str | None:
    """The version of `name` an environment runs per the registry (its git pins tell the cluster)."""
    copy = environment_copy(client, name, environment)
    return None if copy is None else source_of(copy, name)


def environment_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """Environment -> the version of `name` it runs, for the environments that run one."""
    held = {environment: running_in(client, name, environment) for environment in ENVIRONMENTS}
    return {environment: number for environment, number in held.items() if number is not None}


def copies_of(
    client: MlflowClient, name: str, environment: str, version: str, action: str | None = None
) -> list[ModelVersion]:
    """Every copy of `version` released into an environment (by one kind of release), oldest first."""
    target = environment_model(name, environment)
    copies = client.search_model_versions(f"name = '{target}'", order_by=["version_number ASC"])
    return [
        copy
        for copy in copies
        if copy.tags.get(SOURCE_VERSION) == str(version) and action in (None, copy.tags.get(RELEASE_ACTION))
    ]


def release_tags(client: MlflowClient, name: str) -> dict[str, str]:
    """The environment models' tags together: every release history entry and pending release."""
    from mlflow.exceptions import MlflowException

    tags: dict[str, str] = {}
    for environment in ENVIRONMENTS:
        try:
            tags |= model_tags(client, environment_model(name, environment))
        except MlflowException as error:  # before an environment's first release its model does not exist
            if not _absent(error):
                raise
    return tags


def copy_version(
    client: MlflowClient, source: ModelVersion, environment: str, release_tags: Mapping[str, str]
) -> ModelVersion:
    """MLflow's `copy_model_version` (same artefacts, run and evidence), with the release's tags in the same
    call: a copy carries its approval or does not exist."""
    evidence = {key: value for key, value in source.tags.items() if key != STAGE}
    return client.create_model_version(
        environment_model(source.name, environment),
        model_uri(source.name, source.version),
        run_id=source.run_id,
        tags={**evidence, SOURCE_VERSION: str(source.version), **release_tags},
        description=source.description,
        model_id=source.model_id,
    )
