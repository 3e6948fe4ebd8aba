"""Bring a commit to git as a pull request: push its branch and open the PR (promotions, template updates).

Promotion commits the pin change in deploy/<env>/; Flux deploys it once the PR is merged, so the merge is
the moment the release takes effect and `git revert` is the rollback. Each CI provider pushes with its own
job token and opens the PR through its git host: `gh pr create` on GitHub Actions, the Azure Repos REST
API on Azure Pipelines, the GitHub or Azure Repos API with a Jenkins credential on Jenkins. Anything
missing fails closed with a message naming it.
"""

from __future__ import annotations

import re
import shutil

# Fixed argument lists and no shell: the subprocess use below is reviewed.
import subprocess  # nosec B404 # git and gh with argument lists, no shell
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from {{ cookiecutter.package_name }}.ci import (
    AZURE_API_VERSION,
    ApprovalError,
    Send,
    basic_auth,
    detect_provider,
    github_headers,
    require,
    send_json,
)
from {{ cookiecutter.package_name }}.gitops import DEFAULT_BRANCH

Run = Callable[[Sequence[str], Mapping[str, str]], str]


class ReleasePrError(ApprovalError):
    """The release branch or pull request could not be created; the message says what to fix."""


def run_command(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Run a program (git, gh) without a shell and return its stdout: the process boundary."""
    program = shutil.which(args[0])
    if program is None:
        raise ReleasePrError(f"{args[0]} is not installed on this agent: install it to open release PRs")
    # An absolute program path and an argument list, without a shell.
    result = subprocess.run(  # nosec B603 # absolute program path, argument list
        [program, *args[1:]], env=dict(env), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ReleasePrError(f"{' '.join(args[:3])} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


def branch_name(environment: str, version: str) -> str:
    """The release branch of one promotion, e.g. release/staging-v7."""
    if environment not in ("staging", "production") or not version.isdigit():
        raise ReleasePrError(
            f"expected ENV staging|production and a numeric VERSION, got {environment!r} {version!r}"
        )
    return f"release/{environment}-v{version}"


def title_and_body(environment: str, version: str, env: Mapping[str, str]) -> tuple[str, str]:
    """PR text: what changes, and where the evidence is."""
    run_url = env.get("CI_RUN_URL", "")
    body = (
        f"Pins model version {version} (image tag v{version}) in deploy/{environment}/.\n\n"
        "Flux deploys it when this PR is merged; revert the merge commit to roll back.\n"
        + (f"\nEvidence and approval: {run_url}\n" if run_url else "")
    )
    return f"Release model v{version} to {environment}", body


def with_auth_header(env: Mapping[str, str], header: str) -> dict[str, str]:
    """The job environment plus an HTTP header for git, passed through GIT_CONFIG_* (never on argv)."""
    return {
        **env,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraheader",
        "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: {header}",
        "GIT_TERMINAL_PROMPT": "0",
    }


def push(branch: str, env: Mapping[str, str], header: str, run: Run) -> None:
    """Push the promotion commit (HEAD) to the release branch on origin."""
    run(["git", "push", "origin", f"HEAD:refs/heads/{branch}"], with_auth_header(env, header))


def github_pr(
    repository: str, branch: str, base: str, text: tuple[str, str], token: str, api: str, send: Send
) -> str:
    """Open a PR through the GitHub REST API and return its URL."""
    answer = send(
        "POST",
        f"{api.rstrip('/')}/repos/{repository}/pulls",
        github_headers(token),
        {"title": text[0], "body": text[1], "head": branch, "base": base},
    )
    return answer["html_url"]


def azure_pr(repo_api: str, branch: str, base: str, text: tuple[str, str], header: str, send: Send) -> str:
    """Open a PR through the Azure Repos REST API and return its web URL."""
    answer = send(
        "POST",
        f"{repo_api}/pullrequests?api-version={AZURE_API_VERSION}",
        {"Accept": "application/json", "Authorization": header},
        {
            "sourceRefName": f"refs/heads/{branch}",
            "targetRefName": f"refs/heads/{base}",
            "title": text[0],
            "description": text[1],
        },
    )
    web = answer.get("repository", {}).get("webUrl", "")
    return f"{web}/pullrequest/{answer['pullRequestId']}" if web else str(answer["pullRequestId"])


def from_github_actions(
    branch: str, base: str, text: tuple[str, str], env: Mapping[str, str], run: Run
) -> str:
    (token,) = require(env, "GH_TOKEN")
    push(branch, env, basic_auth("x-access-token", token), run)
    return run(
        ["gh", "pr", "create", "--base", base, "--head", branch, "--title", text[0], "--body", text[1]], env
    )


def from_azure_pipelines(
    branch: str, base: str, text: tuple[str, str], env: Mapping[str, str], run: Run, send: Send
) -> str:
    collection, project, repo_id, token = require(
        env, "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECT", "BUILD_REPOSITORY_ID", "SYSTEM_ACCESSTOKEN"
    )
    header = f"bearer {token}"
    push(branch, env, header, run)
    repo_api = f"{collection.rstrip('/')}/{urllib.parse.quote(project)}/_apis/git/repositories/{repo_id}"
    return azure_pr(repo_api, branch, base, text, header, send)


GITHUB_REMOTE = re.compile(r"github\.com[:/](?P<repository>[^/]+/[^/]+?)(?:\.git)?/?$")
AZURE_REMOTE = re.compile(
    r"dev\.azure\.com/(?P<org>[^/]+)/(?P<project>[^/]+)/_git/(?P<repo>[^/]+?)(?:\.git)?/?$"
)


def from_jenkins(
    branch: str, base: str, text: tuple[str, str], env: Mapping[str, str], run: Run, send: Send
) -> str:
    remote, user, token = require(env, "GIT_URL", "GIT_USERNAME", "GIT_TOKEN")
    header = basic_auth(user, token)
    github = GITHUB_REMOTE.search(remote)
    azure = AZURE_REMOTE.search(remote)
    if github is None and azure is None:
        raise ReleasePrError(
            f"cannot open a pull request on {remote}: supported git hosts are GitHub and Azure Repos "
            "(add yours to release_pr.py)"
        )
    push(branch, env, header, run)
    if github is not None:
        api = env.get("GITHUB_API_URL", "https://api.github.com")
        return github_pr(github["repository"], branch, base, text, token, api, send)
    repo_api = (
        f"https://dev.azure.com/{azure['org']}/{azure['project']}/_apis/git/repositories/{azure['repo']}"
    )
    return azure_pr(repo_api, branch, base, text, header, send)


def open_pull_request(
    branch: str, text: tuple[str, str], env: Mapping[str, str], run: Run = run_command, send: Send = send_json
) -> str:
    """Push HEAD to `branch` on origin and open a PR (title, body) into the default branch; return its URL."""
    base = env.get("RELEASE_BASE_BRANCH") or DEFAULT_BRANCH
    provider = detect_provider(env)
    if provider == "github":
        return from_github_actions(branch, base, text, env, run)
    if provider == "azure":
        return from_azure_pipelines(branch, base, text, env, run, send)
    return from_jenkins(branch, base, text, env, run, send)


def open_release_pr(
    environment: str,
    version: str,
    env: Mapping[str, str],
    run: Run = run_command,
    send: Send = send_json,
) -> str:
    """Push the promotion commit to release/<env>-v<N> and open a PR; return the PR's URL."""
    branch = branch_name(environment, str(version))
    return open_pull_request(branch, title_and_body(environment, str(version), env), env, run, send)
