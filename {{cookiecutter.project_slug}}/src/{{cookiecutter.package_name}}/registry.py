"""The MLflow model registry as the broker between stages.

Training produces versions and release stages consume them; they talk only through what is recorded:
aliases (`staging`, `production`) and tags on each version (`stage=dev|staging|production|archived` plus
evidence). MLflow stages (`transition_model_version_stage`) are deprecated and not used.
"""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from {{ cookiecutter.package_name }}.settings import Settings


class RegistryError(Exception):
    """A registry lookup failed in a way the user can fix; the message says how."""


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured tracking and registry store and return a client."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """Fetch one version, or explain that it does not exist."""
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        raise RegistryError(
            f"model {name!r} has no version {version}: list versions with `make lineage`"
        ) from error


def latest_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The newest registered version, or None when nothing has been trained yet."""
    versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
    return versions[0] if versions else None


def alias_holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at (search results do not carry aliases, so ask directly)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_evidence(client: MlflowClient, name: str, version: str | int, tags: Mapping[str, object]) -> None:
    """Record evidence on a version as tags; values are stored as strings."""
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def model_uri(name: str, version: str | int) -> str:
    """The URI MLflow loads and serves a registry version from."""
    return f"models:/{name}/{version}"
