"""One source, two engines: copier renders the same project as cookiecutter from the same template files."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from test_render import MATRIX

from conftest import TEMPLATE, VENV, render, run

COPIER = str(VENV / "bin" / "copier")
COPIER_CONFIG = yaml.safe_load((TEMPLATE / "copier.yml").read_text())
COOKIECUTTER_CONFIG = json.loads((TEMPLATE / "cookiecutter.json").read_text())
ANSWERS_FILE = COPIER_CONFIG["_answers_file"]


def copier_copy(destination: Path, *options: str, check: bool = True, **answers: str):
    """`copier copy` of the template's working tree with defaults plus `answers` (HEAD and uncommitted changes:
    without --vcs-ref, copier would copy the newest release tag)."""
    data = [f"--data={field}={value}" for field, value in answers.items()]
    args = [COPIER, "copy", "--trust", "--defaults", "--quiet", "--vcs-ref", "HEAD", *options, *data]
    args += [str(TEMPLATE), str(destination)]
    return run(args, destination.parent, check=check)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and permission bits."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def questions() -> list[str]:
    return [name for name, spec in COPIER_CONFIG.items() if not name.startswith("_") and spec.get("when") is not False]


def test_copier_asks_the_questions_of_cookiecutter_json_with_the_same_defaults_and_help():
    asked = [name for name in COOKIECUTTER_CONFIG if not name.startswith("_")]
    assert questions() == asked
    prompts = COOKIECUTTER_CONFIG["__prompts__"]
    for name in asked:
        spec, default = COPIER_CONFIG[name], COOKIECUTTER_CONFIG[name]
        if isinstance(default, list):  # a cookiecutter choice: the first is the default, each has a label
            labels = {value: label for value, label in prompts[name].items() if value != "__prompt__"}
            assert spec["choices"] == {labels[value]: value for value in default}, name
            assert (spec["default"], spec["help"]) == (default[0], prompts[name]["__prompt__"]), name
        else:
            assert spec["default"] == default.replace("cookiecutter.", ""), name
            assert spec["help"] == prompts[name], name


def test_an_update_skips_exactly_what_cruft_skips(tmp_path):
    # given the files copier leaves out of an update, rendered as copier renders them
    patterns = "\n".join(COPIER_CONFIG["_exclude"]).replace("{% if _copier_operation == 'update' %}", "")
    excluded_on_update = patterns.replace("{% endif %}", "").split()
    # then they are the release state and policy cruft's skip list keeps
    pyproject = tomllib.loads((render(tmp_path) / "pyproject.toml").read_text())
    assert excluded_on_update == pyproject["tool"]["cruft"]["skip"]


@pytest.mark.parametrize("row", list(MATRIX))
def test_both_engines_render_the_same_tree(row, tmp_path):
    # given the same answers
    answers, _ = MATRIX[row]
    by_cookiecutter = tree(render(tmp_path / "cookiecutter", **answers))
    # when copier renders them from the same sources
    copier_copy(tmp_path / "copier", **answers)
    by_copier = tree(tmp_path / "copier")
    # then the trees are identical, apart from copier's answers file, which records the answers
    recorded = yaml.safe_load(by_copier.pop(ANSWERS_FILE)[0])
    assert by_copier.keys() == by_cookiecutter.keys()
    assert [path for path in by_copier if by_copier[path] != by_cookiecutter[path]] == []
    assert {field: recorded[field] for field in answers} == answers


def test_copier_refuses_bad_answers_with_the_hook_s_lines_and_leaves_nothing(tmp_path):
    # when a user copies with two bad answers
    result = copier_copy(tmp_path / "project", check=False, project_slug="Bad_Slug", author_email="nope")
    # then the same validator as cookiecutter's names each, says what to do, and nothing is left behind
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(("ERROR", "Nothing"))]
    assert lines == [
        "ERROR: project_slug='Bad_Slug' is invalid: use lowercase letters, digits and single hyphens, "
        "starting with a letter (e.g. demand-forecast).",
        "ERROR: author_email='nope' is invalid: must look like name@example.com.",
        "Nothing was generated: fix the 2 answers above and run copier again.",
    ]
    assert not (tmp_path / "project").exists()


def test_copier_without_trust_refuses_before_writing(tmp_path):
    # the validation and pruning run as tasks: copier will not skip them silently
    args = [COPIER, "copy", "--defaults", "--quiet", str(TEMPLATE), str(tmp_path / "project")]
    result = run(args, tmp_path, check=False)
    assert result.returncode != 0
    assert "--trust" in result.stderr
    assert not (tmp_path / "project").exists()


def test_a_copier_copy_prints_the_next_steps_of_the_readme(tmp_path):
    result = copier_copy(tmp_path / "project")
    assert re.search(r"^Next steps:\n  cd .*project\n  make install", result.stdout, re.MULTILINE)
