"""Project settings: one place that turns environment variables into typed values.

Every stage reads its configuration from here, so CI and a laptop differ only in environment.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Defaults from the template answers; the environment variable named beside each overrides it.
DEFAULT_TRACKING_URI = "{{ cookiecutter.mlflow_tracking_uri }}"  # MLFLOW_TRACKING_URI
DEFAULT_MODEL_NAME = "{{ cookiecutter.model_name }}"  # MODEL_NAME
DEFAULT_IMAGE_REPOSITORY = "{{ cookiecutter.container_registry }}/{{ cookiecutter.project_slug }}"  # IMAGE_REPOSITORY
DEFAULT_NAMESPACE = "{{ cookiecutter.k8s_namespace }}"  # K8S_NAMESPACE


# Azure Pipelines passes an undefined variable on as the literal text of its macro, e.g. "$(DATA_URI)".
UNEXPANDED_MACRO = re.compile(r"\$\([A-Za-z0-9_.]+\)")


def variable(name: str, env: Mapping[str, str] = os.environ) -> str | None:
    """An environment variable's value, or None when it is unset, empty or an unexpanded CI macro."""
    value = env.get(name)
    return None if not value or UNEXPANDED_MACRO.fullmatch(value) else value


def shareable_uri(uri: str) -> str:
    """A URI without the parts that may be secret (user, password, query tokens): what reports may show."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.netloc:
        return uri
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Settings:
    """What every stage needs to know about where things live."""

    tracking_uri: str
    model_name: str
    data_uri: str
    forecast_uri: str  # folder (any fsspec URL) that batch forecasts are written to and monitoring reads
    snapshot_dir: Path
    reports_dir: Path
    deploy_dir: Path
    image_repository: str
    namespace: str

    @classmethod
    def from_env(cls) -> Settings:
        """Read settings from the environment; an unset or empty variable falls back to the default."""
        return cls(
            tracking_uri=variable("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
            model_name=variable("MODEL_NAME") or DEFAULT_MODEL_NAME,
            data_uri=variable("DATA_URI") or "data/raw/sales.parquet",
            forecast_uri=variable("FORECAST_URI") or "data/forecasts",
            snapshot_dir=Path(variable("SNAPSHOT_DIR") or "data/snapshots"),
            reports_dir=Path(variable("REPORTS_DIR") or "reports"),
            deploy_dir=Path(variable("DEPLOY_DIR") or "deploy"),
            image_repository=variable("IMAGE_REPOSITORY") or DEFAULT_IMAGE_REPOSITORY,
            namespace=variable("K8S_NAMESPACE") or DEFAULT_NAMESPACE,
        )

    @classmethod
    def in_folder(cls, root: Path, model_name: str) -> Settings:
        """Store, data, snapshots, reports and deploy/ under one folder: for tests, benchmarks, sandboxes."""
        return cls(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            model_name=model_name,
            data_uri=str(root / "data" / "sales.parquet"),
            forecast_uri=str(root / "forecasts"),
            snapshot_dir=root / "snapshots",
            reports_dir=root / "reports",
            deploy_dir=root / "deploy",
            image_repository=f"registry.invalid/{model_name}",
            namespace=model_name,
        )
