"""Every option combination renders a complete, clean, lint-free project whose own tests pass."""

from __future__ import annotations

import py_compile
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_PACKAGE, TEMPLATE, VENV, make, render, run
from expected_files import expected_files

# One row per combination: the answers, and the package name they should produce.
MATRIX = {
    "github": ({"ci_provider": "github"}, DEFAULT_PACKAGE),
    "azure": ({"ci_provider": "azure"}, DEFAULT_PACKAGE),
    "jenkins": ({"ci_provider": "jenkins"}, DEFAULT_PACKAGE),
    "py312-custom-names": (
        {
            "python_version": "3.12",
            "project_name": "Store Sales",
            "package_name": "store_sales_ml",
            "model_name": "store-sales",
            "container_registry": "myacr.azurecr.io/retail",
        },
        "store_sales_ml",
    ),
}
# Jinja left in a rendered file; GitHub's own `${{ }}` expressions are meant to stay.
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{|\{%|%\}")


@pytest.fixture(scope="module", params=list(MATRIX))
def rendered(request, tmp_path_factory, installed_project) -> tuple[Path, dict[str, str], str]:
    """A render per matrix row; `installed_project` puts the rendered dependencies into the shared venv."""
    answers, package = MATRIX[request.param]
    return render(tmp_path_factory.mktemp(request.param), **answers), answers, package


def files_of(project: Path) -> set[str]:
    return {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}


def test_renders_exactly_the_expected_files(rendered):
    project, answers, package = rendered
    assert files_of(project) == expected_files(answers.get("ci_provider", "github"), package)


def test_no_template_syntax_is_left(rendered):
    project, _, _ = rendered
    leftovers = [
        f"{path}:{number}: {line.strip()}"
        for path in sorted(project.rglob("*"))
        if path.is_file()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if LEFTOVER_JINJA.search(line)
    ]
    assert leftovers == []


def test_every_yaml_and_toml_file_parses(rendered):
    project, _, _ = rendered
    for path in [*project.rglob("*.yml"), *project.rglob("*.yaml")]:
        assert list(yaml.safe_load_all(path.read_text())) is not None, path
    for path in project.rglob("*.toml"):
        tomllib.loads(path.read_text())


def test_every_python_file_compiles(rendered):
    project, _, _ = rendered
    for path in project.rglob("*.py"):
        py_compile.compile(str(path), doraise=True, cfile=str(path.with_suffix(".pyc-check")))
        path.with_suffix(".pyc-check").unlink()


def test_lint_and_format_check_pass(rendered):
    project, _, _ = rendered
    make(project, "lint")


def test_answers_reach_the_rendered_files(rendered):
    project, answers, package = rendered
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {package: f"{package}.cli:main"}
    assert pyproject["project"]["requires-python"] == f">={answers.get('python_version', '3.11')}"


# The Python code differs only by package name and Python version, not by CI provider: run the rendered
# suite (about a minute each) once per Python variant.
PYTHON_VARIANTS = ["github", "py312-custom-names"]


@pytest.mark.e2e
@pytest.mark.parametrize("row", PYTHON_VARIANTS)
def test_rendered_test_suite_passes(row, tmp_path, installed_project):
    answers, _ = MATRIX[row]
    make(render(tmp_path, **answers), "test")


def test_security_scan_passes(rendered):
    project, _, _ = rendered
    make(project, "security")


def test_cruft_create_works_on_a_local_checkout(tmp_path):
    # given a git checkout of the template (cruft records its commit)
    checkout = tmp_path / "template"
    subprocess.run(["git", "clone", "--quiet", str(TEMPLATE), str(checkout)], check=True)
    # when
    out = tmp_path / "out"
    cruft = str(VENV / "bin" / "cruft")
    run([cruft, "create", "--no-input", "--output-dir", str(out), str(checkout)], tmp_path)
    # then the project carries cruft's record of the template, so `cruft update` can follow it
    project = out / "demand-forecast"
    assert (project / ".cruft.json").is_file()
    assert (project / "Makefile").is_file()
