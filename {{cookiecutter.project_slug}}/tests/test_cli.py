"""The CLI is what CI runs and what a newcomer types: every mistake gets one line with its fix."""

import json
import shutil

import pytest

from conftest import new_version, open_registry
from {{ cookiecutter.package_name }}.cli import main


def test_settings_prints_the_model_name_and_tracking_store(capsys, monkeypatch):
    # given an empty variable (as CI systems pass unset secrets) and a set one
    monkeypatch.setenv("MODEL_NAME", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    # when
    code = main(["settings"])
    # then
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["model_name"] == "{{ cookiecutter.model_name }}"
    assert printed["tracking_uri"] == "sqlite:///elsewhere.db"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["promote"], {"VERSION": "1\n", "ENV": "staging"}, "VERSION='1\\n' is not a registry version"),
        (["promote"], {"VERSION": "1", "ENV": "Staging"}, "ENV='Staging' is not a release environment"),
        (["backtest"], {}, "VERSION is required"),
        (["serve"], {"VERSION": "1", "PORT": "80 "}, "PORT='80 ' is not a TCP port"),
        (["train"], {"CONFIG": "../secrets.toml"}, "is not a relative path to a .toml file"),
        (["pinned"], {"ENV": "production\nstaging"}, "is not a release environment"),
        (["release-pr"], {}, "ENV is required. Usage: make release-pr ENV=staging|production"),
    ],
)
def test_bad_values_stop_a_command_in_one_line_before_it_touches_anything(
    capsys, monkeypatch, argv, env, message
):
    for name in ("VERSION", "ENV", "PORT", "CONFIG", "APPROVER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.count("\n") == 1 and message in printed.err


def test_in_ci_the_synthetic_generator_never_overwrites_real_data(capsys, monkeypatch, tmp_path):
    real = tmp_path / "extract.parquet"
    real.write_bytes(b"the team's real extract")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("DATA_URI", str(real))
    assert main(["generate-data"]) == 1
    assert real.read_bytes() == b"the team's real extract"
    assert "never overwrites it" in capsys.readouterr().err


def test_in_ci_training_without_data_uri_stops_in_one_line(capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    monkeypatch.delenv("DATA_URI", raising=False)
    assert main(["train"]) == 1
    printed = capsys.readouterr().err
    assert printed == "Training refused: DATA_URI is not set; in CI training reads your real data from it.\n"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["promote"], "make promote VERSION=N ENV=staging|production APPROVER=<your name>"),
        (["promote", "--version", "1"], "make promote VERSION=N ENV=staging|production"),
        (["rollback"], "make rollback ENV=staging|production"),
        (["backtest"], "make backtest VERSION=N"),
        (["reproduce"], "make reproduce VERSION=N"),
        (["serve"], "make serve VERSION=N"),
        (["image"], "make image VERSION=N"),
        (["pinned"], "make pinned ENV=staging|production"),
    ],
)
def test_a_missing_value_is_answered_with_the_make_usage_line(capsys, argv, usage):
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.count("\n") == 1 and "is required. Usage: " + usage in printed.err


def test_a_newcomer_s_first_mistakes_each_get_one_line_with_the_fix(
    capsys, monkeypatch, settings, blank_store
):
    # given an empty store and no data yet, as right after `make install`
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("DATA_URI", str(settings.data_uri))
    monkeypatch.setenv("MODEL_NAME", settings.model_name)
    shutil.copy(blank_store, settings.tracking_uri.removeprefix("sqlite:///"))
    cases = [
        (["train"], "run `make data` for the synthetic example"),
        (["validate-data"], "run `make data` for the synthetic example"),
        (["backtest", "--version", "7"], "has no version 7: list them with `make versions`"),
        (["lineage", "--version", "7"], "has no version 7: list them with `make versions`"),
        (["versions"], "run `make train` first"),
        (["candidate"], "run `make train` first"),
    ]
    for argv, fix in cases:
        # when
        code = main(argv)
        # then
        printed = capsys.readouterr()
        assert code != 0, argv
        assert printed.err.count("\n") == 1 and fix in printed.err, (argv, printed)
        assert "Traceback" not in printed.out + printed.err


@pytest.mark.parametrize("given", [" 1", "1; touch owned", "$(touch owned)", "\u0663", "1\n"])
def test_candidate_refuses_a_version_that_is_not_plain_digits(capsys, monkeypatch, settings, given):
    monkeypatch.setenv("VERSION", given)
    assert main(["candidate"]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1
    assert "is not a registry version number" in printed.err


def test_candidate_prints_the_version_asked_for_only_when_it_is_registered_and_complete(
    capsys, monkeypatch, settings, tmp_path, blank_store
):
    # given two complete versions and one registered without its training evidence
    client = open_registry(settings, tmp_path, blank_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("MODEL_NAME", settings.model_name)
    first, _ = new_version(client, settings), new_version(client, settings)
    incomplete = new_version(client, settings, trained_by=None)
    # then VERSION names the one a run releases, and only a complete, registered one
    for given, code, line in [
        (first, 0, f"{first}\n"),
        (incomplete, 1, "is incomplete (missing evidence: trained_by)"),
        ("9", 1, "has no version 9"),
    ]:
        monkeypatch.setenv("VERSION", given)
        assert main(["candidate"]) == code
        printed = capsys.readouterr()
        assert line in (printed.out if code == 0 else printed.err), printed


def test_credentials_in_the_tracking_uri_are_never_printed(capsys, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:hunter2@127.0.0.1:{port}")
    assert main(["versions"]) == 1
    printed = capsys.readouterr()
    assert "hunter2" not in printed.out + printed.err
    assert "not in the URI" in printed.err
