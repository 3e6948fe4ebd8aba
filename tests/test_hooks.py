"""The pre-generation hook refuses bad answers with one clear line and leaves nothing behind."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest

from conftest import TEMPLATE, VENV, render


def load_hook(name: str) -> ModuleType:
    """Import a hook as a module: its Jinja sits only under `__main__`, so the functions import as-is."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pre_gen = load_hook("pre_gen_project")
CHOICE_FIELDS = {"python_version", "ci_provider"}
post_gen = load_hook("post_gen_project")

# (field, bad value, words the message must contain)
BAD_ANSWERS = [
    ("project_name", "", "must not be empty"),
    ("project_name", 'Sales "Forecast"', "must not contain quotes"),
    ("project_name", "x" * 61, "at most 60 characters"),
    ("project_slug", "Demand-Forecast", "lowercase letters, digits and single hyphens"),
    ("project_slug", "demand--forecast", "single hyphens"),
    ("project_slug", "9lives", "starting with a letter"),
    ("project_slug", "a" * 41, "at most 40 characters"),
    ("package_name", "demand-forecast", "lowercase letters, digits and underscores"),
    ("package_name", "class", "Python keyword"),
    ("package_name", "json", "must not shadow"),
    ("package_name", "mlflow", "must not shadow"),
    ("description", "line one\nline two", "control characters"),
    ("description", "costs ${HOME}", "'${'"),
    ("description", "$(rm -rf /)", "'$('"),
    ("author_name", "Eve`whoami`", "backticks"),
    ("author_email", "not-an-email", "name@example.com"),
    ("author_email", "a@b", "name@example.com"),
    ("python_version", "2.7", "must be one of 3.11, 3.12"),
    ("ci_provider", "circleci", "must be one of github, azure, jenkins"),
    ("git_repo_url", "http://github.com/acme/x", "https:// or ssh://git@"),
    ("git_repo_url", "https://github.com/acme/x; rm -rf /", "https:// or ssh://git@"),
    ("default_branch", "feature..x", "valid git branch name"),
    ("default_branch", "-main", "valid git branch name"),
    ("container_registry", "https://ghcr.io/acme", "no scheme"),
    ("container_registry", "ghcr.io/Acme", "lowercase"),
    ("k8s_namespace", "Demand_NS", "DNS-1123 label"),
    ("k8s_namespace", "demand-", "DNS-1123 label"),
    ("model_name", "demand.model", "DNS-1123 label"),
    ("mlflow_tracking_uri", "file:///tmp/mlruns", "sqlite:///<file>.db"),
    ("mlflow_tracking_uri", "sqlite:///x.db; import os", "sqlite:///<file>.db"),
]


@pytest.mark.parametrize(("field", "value", "words"), BAD_ANSWERS, ids=lambda v: str(v)[:24])
def test_validator_names_field_value_and_rule(field, value, words):
    # given the defaults a user would get, with one bad answer
    answers = {**DEFAULTS, field: value}
    # when
    errors = pre_gen.validate(answers)
    # then
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"ERROR: {field}={value!r} is invalid:")
    assert words in errors[0]


DEFAULTS = {
    "project_name": "Demand Forecast",
    "project_slug": "demand-forecast",
    "package_name": "demand_forecast",
    "description": "Weekly demand forecasting per store and product category.",
    "author_name": "Platform Team",
    "author_email": "ml-platform@example.com",
    "python_version": "3.11",
    "ci_provider": "github",
    "git_repo_url": "https://github.com/acme/demand-forecast",
    "default_branch": "main",
    "container_registry": "ghcr.io/acme",
    "k8s_namespace": "demand-forecast",
    "model_name": "demand-forecast-model",
    "mlflow_tracking_uri": "sqlite:///mlflow.db",
}


def test_defaults_are_valid():
    assert pre_gen.validate(DEFAULTS) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("container_registry", "myacr.azurecr.io"),
        ("container_registry", "localhost:5000/team"),
        ("mlflow_tracking_uri", "http://127.0.0.1:5000"),
        ("mlflow_tracking_uri", "databricks"),
        ("git_repo_url", "ssh://git@github.com/acme/demand-forecast.git"),
        ("default_branch", "release/2026"),
    ],
)
def test_validator_accepts_real_world_answers(field, value):
    assert pre_gen.validate({**DEFAULTS, field: value}) == []


def test_validator_refuses_jinja_that_cookiecutter_would_not_have_rendered():
    # cookiecutter renders answers given on the command line; a hook can still receive them via replay files
    errors = pre_gen.validate({**DEFAULTS, "description": "{{ cookiecutter.x }}"})
    assert errors and "'{{'" in errors[0]


def test_every_bad_answer_is_reported_at_once():
    errors = pre_gen.validate({**DEFAULTS, "project_slug": "X", "author_email": "nope"})
    assert [e.split("=")[0] for e in errors] == ["ERROR: project_slug", "ERROR: author_email"]


@pytest.mark.parametrize(("field", "value", "words"), BAD_ANSWERS, ids=lambda v: str(v)[:24])
def test_cookiecutter_refuses_bad_answer_and_leaves_no_folder(tmp_path, field, value, words):
    # when a user renders with one bad answer (the slug pinned, since it derives from the name)
    result = subprocess.run(
        [
            str(VENV / "bin" / "cookiecutter"),
            *(str(TEMPLATE), "--no-input", "-o", str(tmp_path), f"{field}={value}"),
            *(["project_slug=demand-forecast"] if field == "project_name" else []),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # then it fails naming the field and rule, and writes nothing
    assert result.returncode != 0
    if field in CHOICE_FIELDS:  # cookiecutter itself refuses values outside a choice list
        assert f"{value} provided for choice variable {field}" in result.stderr
    else:
        assert f"ERROR: {field}=" in result.stderr
        assert words in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("provider", ["github", "azure", "jenkins"])
def test_post_gen_hook_is_idempotent(tmp_path, provider):
    # given a rendered project, pruned once by the real hook
    project = render(tmp_path, ci_provider=provider)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    # when cruft re-runs the hook
    post_gen.main(provider, project)
    # then nothing changes and nothing fails
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


def test_hook_runs_with_the_standard_library_only():
    for hook in (TEMPLATE / "hooks").glob("*.py"):
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", f"import ast; ast.parse(open({str(hook)!r}).read())"],
            capture_output=True,
            check=False,
        )
        assert result.returncode == 0
        imported = {
            line.split()[1].split(".")[0]
            for line in hook.read_text().splitlines()
            if line.startswith(("import ", "from "))
        }
        assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
