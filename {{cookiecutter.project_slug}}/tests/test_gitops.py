"""The pin writer: exactly one image tag and model version per environment, nothing else touched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.gitops import (
    DEFAULT_BRANCH,
    PinError,
    initialise_repository,
    pinned_contents,
    read_pins,
    write_atomically,
)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture
def staging(tmp_path) -> Path:
    return Path(shutil.copytree(DEPLOY / "staging", tmp_path / "staging"))


def test_pins_change_only_the_tag_digest_and_version_lines(staging):
    before = {path.name: path.read_text() for path in staging.iterdir()}
    write_atomically(pinned_contents(staging, "7", "sha256:" + "b" * 64))
    assert read_pins(staging).model_version == "7"
    assert read_pins(staging).image_tag == "v7"
    after = {path.name: path.read_text() for path in staging.iterdir()}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"kustomization.yaml", "model.env"}
    removed = set(before["kustomization.yaml"].splitlines()) - set(after["kustomization.yaml"].splitlines())
    assert all("newTag" in line for line in removed)


def test_repinning_replaces_the_old_digest_and_is_idempotent(staging):
    write_atomically(pinned_contents(staging, "7", "sha256:" + "b" * 64))
    write_atomically(pinned_contents(staging, "8", None))
    once = pinned_contents(staging, "8", None)
    write_atomically(once)
    assert pinned_contents(staging, "8", None) == once
    assert "digest:" not in (staging / "kustomization.yaml").read_text()


def test_a_second_pin_line_is_refused_before_anything_is_written(staging):
    env_file = staging / "model.env"
    env_file.write_text(env_file.read_text() + "MODEL_VERSION=9\n")
    with pytest.raises(PinError, match="exactly one"):
        pinned_contents(staging, "7", None)


def git(folder: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True)
    return result.stdout


def test_a_fresh_render_becomes_a_repository_with_one_clean_first_commit(tmp_path):
    # given a rendered project that is not a repository, inside a folder that is one (as `make demo` renders)
    git(tmp_path, "init", "--quiet")
    project = tmp_path / "product"
    (project / "src").mkdir(parents=True)
    (project / "src" / "model.py").write_text("print('model')\n")
    (project / ".gitignore").write_text("mlflow.db\n")
    (project / "mlflow.db").write_text("")
    # when
    assert initialise_repository(project) is True
    # then it has its own repository on the default branch, everything but ignored files committed
    assert git(project, "rev-parse", "--show-toplevel").strip() == str(project.resolve())
    assert git(project, "branch", "--show-current").strip() == DEFAULT_BRANCH
    assert git(project, "ls-files").split() == [".gitignore", "src/model.py"]
    assert git(project, "status", "--porcelain") == ""
    # and a second run changes nothing
    assert initialise_repository(project) is False
    assert git(project, "rev-list", "--count", "HEAD").strip() == "1"
