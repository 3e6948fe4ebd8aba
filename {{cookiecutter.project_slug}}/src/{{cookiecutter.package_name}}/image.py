"""Serving image: bake one registry version's model into a container image and record it on the version.

`make image VERSION=N` exports the version's model to build/model/, builds `<image_repository>:v<N>` from
docker/Dockerfile, pushes it when PUSH_IMAGE=1 and records the tags `image` and `image_digest` on the
version, so promotion can pin the exact digest. Without a Docker engine the local flow serves straight from
the registry instead (`make serve VERSION=N`); in CI a stage that cannot build fails closed.
"""

from __future__ import annotations

import json
import os
import shutil

# The docker CLI runs with fixed argument lists, never through a shell.
import subprocess  # nosec B404 # the docker CLI with fixed argument lists, no shell
import sys
from pathlib import Path

from {{ cookiecutter.package_name }}.settings import Settings

DOCKERFILE = Path("docker/Dockerfile")
BUILD_DIR = Path("build")
MODEL_DIR = BUILD_DIR / "model"


class ImageError(Exception):
    """A docker step failed; the message says which one and shows its output."""


def docker_engine_answers() -> bool:
    """True when a docker CLI is installed and its engine responds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    result = subprocess.run(  # nosec B603 # absolute path, fixed arguments
        [docker, "info"], capture_output=True, text=True, check=False, timeout=60
    )
    return result.returncode == 0


def in_ci() -> bool:
    """True inside CI: GitHub Actions and Jenkins set CI=true, the Azure pipelines set it explicitly."""
    return os.environ.get("CI", "").lower() == "true"


def docker(*args: str) -> str:
    """Run one docker command and return its standard output, or raise with its error output."""
    result = subprocess.run(  # nosec B603 B607 # docker from PATH, argument list, no shell
        ["docker", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"docker {args[0]} failed ({result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def export_model(settings: Settings, version: str, target: Path = MODEL_DIR) -> Path:
    """Download the version's model from the registry into `target` (replacing what was there)."""
    import mlflow
    import mlflow.artifacts

    from {{ cookiecutter.package_name }}.registry import model_uri

    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri(settings.model_name, version), dst_path=str(target)
    )
    pin_mlflow(target / "requirements.txt", mlflow.__version__)
    return target


def pin_mlflow(requirements: Path, mlflow_version: str) -> None:
    """The scoring server is MLflow itself: make sure the image installs it, at the version that logged."""
    lines = requirements.read_text().splitlines() if requirements.exists() else []
    names = {line.split("=")[0].split("<")[0].split(">")[0].split("[")[0].strip().lower() for line in lines}
    if "mlflow" not in names:
        lines.append(f"mlflow=={mlflow_version}")
        requirements.write_text("\n".join(lines) + "\n")


def pushed_digest(tag: str) -> str:
    """The registry digest (`sha256:...`) of a pushed tag, read from the local image's RepoDigests."""
    repository = tag.rsplit(":", 1)[0]
    images = json.loads(docker("image", "inspect", tag))
    for reference in images[0].get("RepoDigests") or []:
        name, _, digest = reference.partition("@")
        if name == repository and digest.startswith("sha256:"):
            return digest
    raise ImageError(f"{tag} has no registry digest for {repository}: was the push refused?")


def build_image(settings: Settings, version: str) -> int:
    """Build (and with PUSH_IMAGE=1 push) the serving image of a registry version; 0 on success."""
    version = str(version).removeprefix("v")
    if not version.isdigit():
        print(f"image: {version!r} is not a registry version number: pass --version N (see `make lineage`)")
        return 2
    if not docker_engine_answers():
        print(
            f"image: no Docker engine answers here (`docker info` failed or docker is missing), so no image "
            f"was built; the local flow serves version {version} from the registry instead: "
            f"`make serve VERSION={version}`"
        )
        return 1 if in_ci() else 0

    from {{ cookiecutter.package_name }}.registry import RegistryError, connect, get_version, set_evidence

    client = connect(settings)
    try:
        get_version(client, settings.model_name, version)
    except RegistryError as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    tag = f"{settings.image_repository}:v{version}"
    try:
        export_model(settings, version)
        docker(
            "build",
            "--file",
            str(DOCKERFILE),
            "--build-arg",
            f"MODEL_VERSION={version}",
            "--tag",
            tag,
            ".",
        )
        print(f"image: built {tag}")
        if os.environ.get("PUSH_IMAGE") != "1":
            print("image: not pushed (set PUSH_IMAGE=1 to push and record it on the version)")
            return 0
        docker("push", tag)
        digest = pushed_digest(tag)
    except ImageError as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    set_evidence(client, settings.model_name, version, {"image": tag, "image_digest": digest})
    print(f"image: pushed {tag}@{digest}; recorded as tags image and image_digest on version {version}")
    return 0
