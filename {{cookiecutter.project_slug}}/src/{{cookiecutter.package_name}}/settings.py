"""Project settings: one place that turns environment variables into typed values.

Every stage reads its configuration from here, so CI and a laptop differ only in environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Defaults from the template answers; the environment variable named beside each overrides it.
DEFAULT_TRACKING_URI = "{{ cookiecutter.mlflow_tracking_uri }}"  # MLFLOW_TRACKING_URI
DEFAULT_MODEL_NAME = "{{ cookiecutter.model_name }}"  # MODEL_NAME
DEFAULT_IMAGE_REPOSITORY = "{{ cookiecutter.container_registry }}/{{ cookiecutter.project_slug }}"  # IMAGE_REPOSITORY
DEFAULT_NAMESPACE = "{{ cookiecutter.k8s_namespace }}"  # K8S_NAMESPACE


@dataclass(frozen=True)
class Settings:
    """What every stage needs to know about where things live."""

    tracking_uri: str
    model_name: str
    data_uri: str
    snapshot_dir: Path
    reports_dir: Path
    deploy_dir: Path
    image_repository: str
    namespace: str
    ci_run_url: str

    @classmethod
    def from_env(cls) -> Settings:
        """Read settings from the environment; an unset or empty variable falls back to the default."""
        env = os.environ
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
            model_name=env.get("MODEL_NAME") or DEFAULT_MODEL_NAME,
            data_uri=env.get("DATA_URI") or "data/raw/sales.parquet",
            snapshot_dir=Path(env.get("SNAPSHOT_DIR") or "data/snapshots"),
            reports_dir=Path(env.get("REPORTS_DIR") or "reports"),
            deploy_dir=Path(env.get("DEPLOY_DIR") or "deploy"),
            image_repository=env.get("IMAGE_REPOSITORY") or DEFAULT_IMAGE_REPOSITORY,
            namespace=env.get("K8S_NAMESPACE") or DEFAULT_NAMESPACE,
            ci_run_url=env.get("CI_RUN_URL") or "",
        )

    @classmethod
    def in_folder(cls, root: Path, model_name: str) -> Settings:
        """Store, data, snapshots, reports and deploy/ under one folder: for tests, benchmarks, sandboxes."""
        return cls(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            model_name=model_name,
            data_uri=str(root / "data" / "sales.parquet"),
            snapshot_dir=root / "snapshots",
            reports_dir=root / "reports",
            deploy_dir=root / "deploy",
            image_repository=f"registry.invalid/{model_name}",
            namespace=model_name,
            ci_run_url="",
        )
