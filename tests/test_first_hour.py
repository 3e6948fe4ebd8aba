"""A newcomer's first hour on a fresh render: only the README's commands, in its order, reach production.

No shared virtualenv here: `make install` builds the project's own `.venv` (from the warm uv cache) and makes
the folder a git repository, as it does for a person who has just run `cookiecutter`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import render

pytestmark = pytest.mark.e2e

# Variables of the template's own test run that a newcomer's shell would not have.
FOREIGN = ("VENV", "PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")


def newcomer_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in FOREIGN and not name.startswith(("MLFLOW_", "CI_", "GITHUB_", "TF_", "JENKINS_"))
    }
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def readme_commands(project: Path, heading: str) -> list[list[str]]:
    """The commands of the first bash block under `heading`, comments dropped."""
    text = (project / "README.md").read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, f"no bash block under {heading!r}"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def sh(project: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=project, env=newcomer_env(), capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """Render, `make install` as the README's first line says, then the first release by hand."""
    project = render(tmp_path_factory.mktemp("newcomer"))
    ran = []
    install = readme_commands(project, "## Start here")[0]
    assert install == ["make", "install"]
    for command in [install, *readme_commands(project, "### Your first release")]:
        result = sh(project, command)
        ran.append((command, result))
        if result.returncode != 0:
            output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            pytest.fail(f"{shlex.join(command)} exited {result.returncode}\n{output}")
    return project, ran


def test_the_readme_commands_alone_reach_production(newcomer):
    project, ran = newcomer
    assert (project / ".venv" / "bin" / "python").exists()
    assert "Initialised a git repository" in ran[0][1].stdout
    pinned = sh(project, ["make", "--silent", "pinned", "ENV=production"])
    assert pinned.stdout.strip() == "1", pinned.stderr
    versions = ran[-1][1].stdout
    assert re.search(r"^1\s+production\s+production,staging\s+passed", versions, re.MULTILINE), versions
    # nothing the flow wrote is left uncommitted: the next training is releasable too
    assert sh(project, ["git", "status", "--porcelain"]).stdout == ""


def test_help_lists_the_targets_by_section(newcomer):
    project, _ = newcomer
    shown = re.sub(r"\x1b\[[0-9;]*m", "", sh(project, ["make", "help"]).stdout)
    headers = [line.split(" (")[0] for line in shown.splitlines() if line and not line.startswith(" ")]
    assert headers == [
        "Setup",
        "Checks",
        "Data and training",
        "Release",
        "Production",
        "Template updates",
        "Benchmarks",
        "Local flow",
    ]
    assert "  versions " in shown


def test_each_step_names_the_next_one(newcomer):
    _, ran = newcomer
    outputs = {shlex.join(command): result.stdout for command, result in ran}
    assert "Next: make backtest VERSION=1" in outputs["make data data-test train"]
    assert "Next: make promote VERSION=1 ENV=production" in outputs["make promote VERSION=1 ENV=staging APPROVER=alice"]


@pytest.mark.parametrize(
    ("command", "fix"),
    [
        (["make", "backtest", "VERSION=7"], "has no version 7: list them with `make versions`"),
        (["make", "backtest"], "VERSION is required. Usage: make backtest VERSION=N"),
        (["make", "pinned"], "ENV is required. Usage: make pinned ENV=staging|production"),
        (["make", "promote", "VERSION=1"], "ENV is required. Usage: make promote"),
        (["make", "promote", "VERSION=1", "ENV=staging"], "an approver is required"),
        (["make", "serve", "VERSION=1", "PORT=http"], "PORT='http' is not a TCP port"),
    ],
)
def test_common_mistakes_end_in_one_line_with_the_fix(newcomer, command, fix):
    project, _ = newcomer
    result = sh(project, command)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    own = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(own) == 1 and fix in own[0], result.stderr


def test_a_change_left_uncommitted_is_named_before_training_starts(newcomer):
    project, _ = newcomer
    (project / "config" / "train.toml").write_text((project / "config" / "train.toml").read_text() + "\n")
    try:
        result = sh(project, ["make", "train"])
    finally:
        sh(project, ["git", "checkout", "--", "config/train.toml"])
    assert result.returncode == 0, result.stderr
    assert "cannot reach production: uncommitted changes in config/train.toml" in result.stderr
    assert "WARNING mlflow" not in result.stderr and "Traceback" not in result.stderr


def test_install_without_the_chosen_python_stops_in_one_line_and_leaves_no_virtualenv(tmp_path):
    # given a project rendered for Python 3.12 on a machine whose only python3 is another version
    project = render(tmp_path, python_version="3.12")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")  # the suite's own: 3.11
    (tools / "rm").symlink_to(shutil.which("rm"))
    # when
    result = subprocess.run(
        [shutil.which("make"), "install"],
        cwd=project,
        env={**newcomer_env(), "PATH": str(tools)},
        capture_output=True,
        text=True,
        check=False,
    )
    # then
    assert result.returncode != 0
    own = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(own) == 1 and "install: Python 3.12 (this project's python_version) is not installed" in own[0]
    assert not (project / ".venv").exists()
