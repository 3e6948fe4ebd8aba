"""Shared fixtures: render the template into temporary folders and run rendered projects' commands."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
DEFAULT_SLUG = "demand-forecast"
DEFAULT_PACKAGE = "demand_forecast"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with an end-to-end flow first. `make test` hands whole modules to its workers in this order
    (`--dist loadfile --no-loadscope-reorder`), so the long flows start at once and the many quick modules fill
    the gaps, instead of one worker finishing a long flow alone at the end while the other idles."""
    with_flows = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in with_flows)  # a stable sort: each module keeps its order


def render(output_dir: Path, **answers: str) -> Path:
    """Render the template with defaults plus `answers`; return the project folder."""
    return Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(output_dir)))


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """Environment for a rendered project's commands: the shared venv, its own source first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CI_"))}
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env['PATH']}",
        VENV=str(VENV),
        PYTHONPATH=str(project / "src"),
        OMP_NUM_THREADS="1",
        PYTHONHASHSEED="0",
    )
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command in a rendered project with the shared venv; show its output when it fails."""
    result = subprocess.run(args, cwd=cwd, env=project_env(cwd, **env), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def make(project: Path, *targets: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `make <targets>` in a rendered project with the shared venv."""
    return run(["make", "--no-print-directory", *targets, f"VENV={VENV}"], project, check=check, **env)


def install_into_shared_venv(project: Path, extras: str) -> None:
    """Install a render (editable, with `extras`) into the shared venv. xdist workers share the venv, so the
    lock keeps two of them from installing into it at once."""
    with (VENV / ".installed_project.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            [
                str(VENV / "bin" / "uv"),
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",  # every later process reads bytecode instead of compiling MLflow & co. again
                "--python",
                sys.executable,
                "-e",
                f"{project}[{extras}]",
            ],
            check=True,
        )


@pytest.fixture(scope="session")
def installed_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One default project, installed (editable, with dev extras) into the shared venv, once per xdist worker."""
    project = render(tmp_path_factory.mktemp("installed"))
    install_into_shared_venv(project, "dev,monitor,spark")  # spark: the hook test reads its modules too
    yield project


def use_rendered_package(project: Path) -> None:
    """Import the package from this render's src/ in the test process (its dependencies come with the
    `installed_project` fixture; an editable install made after the interpreter started is not on sys.path)."""
    for name in [name for name in sys.modules if name.split(".")[0] == DEFAULT_PACKAGE]:
        del sys.modules[name]
    sys.path.insert(0, str(project / "src"))


TOOLS = TEMPLATE / ".tools"


def tool(name: str) -> str:
    """Path of a validator from the template's tools virtualenv (see requirements/validators.txt)."""
    path = TOOLS / "venv" / "bin" / name
    assert path.exists(), f"{name} is missing: run `make venv` to install the validators"
    return str(path)
