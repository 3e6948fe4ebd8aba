"""The pre-generation hook refuses bad answers with one clear line and leaves nothing behind."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config

import dependency_modules
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
    ("default_branch", "true", "must not read as a YAML boolean"),
    ("default_branch", "release//x", "'//'"),
    ("default_branch", "main\n", "one line without control characters"),
    ("package_name", "scipy", "module of the project's dependencies"),
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
        ("default_branch", "release/2024.1"),
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


def cookiecutter_cli(output_dir: Path, *answers: str) -> subprocess.CompletedProcess[str]:
    """Render with cookiecutter's own command line, as a user does."""
    return subprocess.run(
        [str(VENV / "bin" / "cookiecutter"), str(TEMPLATE), "--no-input", "-o", str(output_dir), *answers],
        capture_output=True,
        text=True,
        check=False,
    )


# (answers given, fields the errors must name): a bad source is named once, not again through its defaults
CASCADES = [
    (["project_slug=Bad_Slug"], ["project_slug"]),
    (['project_name=Bad "Name"'], ["project_name"]),
    (["project_name=9 Lives"], ["project_slug"]),
    (["project_slug=Bad_Slug", "package_name=class"], ["project_slug", "package_name"]),
    (["project_slug=Bad_Slug", "model_name=Bad_Slug-v2"], ["project_slug", "model_name"]),
]


@pytest.mark.parametrize(("answers", "fields"), CASCADES, ids=lambda v: " ".join(v)[:40])
def test_a_bad_source_answer_is_reported_once_not_through_the_answers_derived_from_it(tmp_path, answers, fields):
    # when a user renders with a bad answer that other defaults derive from
    result = cookiecutter_cli(tmp_path, *answers)
    # then only that answer, and derived answers the user changed and got wrong too, are named
    assert result.returncode != 0
    named = [line.split("=")[0].removeprefix("ERROR: ") for line in result.stderr.splitlines() if "=" in line]
    assert named == fields


@pytest.mark.parametrize("name", ["Demand Forecast", "  Store_Sales Weekly ", 'Bad "Name"', "9 Lives"])
def test_derivations_in_the_hook_are_the_defaults_of_cookiecutter_json(name):
    # given the defaults cookiecutter itself derives for a project name
    context = generate_context(TEMPLATE / "cookiecutter.json", extra_context={"project_name": name})
    answers = prompt_for_config(context, no_input=True)
    raw = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    # then the hook knows every derived default and derives each the same way
    assert {field for field, value in raw.items() if "{{" in str(value)} == set(pre_gen.DERIVED)
    for field, (source, derive) in pre_gen.DERIVED.items():
        assert answers[field] == derive(answers[source]), field


def test_bad_answers_print_one_block_naming_each_and_the_fix(tmp_path):
    # when a user renders with two bad answers
    result = cookiecutter_cli(tmp_path, "project_slug=Bad_Slug", "author_email=nope")
    # then stderr is one block: a line per answer with the rule to follow, then what to do; the exit is non-zero
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "ERROR: project_slug='Bad_Slug' is invalid: use lowercase letters, digits and single hyphens, "
        "starting with a letter (e.g. demand-forecast).",
        "ERROR: author_email='nope' is invalid: must look like name@example.com.",
        "Nothing was generated: fix the 2 answers above and run cookiecutter again.",
    ]
    # cookiecutter's own report (with a traceback it logs for every failing hook) goes to stdout, after the block
    assert "Hook script failed (exit status: 1)" in result.stdout


def test_a_good_render_prints_the_first_commands_of_its_readme(tmp_path):
    # when a user renders with valid answers
    result = cookiecutter_cli(tmp_path)
    project = tmp_path / "demand-forecast"
    # then cookiecutter prints where to go and what to run first, as the README's "Start here" shows it
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Next steps:", f"  cd {project}"]
    commands = [line.split("#")[0].strip() for line in lines[2:-1]]
    assert commands[:2] == ["make install", "make demo"]
    readme = (project / "README.md").read_text()
    assert all(line.strip() in readme for line in lines[2:-1])
    assert "docs/" in lines[-1]
    # and the hooks left no git repository behind (`make install` makes one)
    assert not (project / ".git").exists()


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


# Line breaks and other control characters: `$` matched before a trailing "\n", so values rendered broken.
CONTROL_SUFFIXES = ["\n", "\r\n", "\r", "\t", "\x0b", "\x00", "\x85", "\u2028"]


@pytest.mark.parametrize("suffix", CONTROL_SUFFIXES, ids=repr)
@pytest.mark.parametrize("field", list(pre_gen.RULES))
def test_every_field_refuses_a_trailing_line_break_or_control_character(field, suffix):
    value = DEFAULTS[field] + suffix
    errors = pre_gen.validate({**DEFAULTS, field: value})
    assert errors == [
        f"ERROR: {field}={value!r} is invalid: must be one line without control characters (a trailing newline counts)."
    ]


@pytest.mark.parametrize("field", ["default_branch", "mlflow_tracking_uri", "k8s_namespace"])
def test_cookiecutter_refuses_a_trailing_newline_and_leaves_no_folder(tmp_path, field):
    result = subprocess.run(
        [str(VENV / "bin" / "cookiecutter"), str(TEMPLATE), "--no-input", "-o", str(tmp_path), f"{field}=x1\n"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert f"ERROR: {field}='x1\\n' is invalid: must be one line" in result.stderr
    assert list(tmp_path.iterdir()) == []


# (bad branch, words naming the rule): git's own rules first, then what YAML would not read as a string
BAD_BRANCHES = [
    ("true", "YAML boolean, null, number or date"),
    ("123", "YAML boolean, null, number or date"),
    ("release//x", "must not start or end with '/' or contain '//'"),
    ("feature.lock", "may end with '.lock'"),
    ("a b", "must not contain spaces"),
    ("x@{y}", "must not contain '@{'"),
    ("feature/x.lock/y", "may end with '.lock'"),
    ("feature/.hidden", "may start with '.'"),
    ("/main", "'//'"),
    ("main/", "'//'"),
    ("main.", "must not end with '.'"),
    ("@", "must not be '@'"),
    ("HEAD", "must not be HEAD"),
    ("a~1", "~^:?*[\\"),
    ("a^1", "~^:?*[\\"),
    ("fix:x", "~^:?*[\\"),
    ("what?", "~^:?*[\\"),
    ("glob*", "~^:?*[\\"),
    ("a[1]", "~^:?*[\\"),
    ("a\\b", "~^:?*[\\"),
    ("a,b", "only letters, digits"),
    ('a"b', "only letters, digits"),
    ("_main", "start with a letter or digit"),
    ("yes", "YAML boolean"),
    ("No", "YAML boolean"),
    ("ON", "YAML boolean"),
    ("off", "YAML boolean"),
    ("y", "YAML boolean"),
    ("null", "YAML boolean, null"),
    ("1e3", "number"),
    ("0x1f", "number"),
    ("0o17", "number"),
    ("0b101", "number"),
    ("1_000", "number"),
    ("2024.1", "number"),
    ("1.2.3", "number"),
    ("2024-01-01", "date"),
]


@pytest.mark.parametrize(("value", "words"), BAD_BRANCHES)
def test_default_branch_follows_git_rules_and_reads_as_a_yaml_string(value, words):
    errors = pre_gen.validate({**DEFAULTS, "default_branch": value})
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"ERROR: default_branch={value!r} is invalid:")
    assert words in errors[0]


# Plain scalars that look odd but every YAML reads as strings, and git accepts.
GOOD_BRANCHES = ["main", "release/2024.1", "release/2026", "v1.2.x", "1.x", "2024-01-01/hotfix", "feature/JIRA-1_a"]


@pytest.mark.parametrize("value", GOOD_BRANCHES)
def test_default_branch_accepts_git_branches_yaml_reads_as_strings(value):
    assert pre_gen.validate({**DEFAULTS, "default_branch": value}) == []
    git = subprocess.run(["git", "check-ref-format", "--branch", value], capture_output=True, check=False)
    assert git.returncode == 0
    assert yaml.safe_load(f"branches: [{value}]\nbranch: {value}") == {"branches": [value], "branch": value}


def test_every_branch_pyyaml_reads_as_a_non_string_is_refused():
    candidates = [v for v, _ in BAD_BRANCHES] + ["TRUE", "Off", "NULL", "~", "12", "-1", "+1", "1.5", ".5", "1:20", "0"]
    non_strings = []
    for value in candidates:
        try:
            if yaml.safe_load(f"branches: [{value}]")["branches"] != [value]:
                non_strings.append(value)
        except yaml.YAMLError:
            non_strings.append(value)
    assert len(non_strings) > 10  # PyYAML (YAML 1.1) is one reader; the hook also covers YAML 1.2's forms
    assert [v for v in non_strings if not pre_gen.validate({**DEFAULTS, "default_branch": v})] == []


def strings_in(data: object) -> set[str]:
    if isinstance(data, dict):
        return set().union(*map(strings_in, data.values()))
    if isinstance(data, list):
        return set().union(*map(strings_in, data))
    return {data} if isinstance(data, str) else set()


@pytest.mark.parametrize("provider", ["github", "azure", "jenkins"])
def test_a_hostile_but_valid_branch_renders_as_a_string_everywhere(tmp_path, provider):
    # given a branch YAML 1.1 would read as a float if it were alone (2024.1) behind a slash
    branch = "release/2024.1"
    project = render(tmp_path, ci_provider=provider, default_branch=branch)
    # then every YAML file that names it reads it as that exact string
    yaml_files = [p for p in [*project.rglob("*.yml"), *project.rglob("*.yaml")] if branch in p.read_text()]
    assert any("flux" in str(p) for p in yaml_files)
    for path in yaml_files:
        documents = list(yaml.safe_load_all(path.read_text()))
        assert branch in set().union(*map(strings_in, documents)), path
    # and the Python and Groovy that name it compile it as a string literal
    package = next((project / "src").iterdir())
    assert f'DEFAULT_BRANCH = "{branch}"' in (package / "gitops.py").read_text()
    compile((package / "gitops.py").read_text(), "gitops.py", "exec")
    if provider == "jenkins":
        assert f"branch '{branch}'" in (project / "Jenkinsfile").read_text()


SHADOWING_PACKAGES = ["scipy", "yaml", "matplotlib", "pytest", "sqlalchemy", "great_expectations", "sklearn", "mlflow"]


@pytest.mark.parametrize("value", SHADOWING_PACKAGES)
def test_package_name_refuses_dependency_modules(value):
    errors = pre_gen.validate({**DEFAULTS, "package_name": value})
    assert errors == [
        f"ERROR: package_name={value!r} is invalid: "
        "must not shadow a module of the project's dependencies; pick a product-specific name."
    ]


@pytest.mark.parametrize("value", ["test", "tests", "src"])
def test_package_name_refuses_the_project_folder_names(value):
    errors = pre_gen.validate({**DEFAULTS, "package_name": value})
    assert errors == [
        f"ERROR: package_name={value!r} is invalid: must not be test, tests or src, the project's folder names."
    ]


@pytest.mark.parametrize("value", ["demand_forecast", "store_sales_ml", "forecast", "churn2"])
def test_package_name_accepts_product_names(value):
    assert pre_gen.validate({**DEFAULTS, "package_name": value}) == []


def test_hook_refuses_every_module_of_the_rendered_dependencies(installed_project):
    # given the top-level modules of the rendered project's dependency closure, as installed in this venv
    derived = dependency_modules.dependency_modules(installed_project / "pyproject.toml")
    assert set(SHADOWING_PACKAGES) <= derived  # the derivation sees the closure, not just the direct names
    # then the hook's embedded list holds them all
    missing = sorted(derived - pre_gen.DEPENDENCY_MODULES)
    assert not missing, (
        f"DEPENDENCY_MODULES in hooks/pre_gen_project.py misses {missing}; paste this over it:\n"
        + dependency_modules.as_constant(derived | pre_gen.DEPENDENCY_MODULES)
    )


@pytest.mark.parametrize("provider", ["github", "azure", "jenkins"])
def test_post_gen_hook_is_idempotent(tmp_path, capsys, provider):
    # given a rendered project, pruned once by the real hook
    project = render(tmp_path, ci_provider=provider)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    capsys.readouterr()
    # when cruft re-runs the hook (cruft sets no _output_dir)
    post_gen.main({"ci_provider": provider, "_template": str(TEMPLATE)}, project)
    # then nothing changes, nothing fails, and no next steps point into cruft's temporary folder
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert capsys.readouterr().out == ""


def test_hooks_and_migrations_run_with_the_standard_library_only():
    # both run under whatever Python runs cookiecutter, cruft or copier
    for hook in [*(TEMPLATE / "hooks").glob("*.py"), *(TEMPLATE / "migrations").glob("*.py")]:
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
