"""Template releases reach product repos through `copier update` and `cruft update`, driven by the
template-update pipeline's steps, and never touch their release state.

Each test builds the template as its own git repository with two release tags (v1.0.0, v1.1.0), makes a product
repo from v1.0.0 with one engine, gives it the team's own commits and promotion commits, then runs the pipeline
steps (`<package> template-update`, `<package> template-pull-request`) as CI would.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import DEFAULT_PACKAGE, DEFAULT_SLUG, TEMPLATE, VENV, make, run
from servers import https_api

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
ENVIRONMENTS = ("staging", "production")
SOURCES = "{{cookiecutter.project_slug}}"
TEMPLATE_FILES = ("cookiecutter.json", "copier.yml", "CHANGELOG.md", "hooks", "migrations", SOURCES)
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
TEMPLATE_CHANGE = "# A template release: this line reaches product repos through the update pipeline.\n"
TEAM_CHANGE = "# The team's own line, where the template release adds its own.\n"
POLICY = Path("config/backtest.toml")


def git(repo: Path, *args: str) -> str:
    return run([*GIT, *args], repo).stdout.strip()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer has {old!r}: update this test's template change"
    path.write_text(text.replace(old, new))


def release_v1_0(folder: Path) -> Path:
    """The template as its own repository, tagged v1.0.0: today's sources with the policy key's 1.0.0 name."""
    folder.mkdir()
    for name in TEMPLATE_FILES:
        source = TEMPLATE / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / name)
    edit(folder / SOURCES / POLICY, "\nmax_wape_regression =", "\nmax_regression =")
    git(folder, "init", "--quiet")
    git(folder, "add", "--all")
    git(folder, "commit", "--quiet", "-m", "Release 1.0.0")
    git(folder, "tag", "v1.0.0")
    return folder


def release_v1_1(template: Path) -> None:
    """v1.1.0: the policy key's new name (with its migration), the pin lines and the Makefile edited."""
    shutil.copy(TEMPLATE / SOURCES / POLICY, template / SOURCES / POLICY)
    for environment in ENVIRONMENTS:
        folder = template / SOURCES / "deploy" / environment
        edit(folder / "model.env", "MODEL_VERSION=unreleased\n", "MODEL_VERSION=unreleased\nMODEL_FLAVOR=sklearn\n")
        edit(folder / "kustomization.yaml", 'newTag: "unreleased"', 'newTag: "unreleased"  # pinned by promotion')
    with (template / SOURCES / "Makefile").open("a") as makefile:
        makefile.write(TEMPLATE_CHANGE)
    git(template, "commit", "--quiet", "--all", "-m", "Release 1.1.0")
    git(template, "tag", "v1.1.0")


def create(engine: str, template: Path, out: Path) -> Path:
    """A product repo made from v1.0.0 by `engine`, committed as `make install` would."""
    if engine == "copier":
        project = out / DEFAULT_SLUG
        copier = [str(VENV / "bin" / "copier"), "copy", "--trust", "--defaults", "--quiet", "--vcs-ref", "v1.0.0"]
        run([*copier, str(template), str(project)], out)
    else:
        cruft = [str(VENV / "bin" / "cruft"), "create", "--no-input", "--checkout", "v1.0.0"]
        run([*cruft, "--output-dir", str(out), str(template)], out)
        project = out / DEFAULT_SLUG
    git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "Create from the template")
    return project


def team_and_release_commits(project: Path) -> dict[str, bytes]:
    """The team tunes training and its policy and adds a test; then promotions pin v7. Returns the pins."""
    edit(project / "config/train.toml", "learning_rate = 0.08", "learning_rate = 0.05")
    edit(project / POLICY, "max_regression = 0.005", "max_regression = 0.01 ")
    (project / "tests" / "test_team.py").write_text("def test_team_rule():\n    assert True\n")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "Tune training and the release policy; add a team test")
    before = git(project, "rev-parse", "HEAD")
    run([str(VENV / "bin" / "python"), "-c", PROMOTE, *ENVIRONMENTS], project)
    pins = git(project, "diff", "--name-only", before, "HEAD").splitlines()
    assert pins, "the promotions committed no pins"
    return {pin: (project / pin).read_bytes() for pin in pins}


def pipeline(project: Path, step: str, check: bool = True, **env: str):
    """One step of the template-update pipeline, as CI runs it."""
    return run([str(VENV / "bin" / "python"), "-m", DEFAULT_PACKAGE, step], project, check=check, **env)


def with_origin(project: Path, folder: Path) -> Path:
    """Give the product repo a bare repository as origin, holding its default branch."""
    origin = folder / "origin.git"
    git(folder, "init", "--quiet", "--bare", str(origin))
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "--quiet", "origin", "main")
    return origin


def conflicted(project: Path) -> set[str]:
    """Files holding conflict markers, or left as `.rej` rejections, relative to the project."""
    files = [path for path in project.rglob("*") if path.is_file() and ".git" not in path.relative_to(project).parts]
    return {
        str(path.relative_to(project)) for path in files if path.suffix == ".rej" or CONFLICT.search(path.read_bytes())
    }


@pytest.fixture
def template(tmp_path: Path) -> Path:
    return release_v1_0(tmp_path / "template")


@pytest.mark.parametrize("engine", ["copier", "cruft"])
def test_update_brings_the_release_keeps_team_changes_and_never_touches_release_state(
    engine, template, tmp_path, installed_project
):
    # given a product repo on v1.0.0 with the team's commits and v7 pinned, and a template release v1.1.0
    project = create(engine, template, tmp_path)
    pins = team_and_release_commits(project)
    release_v1_1(template)
    # when the pipeline's first step runs
    result = pipeline(project, "template-update")
    # then the release is committed on its own branch, with nothing left to resolve
    assert "committed on branch template-update/v1.1.0" in result.stdout
    assert git(project, "branch", "--show-current") == "template-update/v1.1.0"
    assert git(project, "status", "--porcelain") == ""
    assert conflicted(project) == set()
    assert (project / "Makefile").read_text().endswith(TEMPLATE_CHANGE)
    # the team's changes are kept, and the pins are the promotions', byte for byte
    assert "learning_rate = 0.05" in (project / "config/train.toml").read_text()
    assert (project / "tests" / "test_team.py").is_file()
    assert {pin: (project / pin).read_bytes() for pin in pins} == pins
    # the policy keeps the team's threshold: copier's migration renamed its key; cruft has no migrations,
    # so its users follow the upgrade note (and `make backtest` names the old key until they do)
    policy = (project / POLICY).read_text()
    key = "max_wape_regression" if engine == "copier" else "max_regression"
    assert re.search(rf"^{key} = 0\.01 ", policy, re.MULTILINE), policy
    # the pull request to come names the range and quotes the CHANGELOG entry of v1.1.0
    proposal = json.loads((project / "build/template-update/pull-request.json").read_text())
    assert proposal["title"] == "Update the template from v1.0.0 to v1.1.0"
    assert "## v1.1.0" in proposal["body"] and "## v1.0.0" not in proposal["body"]
    make(project, "manifests")  # installed_project brings kubectl and kubernetes-validate into the venv


@pytest.mark.parametrize("engine", ["copier", "cruft"])
def test_a_real_conflict_fails_the_pipeline_and_nothing_is_committed(engine, template, tmp_path, installed_project):
    # given a team line exactly where the template release adds its own
    project = create(engine, template, tmp_path)
    with (project / "Makefile").open("a") as makefile:
        makefile.write(TEAM_CHANGE)
    git(project, "commit", "--quiet", "--all", "-m", "A team line at the end of the Makefile")
    team_head = git(project, "rev-parse", "HEAD")
    release_v1_1(template)
    # when
    result = pipeline(project, "template-update", check=False)
    # then the step fails with one line naming the file, commits nothing and leaves no proposal
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "conflicts in Makefile" in result.stderr and "nothing was committed or pushed" in result.stderr
    assert git(project, "rev-parse", "HEAD") == team_head
    assert "Makefile" in conflicted(project) or "Makefile.rej" in conflicted(project)
    assert not (project / "build/template-update/pull-request.json").exists()


def test_an_up_to_date_repo_gets_no_branch_and_no_pull_request(template, tmp_path, installed_project):
    # given a product repo on the newest release, with its origin a bare repository
    project = create("copier", template, tmp_path)
    origin = with_origin(project, tmp_path)
    # when the scheduled pipeline runs its steps
    checked = pipeline(project, "template-update")
    tested = make(project, "template-update-check")
    proposed = pipeline(project, "template-pull-request")
    # then each says so, and nothing is branched, written or pushed
    assert checked.stdout.strip() == f"Template is up to date: v1.0.0 is the newest release of {template}."
    assert tested.stdout.strip() == "No template update to check."
    assert proposed.stdout.strip() == "No template update to propose."
    assert git(project, "branch", "--format=%(refname:short)") == "main"
    assert git(origin, "branch", "--format=%(refname:short)") == "main"
    assert git(project, "status", "--porcelain") == ""


def test_a_new_release_is_pushed_and_proposed_through_the_git_host_api(template, tmp_path, installed_project):
    # given a product repo on v1.0.0 (a Jenkins job whose repo is on GitHub), and a template release v1.1.0
    project = create("copier", template, tmp_path)
    origin = with_origin(project, tmp_path)
    release_v1_1(template)
    pipeline(project, "template-update")
    update = git(project, "rev-parse", "HEAD")
    pull_request = {"html_url": "https://github.com/acme/demand-forecast/pull/31"}
    with https_api(tmp_path, 201, pull_request) as (api, certificate, requests):
        jenkins = {"JENKINS_URL": "https://ci.example", "GIT_URL": "https://github.com/acme/demand-forecast.git"}
        credential = {"GIT_USERNAME": "bot", "GIT_TOKEN": "t0ken", "GITHUB_API_URL": api}
        # when the last step runs
        proposed = pipeline(project, "template-pull-request", SSL_CERT_FILE=str(certificate), **jenkins, **credential)
    # then the update commit is on the branch at origin, and one pull request asks to merge it
    assert proposed.stdout.strip() == pull_request["html_url"]
    assert git(origin, "rev-parse", "refs/heads/template-update/v1.1.0") == update
    (request,) = requests
    assert (request["method"], request["path"]) == ("POST", "/repos/acme/demand-forecast/pulls")
    assert request["headers"]["Authorization"] == "Bearer t0ken"
    body = request["body"]
    assert (body["head"], body["base"]) == ("template-update/v1.1.0", "main")
    assert body["title"] == "Update the template from v1.0.0 to v1.1.0"
    assert "## v1.1.0" in body["body"] and "max_wape_regression" in body["body"]
    assert not (project / "build/template-update/pull-request.json").exists()


def test_the_migration_runs_once_and_leaves_a_renamed_key_alone(tmp_path):
    # given a policy with the old key, migrated once
    policy = tmp_path / POLICY
    policy.parent.mkdir()
    policy.write_text("wape_floor = 0.2\nmax_regression = 0.02  # the team's\n")
    migration = [str(VENV / "bin" / "python"), str(TEMPLATE / "migrations" / "rename_max_regression.py")]
    first = run(migration, tmp_path)
    # when it runs again (an update across 1.1.0 re-run by hand)
    again = run(migration, tmp_path)
    # then the key is renamed once, the team's value and comment are kept, and the second run is silent
    assert policy.read_text() == "wape_floor = 0.2\nmax_wape_regression = 0.02  # the team's\n"
    assert "renamed max_regression to max_wape_regression" in first.stderr
    assert again.stderr == ""


def test_without_the_skip_list_cruft_leaves_conflicts_in_the_pins(template, tmp_path, installed_project):
    # given a cruft repo whose team dropped the skip list from pyproject.toml
    project = create("cruft", template, tmp_path)
    pins = team_and_release_commits(project)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(re.sub(r"\n\[tool\.cruft\]\n.*?(?=\n\[|\Z)", "", text, flags=re.DOTALL))
    assert pyproject.read_text() != text, "pyproject.toml has no [tool.cruft] section"
    git(project, "commit", "--quiet", "--all", "-m", "Drop the cruft skip list")
    release_v1_1(template)
    # when
    result = pipeline(project, "template-update", check=False)
    # then the update collides with the promotions, and the pipeline refuses it: the skip list keeps releases safe
    assert result.returncode == 1
    assert set(pins) <= conflicted(project)
