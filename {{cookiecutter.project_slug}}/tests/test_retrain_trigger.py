"""Retraining requests: monitoring starts the training pipeline through each CI provider's own API."""

from __future__ import annotations

import base64
import io
import urllib.parse

import pytest

from conftest import CiApiStandIn
from {{ cookiecutter.package_name }} import ci
from {{ cookiecutter.package_name }}.ci import ApprovalError, send_json
from {{ cookiecutter.package_name }}.gitops import DEFAULT_BRANCH
from {{ cookiecutter.package_name }}.retrain_trigger import MAX_REASON_CHARS, clean_reason, request_retraining

REASON = "drift in price, promo; WAPE 0.41 > 0.25"
GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/demand-forecast", "GITHUB_TOKEN": "t0ken"}
AZURE = {
    "TF_BUILD": "True",
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/acme/",
    "SYSTEM_TEAMPROJECT": "Demand Planning",
    "RETRAIN_PIPELINE_ID": "12",
    "SYSTEM_ACCESSTOKEN": "t0ken",
}
JENKINS = {
    "JENKINS_URL": "https://jenkins.example.com/",
    "RETRAIN_JOB": "forecasting/demand-forecast/main",
    "JENKINS_USER": "monitor-bot",
    "JENKINS_API_TOKEN": "t0ken",
}


def test_github_dispatches_the_train_workflow_on_the_default_branch_with_the_reason() -> None:
    api = CiApiStandIn()
    said = request_retraining(REASON, GITHUB, send=api.send)
    ((method, url, headers, body),) = api.requests
    assert (method, url) == (
        "POST",
        "https://api.github.com/repos/acme/demand-forecast/actions/workflows/train.yml/dispatches",
    )
    assert headers == {
        "Accept": "application/vnd.github+json",
        "Authorization": "Bearer t0ken",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    assert body == {"ref": DEFAULT_BRANCH, "inputs": {"reason": REASON}}
    assert said == f"Requested retraining: GitHub workflow train.yml on {DEFAULT_BRANCH} (reason: {REASON})"


def test_github_dispatches_another_workflow_on_another_api_when_told() -> None:
    api = CiApiStandIn()
    env = {**GITHUB, "GITHUB_API_URL": "https://ghe.example.com/api/v3/", "RETRAIN_WORKFLOW": "retrain.yaml"}
    request_retraining(REASON, env, send=api.send)
    assert api.requests[0][1] == (
        "https://ghe.example.com/api/v3/repos/acme/demand-forecast/actions/workflows/retrain.yaml/dispatches"
    )


def test_azure_runs_the_training_pipeline_with_the_reason_as_a_template_parameter() -> None:
    api = CiApiStandIn(answer={"id": 345, "state": "inProgress"})
    said = request_retraining(REASON, AZURE, send=api.send)
    ((method, url, headers, body),) = api.requests
    assert (method, url) == (
        "POST",
        "https://dev.azure.com/acme/Demand%20Planning/_apis/pipelines/12/runs?api-version=7.1",
    )
    assert headers == {"Accept": "application/json", "Authorization": "Bearer t0ken"}
    assert body == {
        "resources": {"repositories": {"self": {"refName": f"refs/heads/{DEFAULT_BRANCH}"}}},
        "templateParameters": {"reason": REASON},
    }
    assert said.startswith(f"Requested retraining: Azure pipeline 12 on {DEFAULT_BRANCH} (reason: ")


def test_jenkins_builds_the_job_with_the_reason_as_its_parameter_and_an_api_token() -> None:
    api = CiApiStandIn()  # Jenkins answers 201 with a Location header and no body
    said = request_retraining(REASON, JENKINS, send=api.send)
    ((method, url, headers, body),) = api.requests
    base, query = url.split("?")
    assert method == "POST" and body is None
    job = "job/forecasting/job/demand-forecast/job/main"
    assert base == f"https://jenkins.example.com/{job}/buildWithParameters"
    assert urllib.parse.parse_qs(query) == {"RETRAIN_REASON": [REASON]}
    scheme, credentials = headers["Authorization"].split()
    assert scheme == "Basic" and base64.b64decode(credentials) == b"monitor-bot:t0ken"
    assert said == f"Requested retraining: Jenkins job forecasting/demand-forecast/main (reason: {REASON})"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/x"}, "GITHUB_TOKEN"),
        ({**AZURE, "RETRAIN_PIPELINE_ID": ""}, "RETRAIN_PIPELINE_ID"),
        ({"TF_BUILD": "True", "RETRAIN_PIPELINE_ID": "12"}, "SYSTEM_COLLECTIONURI, SYSTEM_TEAMPROJECT"),
        ({**JENKINS, "JENKINS_USER": "", "JENKINS_API_TOKEN": ""}, "JENKINS_USER, JENKINS_API_TOKEN"),
    ],
)
def test_missing_variables_are_named_before_any_call(env: dict[str, str], missing: str) -> None:
    api = CiApiStandIn()
    with pytest.raises(ApprovalError, match=missing):
        request_retraining(REASON, env, send=api.send)
    assert api.requests == []


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({**GITHUB, "RETRAIN_WORKFLOW": "../../pulls"}, "RETRAIN_WORKFLOW"),
        ({**AZURE, "RETRAIN_PIPELINE_ID": "12/../../x"}, "RETRAIN_PIPELINE_ID"),
        ({**JENKINS, "RETRAIN_JOB": "a/../b"}, "RETRAIN_JOB"),
    ],
)
def test_a_pipeline_name_that_would_leave_its_api_path_is_refused_before_any_call(
    env: dict[str, str], named: str
) -> None:
    api = CiApiStandIn()
    with pytest.raises(ApprovalError, match=named):
        request_retraining(REASON, env, send=api.send)
    assert api.requests == []


@pytest.mark.parametrize("env", [GITHUB, AZURE, JENKINS])
def test_a_refused_request_fails_in_one_line_saying_what_the_token_needs(env: dict[str, str]) -> None:
    api = CiApiStandIn(error=ApprovalError("POST https://x/y failed: HTTP Error 403: Forbidden\n<html>"))
    with pytest.raises(ApprovalError) as refused:
        request_retraining(REASON, env, send=api.send)
    message = str(refused.value)
    assert message.startswith("retraining was not requested: POST https://x/y failed: HTTP Error 403")
    assert "\n" not in message and "docs/ci-" in message


def test_an_unreachable_ci_system_is_a_failure_not_a_silent_pass() -> None:
    api = CiApiStandIn(error=OSError("connection refused"))
    with pytest.raises(ApprovalError, match="retraining was not requested: connection refused"):
        request_retraining(REASON, GITHUB, send=api.send)


def test_outside_ci_there_is_nothing_to_start() -> None:
    api = CiApiStandIn()
    with pytest.raises(ApprovalError, match="make train"):
        request_retraining(REASON, {}, send=api.send)
    assert api.requests == []


def test_the_reason_is_sent_as_one_bounded_line_without_control_characters() -> None:
    # given a reason with newlines, a terminal escape, a bidi override and far too much text
    api = CiApiStandIn()
    hostile = "drift in price\n\r::set-output name=x::1\x1b[31m\u202e" + "x" * 10_000
    # when
    request_retraining(hostile, GITHUB, send=api.send)
    # then what reaches the pipeline is one short line of what was visible
    sent = api.requests[0][3]["inputs"]["reason"]
    assert sent.startswith("drift in price ::set-output name=x::1 [31m")
    assert len(sent) == MAX_REASON_CHARS and sent.endswith("…")
    assert all(char.isprintable() for char in sent)


def test_the_reason_never_names_an_azure_pipeline_variable() -> None:
    # Azure expands $(name) in a step's environment: the reason must not reach the token that way.
    api = CiApiStandIn()
    request_retraining("drift $(System.AccessToken)", AZURE, send=api.send)
    assert api.requests[0][3]["templateParameters"]["reason"] == "drift $ (System.AccessToken)"


def test_a_reason_of_nothing_visible_is_refused() -> None:
    api = CiApiStandIn()
    with pytest.raises(ApprovalError, match="needs a reason"):
        request_retraining("\n\t\u200b", GITHUB, send=api.send)
    assert api.requests == []


def test_clean_reason_keeps_an_ordinary_verdict_as_it_is() -> None:
    verdict = "drift in price (p=0.001), promo — WAPE 0.41 vs 0.25 allowed"
    assert clean_reason(verdict) == verdict


class Answer(io.BytesIO):
    def __enter__(self) -> Answer:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


@pytest.mark.parametrize(("payload", "expected"), [(b"", None), (b'{"id": 3}', {"id": 3})])
def test_send_json_returns_none_for_an_answer_without_a_body(monkeypatch, payload, expected) -> None:
    # GitHub's dispatch answers 204 and Jenkins' build 201, both without a body.
    monkeypatch.setattr(ci.urllib.request, "urlopen", lambda request, timeout: Answer(payload))
    assert send_json("POST", "https://api.github.com/x", {}, {"ref": "main"}) == expected
