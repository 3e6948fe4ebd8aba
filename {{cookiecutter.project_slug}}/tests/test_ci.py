"""Identities from the CI system: who approved a gate and who trained, refused when they cannot be told."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.ci import (
    ApprovalError,
    identity_key,
    release_approvers,
    resolve_approver,
    trainer_identity,
)

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
    from {{ cookiecutter.package_name }}.ci import send_json

    with pytest.raises(ApprovalError, match="non-HTTPS"):
        send_json("GET", "http://api.github.com/x", {})


@pytest.mark.parametrize(
    ("env", "trainer"),
    [
        ({**GITHUB, "GITHUB_ACTOR": "octocat", "TRAINED_BY": "someone-else"}, "octocat"),
        ({**AZURE, "BUILD_REQUESTEDFOREMAIL": "ana@acme.example"}, "ana@acme.example"),
        ({**JENKINS, "BUILD_USER_ID": "jdoe"}, "jdoe"),
        ({"TRAINED_BY": "local.dev"}, "local.dev"),
    ],
)
def test_the_trainer_is_who_started_the_ci_run_never_a_variable_the_job_sets(env, trainer):
    assert trainer_identity(env) == trainer


def test_a_ci_run_without_a_starter_identity_refuses_to_train():
    # given Jenkins without the build-user-vars plugin: the OS user (`jenkins`) must not stand in
    with pytest.raises(ApprovalError, match="BUILD_USER_ID is not set"):
        trainer_identity({**JENKINS, "USER": "jenkins"})


def test_identities_compare_across_case_width_and_spacing_but_not_across_scripts():
    assert identity_key("  Carol ") == identity_key("carol") == identity_key("\uff23arol")
    with pytest.raises(ApprovalError, match="mixes CYRILLIC and LATIN"):
        identity_key("c\u0430rol")


def test_inside_ci_the_gate_names_the_approver_and_a_typed_one_is_refused():
    assert release_approvers({**JENKINS, "APPROVED_BY": "dave"}, "staging") == ["dave"]
    with pytest.raises(ApprovalError, match="APPROVER is set inside CI"):
        release_approvers({**JENKINS, "APPROVED_BY": "dave", "APPROVER": "mallory"}, "staging")
    assert release_approvers({"APPROVER": "erin, frank"}, "production") == ["erin", "frank"]


def test_a_job_gated_on_staging_cannot_release_to_production():
    with pytest.raises(ApprovalError, match="gate is for RELEASE_ENVIRONMENT='staging', not 'production'"):
        release_approvers({**JENKINS, "APPROVED_BY": "dave"}, "production")
