"""Who approved a release gate: read from each CI system, and refused when it cannot be told."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.approvals import ApprovalError, resolve_approver

GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/demand-forecast",
    "GITHUB_RUN_ID": "42",
    "GITHUB_TOKEN": "token",
    "RELEASE_ENVIRONMENT": "production",
}
AZURE = {
    "TF_BUILD": "True",
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/acme/",
    "SYSTEM_TEAMPROJECT": "Demand Forecast",
    "BUILD_BUILDID": "7",
    "SYSTEM_ACCESSTOKEN": "token",
    "RELEASE_ENVIRONMENT": "staging",
}
JENKINS = {"JENKINS_URL": "https://jenkins.example", "RELEASE_ENVIRONMENT": "staging"}


class FakeApi:
    """Stands in for the HTTPS boundary: records the request, answers with a canned document."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: dict[str, str]) -> object:
        self.calls.append((url, dict(headers)))
        return self.answer


def github_approval(login: str, environment: str, state: str = "approved") -> dict[str, object]:
    return {"state": state, "user": {"login": login}, "environments": [{"name": environment}]}


def test_github_reads_the_reviewer_of_this_runs_environment() -> None:
    # given a run approved for staging by alice and for production by bob
    api = FakeApi([github_approval("alice", "staging"), github_approval("bob", "production")])
    # when the production job asks
    approver = resolve_approver(GITHUB, fetch=api)
    # then it names bob, read from this run's approvals with the job token
    assert approver == "bob"
    url, headers = api.calls[0]
    assert url == "https://api.github.com/repos/acme/demand-forecast/actions/runs/42/approvals"
    assert headers["Authorization"] == "Bearer token"


def test_github_fails_closed_without_an_approval_for_the_environment() -> None:
    api = FakeApi([github_approval("alice", "staging"), github_approval("eve", "production", "rejected")])
    with pytest.raises(ApprovalError, match="no approval for environment 'production'"):
        resolve_approver(GITHUB, fetch=api)


def test_github_fails_closed_without_a_token() -> None:
    with pytest.raises(ApprovalError, match="GITHUB_TOKEN"):
        resolve_approver({**GITHUB, "GITHUB_TOKEN": ""}, fetch=FakeApi([]))


def test_azure_reads_the_latest_approval_of_this_run() -> None:
    # given approvals of another run and two of this one (staging earlier, then production)
    def approval(build: str, who: str, when: str) -> dict[str, object]:
        return {
            "status": "approved",
            "lastModifiedOn": when,
            "pipeline": {"owner": {"id": int(build)}},
            "steps": [{"status": "approved", "actualApprover": {"uniqueName": who}}],
        }

    api = FakeApi(
        {
            "value": [
                approval("7", "carol@acme.com", "2024-05-02T10:00:00Z"),
                approval("8", "mallory@acme.com", "2024-05-03T10:00:00Z"),
                approval("7", "alice@acme.com", "2024-05-01T10:00:00Z"),
            ]
        }
    )
    # when
    approver = resolve_approver(AZURE, fetch=api)
    # then the most recent approval of run 7 wins, and the project name is URL-quoted
    assert approver == "carol@acme.com"
    assert api.calls[0][0].startswith(
        "https://dev.azure.com/acme/Demand%20Forecast/_apis/pipelines/approvals?"
    )


def test_azure_fails_closed_when_the_run_has_no_approval() -> None:
    with pytest.raises(ApprovalError, match="no completed approval"):
        resolve_approver(AZURE, fetch=FakeApi({"value": []}))


def test_jenkins_reads_the_submitter_parameter() -> None:
    assert resolve_approver({**JENKINS, "APPROVED_BY": "alice"}, fetch=FakeApi(None)) == "alice"


def test_jenkins_fails_closed_outside_the_gated_stage() -> None:
    with pytest.raises(ApprovalError, match="APPROVED_BY is empty"):
        resolve_approver(JENKINS, fetch=FakeApi(None))


def test_outside_ci_nobody_approved() -> None:
    with pytest.raises(ApprovalError, match="make promote"):
        resolve_approver({"RELEASE_ENVIRONMENT": "staging"}, fetch=FakeApi(None))


def test_only_https_is_called() -> None:
    from {{ cookiecutter.package_name }}.approvals import send_json

    with pytest.raises(ApprovalError, match="non-HTTPS"):
        send_json("GET", "http://api.github.com/x", {})
