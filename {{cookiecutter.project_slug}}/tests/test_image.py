"""The serving-image stage: what a user sees with and without a Docker engine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.image import build_image, pin_mlflow
from {{ cookiecutter.package_name }}.settings import Settings

DIGEST = "sha256:" + "ab" * 32
# A stand-in docker CLI: logs each call, answers `info`, `build`, `push` and `image inspect`.
FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1" in
  info) [ "$DOCKER_UP" = 1 ] || exit 1 ;;
  image) printf '[{"RepoDigests": ["%s@%s"]}]' "$IMAGE_REPOSITORY" "$DIGEST" ;;
esac
"""


@pytest.fixture
def docker_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in docker first on PATH and run in an empty folder; return its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_LOG", str(log))
    monkeypatch.setenv("DIGEST", DIGEST)
    monkeypatch.setenv("IMAGE_REPOSITORY", "registry.example/team/model")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PUSH_IMAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    return log


def register_tiny_model(settings: Settings) -> str:
    """Register a one-feature linear model and return its version number."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow.set_experiment("images")  # not an experiment id another test left active in another store
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]),
            name="model",
            registered_model_name=settings.model_name,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
        )
    return str(info.registered_model_version)


def test_without_an_engine_locally_it_points_to_make_serve(docker_log, capsys):
    # when
    code = build_image(Settings.from_env(), "3")
    # then
    out = capsys.readouterr().out
    assert code == 0
    assert "no Docker engine answers" in out
    assert "make serve VERSION=3" in out
    assert len(out.splitlines()) == 1
    assert docker_log.read_text().split() == ["info"]


def test_without_an_engine_in_ci_it_fails_closed(docker_log, monkeypatch, capsys):
    # given
    monkeypatch.setenv("CI", "true")
    # when / then
    assert build_image(Settings.from_env(), "3") == 1
    assert "make serve VERSION=3" in capsys.readouterr().out


def test_rejects_a_version_that_is_not_a_number(docker_log, capsys):
    assert build_image(Settings.from_env(), "latest") == 2
    assert "not a registry version number" in capsys.readouterr().out


def test_builds_pushes_and_records_the_digest(docker_log, monkeypatch):
    # given a registered version and an engine that answers
    monkeypatch.setenv("DOCKER_UP", "1")
    monkeypatch.setenv("PUSH_IMAGE", "1")
    settings = Settings.from_env()
    version = register_tiny_model(settings)
    # when
    code = build_image(settings, version)
    # then the model was exported for the build, and the pushed tag and digest are evidence on the version
    assert code == 0
    tag = f"{settings.image_repository}:v{version}"
    calls = docker_log.read_text().splitlines()
    assert calls[0] == "info"
    assert calls[1] == f"build --file docker/Dockerfile --build-arg MODEL_VERSION={version} --tag {tag} ."
    assert calls[2:] == [f"push {tag}", f"image inspect {tag}"]
    assert (Path("build/model") / "MLmodel").is_file()
    assert "mlflow==" in (Path("build/model") / "requirements.txt").read_text()
    from {{ cookiecutter.package_name }}.registry import connect

    tags = connect(settings).get_model_version(settings.model_name, version).tags
    assert tags["image"] == tag
    assert tags["image_digest"] == DIGEST


def test_pin_mlflow_keeps_an_existing_pin(tmp_path):
    # given
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("mlflow==3.1.0\nscikit-learn==1.6.1\n")
    # when
    pin_mlflow(requirements, "9.9.9")
    # then
    assert requirements.read_text() == "mlflow==3.1.0\nscikit-learn==1.6.1\n"
