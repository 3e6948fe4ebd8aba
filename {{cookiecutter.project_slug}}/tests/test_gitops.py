"""The pin writer: exactly one image tag and model version per environment, nothing else touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.gitops import PinError, pinned_contents, read_pins, write_atomically

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
