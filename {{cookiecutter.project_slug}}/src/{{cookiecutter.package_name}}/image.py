"""Serving image: bake one registry version's model into a container image and record it on the version.

`make image VERSION=N` exports the version's model to build/models/<N>/ (the layout the scoring service loads,
serving.py) and the image's requirements to build/requirements.txt, builds `<image_repository>:v<N>` from
docker/Dockerfile, pushes it when PUSH_IMAGE=1 and records the tags `image` and `image_digest` on the
version, so promotion can pin the exact digest. Without a Docker engine the local flow serves straight from
the registry instead (`make serve VERSION=N`); in CI a stage that cannot build fails closed.
"""

from __future__ import annotations

import json
import os
import re
import shutil

# The docker CLI runs with fixed argument lists, never through a shell.
import subprocess  # nosec B404 # the docker CLI with fixed argument lists, no shell
import sys
from collections.abc import Mapping
from pathlib import Path

from {{ cookiecutter.package_name }}.settings import Settings

DOCKERFILE = Path("docker/Dockerfile")
BUILD_DIR = Path("build")
MODELS_DIR = BUILD_DIR / "models"  # the image's MODEL_DIR: one folder per version, named by its number
REQUIREMENTS = BUILD_DIR / "requirements.txt"
# Installed in the image beside the model's own requirements, at the versions installed here: BentoML serves,
# MLflow is the registry client of the in-cluster back-test Job, which runs from the same image.
IMAGE_PACKAGES = ("bentoml", "mlflow")


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


def export_model(settings: Settings, version: str) -> None:
    """Export the version to build/models/<N>/, alone (an image serves one version), and its requirements."""
    from importlib.metadata import version as installed

    from {{ cookiecutter.package_name }}.serve import export_versions

    shutil.rmtree(MODELS_DIR, ignore_errors=True)
    export_versions(settings, [version], MODELS_DIR)
    logged = MODELS_DIR / version / "requirements.txt"
    requirements = logged.read_text() if logged.is_file() else ""
    REQUIREMENTS.write_text(pinned(requirements, {name: installed(name) for name in IMAGE_PACKAGES}))


def requirement_name(line: str) -> str:
    """The normalised project name a requirements line starts with; "" for a comment, option or blank line."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def pinned(requirements: str, pins: Mapping[str, str]) -> str:
    """The requirements plus `name==version` for each package they do not name: the model's own pin wins."""
    lines = requirements.splitlines()
    named = {requirement_name(line) for line in lines}
    added = [f"{name}=={version}" for name, version in pins.items() if requirement_name(name) not in named]
    return "\n".join([*lines, *added]) + "\n"


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
