"""No value a person or CI passes to `make` runs as code, and each bad value is refused in one line.

Values go on make's command line (as a person types them) and through the environment (as CI passes them).
A marker file appears if any shell or make expansion ever executes part of a value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make, render

MARKER = "PWNED"
# One value carrying every way in (shell backticks, make's $(shell), a newline): if any part ever runs, the
# marker appears. The release gate also gets each way on its own.
EVERY_WAY_IN = f"1`touch {MARKER}`$(shell touch {MARKER})\n\ttouch {MARKER}"
HOSTILE_FOR_THE_GATE = [
    EVERY_WAY_IN,
    f"dave`touch {MARKER}`",
    f"$(shell touch {MARKER})",
    f"1; touch {MARKER}",
    f"$$(touch {MARKER})",
    f"1\n\ttouch {MARKER}",
    f"'; touch {MARKER}; echo '",
]
# target, the variable it reads, the other variables it needs
TARGETS = [
    ("promote", "APPROVER", {"VERSION": "1", "ENV": "staging"}),
    ("promote", "VERSION", {"ENV": "staging", "APPROVER": "dave"}),
    ("promote", "ENV", {"VERSION": "1", "APPROVER": "dave"}),
    ("rollback", "ENV", {"APPROVER": "dave"}),
    ("rollback", "APPROVER", {"ENV": "production"}),
    ("backtest", "VERSION", {}),
    ("lineage", "VERSION", {}),
    ("evidence", "VERSION", {}),
    ("reproduce", "VERSION", {}),
    ("image", "VERSION", {}),
    ("serve", "PORT", {"VERSION": "1"}),
    ("train", "CONFIG", {}),
    ("pinned", "ENV", {}),
    ("release-pr", "ENV", {}),
    ("backtest-cluster", "VERSION", {}),
    ("data", "SCENARIOS", {}),
    ("train-scenarios", "ENGINE", {}),
    ("lineage", "SCENARIO", {}),
    ("bench-scenarios", "N", {}),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory, installed_project) -> Path:
    return render(tmp_path_factory.mktemp("injection"))


def marker_created(project: Path) -> bool:
    return any(project.rglob(MARKER)) or Path(MARKER).exists()


@pytest.mark.parametrize(("target", "variable", "others"), TARGETS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("channel", ["command line", "environment"])
def test_hostile_values_never_run_and_are_refused(project, target, variable, others, channel):
    for value in HOSTILE_FOR_THE_GATE if (target, variable) == ("promote", "APPROVER") else [EVERY_WAY_IN]:
        # when the value arrives the way a person (command line) or CI (environment) passes it
        assignments = {**others, variable: value}
        if channel == "command line":
            result = make(project, target, *(f"{k}={v}" for k, v in assignments.items()), check=False)
        else:
            result = make(project, target, check=False, **assignments)
        # then nothing ran, the command failed, and it said why without a traceback
        assert not marker_created(project), (target, variable, value, result.stdout, result.stderr)
        assert result.returncode != 0, (target, variable, value)
        assert "Traceback" not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1\n", "VERSION='1\\n' is not a registry version number"),
        ("\uff11", "is not a registry version number"),  # a fullwidth digit one
        ("", "VERSION is required"),
        ("1" * 5000, "is not a registry version number"),
        ("-1", "is not a registry version number"),
    ],
    ids=["trailing newline", "look-alike digit", "empty", "huge", "negative"],
)
def test_each_bad_version_gets_one_line_naming_it(project, value, message):
    result = make(project, "backtest", check=False, VERSION=value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and message in lines[0], result.stderr  # the CLI's line, then make's own


def test_an_approver_typed_inside_ci_is_refused(project):
    # given a CI job where someone passes APPROVER instead of letting the gate name the reviewer
    result = make(
        project,
        "promote",
        check=False,
        VERSION="1",
        ENV="staging",
        APPROVER="mallory",
        JENKINS_URL="https://ci.example",
        RELEASE_ENVIRONMENT="staging",
        APPROVED_BY="dave",
    )
    assert result.returncode != 0
    assert "APPROVER is set inside CI" in result.stderr
