"""Who approved the release gate this CI job runs behind, read from the CI system itself.

The approver is never typed by whoever asked for the release: each CI provider records who passed its gate,
and `resolve_approver` reads that record. When it cannot tell, it fails closed with a message saying why.
Standard library only (urllib, json), so it runs before anything else is installed.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

# The release environment the current job is gated on (staging|production); the CI files set it.
ENVIRONMENT_VARIABLE = "RELEASE_ENVIRONMENT"
# Jenkins: the `input` step's submitterParameter stores the approving user id in this variable.
JENKINS_APPROVER_VARIABLE = "APPROVED_BY"
TIMEOUT_SECONDS = 30

Fetch = Callable[[str, Mapping[str, str]], Any]
Send = Callable[[str, str, Mapping[str, str], Any], Any]


class ApprovalError(Exception):
    """The approver could not be established; the release must stop. The message says what to fix."""


def send_json(method: str, url: str, headers: Mapping[str, str], body: Any = None) -> Any:
    """Call a JSON HTTPS API and return the answer: the one network boundary (release_pr uses it too)."""
    if not url.startswith("https://"):
        raise ApprovalError(f"refusing to call a CI or git host API over a non-HTTPS URL: {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        # The scheme is checked above: only HTTPS reaches urlopen.
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # nosec B310
            return json.load(response)
    except (OSError, ValueError) as error:
        raise ApprovalError(f"{method} {url} failed: {error}") from error


def fetch_json(url: str, headers: Mapping[str, str]) -> Any:
    """GET a JSON document from an HTTPS API."""
    return send_json("GET", url, headers)


def detect_provider(env: Mapping[str, str]) -> str:
    """The CI system this process runs in, from the variables each one always sets."""
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    if env.get("TF_BUILD", "").lower() == "true":
        return "azure"
    if env.get("JENKINS_URL"):
        return "jenkins"
    raise ApprovalError(
        "not running in GitHub Actions, Azure Pipelines or Jenkins, so no gate approved this release: "
        "run promotions locally with `make promote ... APPROVER=<your name>`"
    )


def require(env: Mapping[str, str], *names: str) -> list[str]:
    """The values of variables the lookup needs, or an error naming the missing ones."""
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ApprovalError(
            f"cannot continue: {', '.join(missing)} not set in the job environment (see docs/ci-*.md)"
        )
    return [env[name] for name in names]


def github_approver(env: Mapping[str, str], fetch: Fetch) -> str:
    """Reviewers who approved this run's deployment to the environment (the run approvals API)."""
    (environment,) = require(env, ENVIRONMENT_VARIABLE)
    repository, run_id, token = require(env, "GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_TOKEN")
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    url = f"{api}/repos/{repository}/actions/runs/{run_id}/approvals"
    headers = {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    approvals = fetch(url, headers)
    logins = [
        approval["user"]["login"]
        for approval in approvals
        if approval.get("state") == "approved"
        and any(item.get("name") == environment for item in approval.get("environments", []))
    ]
    if not logins:
        raise ApprovalError(
            f"run {run_id} has no approval for environment {environment!r}: add required reviewers to the "
            "environment (Settings > Environments), see docs/ci-github.md"
        )
    return ",".join(dict.fromkeys(logins))


def azure_approver(env: Mapping[str, str], fetch: Fetch) -> str:
    """Who approved the latest completed approval of this run (the Approvals - Query REST API)."""
    require(env, ENVIRONMENT_VARIABLE)
    collection, project, build_id, token = require(
        env, "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECT", "BUILD_BUILDID", "SYSTEM_ACCESSTOKEN"
    )
    query = urllib.parse.urlencode({"$expand": "steps", "state": "approved", "api-version": "7.1"})
    url = f"{collection.rstrip('/')}/{urllib.parse.quote(project)}/_apis/pipelines/approvals?{query}"
    approvals = fetch(url, {"Accept": "application/json", "Authorization": f"Bearer {token}"})
    ours = [
        approval
        for approval in approvals.get("value", [])
        if str(approval.get("pipeline", {}).get("owner", {}).get("id")) == build_id
        and approval.get("status") == "approved"
    ]
    # The gate this job waited on is the most recently completed approval of the run.
    ours.sort(key=lambda approval: approval.get("lastModifiedOn", ""))
    names = [
        step["actualApprover"].get("uniqueName") or step["actualApprover"].get("displayName")
        for step in (ours[-1].get("steps", []) if ours else [])
        if step.get("status") == "approved" and step.get("actualApprover")
    ]
    if not names:
        raise ApprovalError(
            f"run {build_id} has no completed approval: add an Approvals check to the environment and give "
            "the build service 'read' on it, see docs/ci-azure.md"
        )
    return ",".join(dict.fromkeys(names))


def jenkins_approver(env: Mapping[str, str], fetch: Fetch) -> str:
    """The user the `input` step's submitterParameter recorded."""
    require(env, ENVIRONMENT_VARIABLE)
    approver = env.get(JENKINS_APPROVER_VARIABLE, "").strip()
    if not approver:
        raise ApprovalError(
            f"{JENKINS_APPROVER_VARIABLE} is empty: run this inside the stage whose `input` has "
            f"submitterParameter '{JENKINS_APPROVER_VARIABLE}', see docs/ci-jenkins.md"
        )
    return approver


RESOLVERS: dict[str, Callable[[Mapping[str, str], Fetch], str]] = {
    "github": github_approver,
    "azure": azure_approver,
    "jenkins": jenkins_approver,
}


def resolve_approver(env: Mapping[str, str], fetch: Fetch = fetch_json) -> str:
    """Who approved the gate of the current CI job; raises ApprovalError when that cannot be told."""
    return RESOLVERS[detect_provider(env)](env, fetch)
