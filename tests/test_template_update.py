"""`cruft update` brings template changes into a product repo and never touches its release state.

A product repo holds promotion commits (the pins in deploy/<env>/) that the template knows nothing about. A
template release that edits the same files must not leave conflict markers there, or undo a release.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import DEFAULT_PACKAGE, DEFAULT_SLUG, TEMPLATE, VENV, make, run

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
ENVIRONMENTS = ("staging", "production")
SOURCES = TEMPLATE / "{{cookiecutter.project_slug}}"
# What a merge leaves behind when it could not decide.
CONFLICT = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)
# The promotion's own pin step (promote._pin): it writes and commits the pins and needs no registry.
PROMOTE = f"""
import sys
from {DEFAULT_PACKAGE}.promote import PROMOTION, Release, _pin
from {DEFAULT_PACKAGE}.settings import Settings
for environment in sys.argv[1:]:
    release = Release.new(PROMOTION, environment, "7", "unreleased", ["approver"])
    _pin(Settings.from_env(), release, digest="sha256:{"a" * 64}")
"""
TEMPLATE_CHANGE = "# A template release: this line reaches product repos through `cruft update`.\n"


def git(repo: Path, *args: str) -> str:
    return run([*GIT, *args], repo).stdout.strip()


def template_checkout(folder: Path) -> Path:
    """The template as its own git repository (commit A): what `cruft create` reads and records."""
    folder.mkdir()
    shutil.copy(TEMPLATE / "cookiecutter.json", folder)
    shutil.copytree(TEMPLATE / "hooks", folder / "hooks")
    shutil.copytree(SOURCES, folder / SOURCES.name, ignore=shutil.ignore_patterns("__pycache__"))
    git(folder, "init", "--quiet")
    git(folder, "add", "--all")
    git(folder, "commit", "--quiet", "-m", "A")
    return folder


def released_project(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A product repo created with cruft, with promotion commits pinning v7; its template and pin files."""
    template = template_checkout(tmp_path / "template")
    run([str(VENV / "bin" / "cruft"), "create", "--no-input", "--output-dir", str(tmp_path), str(template)], tmp_path)
    project = tmp_path / DEFAULT_SLUG
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "Create from the template")
    created = git(project, "rev-parse", "HEAD")
    run([str(VENV / "bin" / "python"), "-c", PROMOTE, *ENVIRONMENTS], project)
    pins = git(project, "diff", "--name-only", created, "HEAD").splitlines()
    assert pins, "the promotions committed no pins"
    return template, project, pins


def release_template_change(template: Path) -> str:
    """Commit B: the template edits the lines promotion pins, and the Makefile; return its SHA."""
    for environment in ENVIRONMENTS:
        folder = template / SOURCES.name / "deploy" / environment
        edit(folder / "model.env", "MODEL_VERSION=unreleased\n", "MODEL_VERSION=unreleased\nMODEL_FLAVOR=sklearn\n")
        edit(folder / "kustomization.yaml", 'newTag: "unreleased"', 'newTag: "unreleased"  # pinned by promotion')
    with (template / SOURCES.name / "Makefile").open("a") as makefile:
        makefile.write(TEMPLATE_CHANGE)
    git(template, "commit", "--quiet", "--all", "-m", "B")
    return git(template, "rev-parse", "HEAD")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer has {old!r}: update this test's template change"
    path.write_text(text.replace(old, new))


def cruft_update(project: Path) -> None:
    run([str(VENV / "bin" / "cruft"), "update", "--skip-apply-ask", "--project-dir", str(project)], project)


def conflicted(project: Path) -> set[str]:
    """Files holding conflict markers, or left as `.rej` rejections, relative to the project."""
    files = [path for path in project.rglob("*") if path.is_file() and ".git" not in path.relative_to(project).parts]
    return {
        str(path.relative_to(project)) for path in files if path.suffix == ".rej" or CONFLICT.search(path.read_bytes())
    }


def test_cruft_update_brings_template_changes_and_keeps_the_release_pins(tmp_path, installed_project):
    # given a product repo whose environments run v7, and a template release that edits the same files
    template, project, pins = released_project(tmp_path)
    released = {pin: (project / pin).read_bytes() for pin in pins}
    new_commit = release_template_change(template)
    # when
    cruft_update(project)
    # then the template change arrived, the pins are the promotion's, and nothing is left to resolve
    assert json.loads((project / ".cruft.json").read_text())["commit"] == new_commit
    assert (project / "Makefile").read_text().endswith(TEMPLATE_CHANGE)
    assert {pin: (project / pin).read_bytes() for pin in pins} == released
    assert conflicted(project) == set()
    make(project, "manifests")  # installed_project brings kubectl and kubernetes-validate into the venv


def test_without_the_skip_list_the_same_update_leaves_conflicts_in_the_pins(tmp_path):
    # given the same repo, whose team dropped the skip list from pyproject.toml
    template, project, pins = released_project(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(re.sub(r"\n\[tool\.cruft\]\n.*?(?=\n\[|\Z)", "", text, flags=re.DOTALL))
    assert pyproject.read_text() != text, "pyproject.toml has no [tool.cruft] section"
    git(project, "commit", "--quiet", "--all", "-m", "Drop the cruft skip list")
    release_template_change(template)
    # when
    cruft_update(project)
    # then the update collides with the promotions: the skip list is what keeps release state safe
    assert conflicted(project) == set(pins)
