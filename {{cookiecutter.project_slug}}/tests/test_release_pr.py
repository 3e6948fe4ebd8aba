"""Release pull requests: a branch per promotion, opened through each CI provider's git host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from {{ cookiecutter.package_name }}.ci import ApprovalError
from {{ cookiecutter.package_name }}.release_pr import ReleasePrError, open_release_pr


class FakeBoundary:
    """Records the programs run and the API calls made, answering both with canned values."""

    def __init__(self, stdout: str = "", answer: object = None) -> None:
        self.stdout = stdout
        self.answer = answer
        self.commands: list[tuple[list[str], dict[str, str]]] = []
        self.requests: list[tuple[str, str, dict[str, str], object]] = []

    def run(self, args: Sequence[str], env: Mapping[str, str]) -> str:
        self.commands.append((list(args), dict(env)))
        return self.stdout if args[0] == "gh" else ""

    def send(self, method: str, url: str, headers: Mapping[str, str], body: object = None) -> object:
        self.requests.append((method, url, dict(headers), body))
        return self.answer


def test_github_pushes_the_release_branch_and_runs_gh_pr_create() -> None:
    # given a GitHub Actions job with a token
    fake = FakeBoundary(stdout="https://github.com/acme/demand-forecast/pull/5")
    env = {"GITHUB_ACTIONS": "true", "GH_TOKEN": "t0ken"}
    # when
    url = open_release_pr("staging", "3", env, run=fake.run, send=fake.send)
    # then the commit goes to release/staging-v3 and the PR targets the default branch
    assert url.endswith("/pull/5")
    (push, push_env), (create, _) = fake.commands
    assert push == ["git", "push", "origin", "HEAD:refs/heads/release/staging-v3"]
    assert push_env["GIT_CONFIG_KEY_0"] == "http.extraheader"
    assert "t0ken" not in " ".join(push)
    assert create[:7] == ["gh", "pr", "create", "--base", "main", "--head", "release/staging-v3"]


def test_azure_opens_the_pr_through_the_repos_api() -> None:
    fake = FakeBoundary(
        answer={"pullRequestId": 9, "repository": {"webUrl": "https://dev.azure.com/a/p/_git/r"}}
    )
    env = {
        "TF_BUILD": "True",
        "SYSTEM_COLLECTIONURI": "https://dev.azure.com/a/",
        "SYSTEM_TEAMPROJECT": "p",
        "BUILD_REPOSITORY_ID": "repo-id",
        "SYSTEM_ACCESSTOKEN": "t0ken",
        "RELEASE_BASE_BRANCH": "trunk",
    }
    url = open_release_pr("production", "4", env, run=fake.run, send=fake.send)
    assert url == "https://dev.azure.com/a/p/_git/r/pullrequest/9"
    method, api, headers, body = fake.requests[0]
    assert (method, api) == (
        "POST",
        "https://dev.azure.com/a/p/_apis/git/repositories/repo-id/pullrequests?api-version=7.1",
    )
    assert headers["Authorization"] == "bearer t0ken"
    assert body["sourceRefName"] == "refs/heads/release/production-v4"
    assert body["targetRefName"] == "refs/heads/trunk"


@pytest.mark.parametrize(
    ("remote", "api"),
    [
        (
            "https://github.com/acme/demand-forecast.git",
            "https://api.github.com/repos/acme/demand-forecast/pulls",
        ),
        (
            "https://dev.azure.com/acme/proj/_git/repo",
            "https://dev.azure.com/acme/proj/_apis/git/repositories/repo",
        ),
    ],
)
def test_jenkins_uses_its_credential_and_the_git_hosts_api(remote: str, api: str) -> None:
    fake = FakeBoundary(answer={"html_url": "https://pr", "pullRequestId": 1})
    env = {"JENKINS_URL": "https://ci", "GIT_URL": remote, "GIT_USERNAME": "bot", "GIT_TOKEN": "t0ken"}
    open_release_pr("staging", "2", env, run=fake.run, send=fake.send)
    assert fake.commands[0][0][:2] == ["git", "push"]
    assert fake.requests[0][1].startswith(api)


def test_jenkins_refuses_an_unknown_git_host_before_pushing() -> None:
    fake = FakeBoundary()
    env = {
        "JENKINS_URL": "https://ci",
        "GIT_URL": "https://git.example/x.git",
        "GIT_USERNAME": "b",
        "GIT_TOKEN": "t",
    }
    with pytest.raises(ReleasePrError, match="supported git hosts"):
        open_release_pr("staging", "2", env, run=fake.run, send=fake.send)
    assert fake.commands == []


@pytest.mark.parametrize(("environment", "version"), [("dev", "1"), ("staging", "latest")])
def test_only_numbered_versions_go_to_known_environments(environment: str, version: str) -> None:
    with pytest.raises(ReleasePrError, match="staging\\|production"):
        open_release_pr(environment, version, {"GITHUB_ACTIONS": "true", "GH_TOKEN": "t"})


def test_fails_closed_without_a_token() -> None:
    fake = FakeBoundary()
    with pytest.raises(ApprovalError, match="GH_TOKEN"):
        open_release_pr("staging", "1", {"GITHUB_ACTIONS": "true"}, run=fake.run, send=fake.send)
