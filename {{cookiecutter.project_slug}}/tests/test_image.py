"""The serving-image stage: what a user sees with and without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import stat
from importlib.metadata import version as installed
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.backtest_record import POLICY_FILE
from {{ cookiecutter.package_name }}.image import DOCKERFILE, MODELS_DIR, build_image, pinned
from {{ cookiecutter.package_name }}.serve import server_command
from {{ cookiecutter.package_name }}.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]

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
    # given a registered version, an engine that answers, and a model left over from an earlier build
    monkeypatch.setenv("DOCKER_UP", "1")
    monkeypatch.setenv("PUSH_IMAGE", "1")
    settings = Settings.from_env()
    version = register_tiny_model(settings)
    Path("build/models/99").mkdir(parents=True)
    # when
    code = build_image(settings, version)
    # then the model was exported for the build, and the pushed tag and digest are evidence on the version
    assert code == 0
    tag = f"{settings.image_repository}:v{version}"
    calls = docker_log.read_text().splitlines()
    assert calls[0] == "info"
    assert calls[1] == f"build --file docker/Dockerfile --build-arg MODEL_VERSION={version} --tag {tag} ."
    assert calls[2:] == [f"push {tag}", f"image inspect {tag}"]
    # the build context holds exactly this version, where the service loads it ($MODEL_DIR/<N>/)
    assert [path.name for path in Path("build/models").iterdir()] == [version]
    assert (Path("build/models") / version / "MLmodel").is_file()
    # and the image installs the model's requirements, the scoring service and the back-test's MLflow client
    requirements = Path("build/requirements.txt").read_text().splitlines()
    assert {"scikit-learn", "cloudpickle", f"bentoml=={installed('bentoml')}"} <= set(requirements)
    assert f"mlflow=={installed('mlflow')}" in requirements
    from {{ cookiecutter.package_name }}.registry import connect

    tags = connect(settings).get_model_version(settings.model_name, version).tags
    assert tags["image"] == tag
    assert tags["image_digest"] == DIGEST


def test_the_model_s_own_pins_win_and_missing_packages_are_added():
    # given requirements logged with the model, one of them spelt differently
    logged = "MLflow==3.1.0\nscikit_learn==1.6.1\n"
    # when
    result = pinned(logged, {"bentoml": "1.4.40", "mlflow": "9.9.9", "scikit-learn": "9.9.9"})
    # then
    assert result == "MLflow==3.1.0\nscikit_learn==1.6.1\nbentoml==1.4.40\n"


def test_the_image_serves_what_make_serve_serves():
    # given the image's entry point and environment
    dockerfile = (PROJECT / DOCKERFILE).read_text()
    (entrypoint,) = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
    environment = dict(re.findall(r"^\s+([A-Z_]+)=(\S+?)(?: \\)?$", dockerfile, re.M))
    # then it starts the same service as `make serve` and the back-test, on the port the manifests probe,
    assert json.loads(entrypoint) == server_command(8080, host="0.0.0.0")[2:]  # [2:]: no `python -m`
    assert "/readyz" in dockerfile.split("HEALTHCHECK")[1]
    # one thread per process, scratch under /tmp (the only writable path in the cluster)
    assert environment["OMP_NUM_THREADS"] == "1"
    assert environment["BENTOML_HOME"].startswith("/tmp/")
    # and loads the models from where image.py exports them
    assert dockerfile_copies(dockerfile)[f"{MODELS_DIR}/"] == f"{environment['MODEL_DIR']}/"


def test_the_build_context_holds_what_the_image_copies_and_the_back_test_reads():
    # given
    dockerfile = (PROJECT / DOCKERFILE).read_text()
    copies = dockerfile_copies(dockerfile)
    ignore = (PROJECT / ".dockerignore").read_text().splitlines()
    let_in = {line.removeprefix("!") for line in ignore if line.startswith("!")}
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)
    # then every COPY source is let into the build context
    assert set(copies) <= let_in, set(copies) - let_in
    # and the in-cluster back-test Job, which runs from the working directory, finds its policy there
    assert copies[f"{POLICY_FILE.parent}/"] == f"{workdir}/{POLICY_FILE.parent}/"


def dockerfile_copies(dockerfile: str) -> dict[str, str]:
    """The Dockerfile's COPY instructions: source in the build context -> destination in the image."""
    return dict(re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M))
