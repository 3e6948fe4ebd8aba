"""The CLI is what CI runs: it must start and describe its settings."""

import json

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
