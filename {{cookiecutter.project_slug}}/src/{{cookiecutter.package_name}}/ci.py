"""Everything read from the CI system: who trained, who approved a gate, which run this is.

In CI no identity is typed by whoever asked for a release: each provider records who started a run and who
passed its gate, and this module reads those records. When it cannot tell, it fails closed with one line
saying why. Identities are compared after normalisation (Unicode NFKC, case, whitespace), and names that
mix scripts (a Cyrillic letter inside a Latin name: a look-alike) are refused. Standard library only.
"""

from __future__ import annotations

import base64
import getpass
import json
import re
import unicodedata
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

# The release environment the current job is gated on (staging|production); the CI files set it.
ENVIRONMENT_VARIABLE = "RELEASE_ENVIRONMENT"
# Jenkins: the `input` step's submitterParameter stores the approving user id in this variable.
JENKINS_APPROVER_VARIABLE = "APPROVED_BY"
TIMEOUT_SECONDS = 30
AZURE_API_VERSION = "7.1"  # of every Azure DevOps REST call (approvals, pull requests, pipeline runs)
# Who started a run, per provider: the trainer of what the run registers. Jenkins needs the build-user-vars
# plugin (`wrap([$class: 'BuildUser'])`) for BUILD_USER_ID.
TRAINER_VARIABLES = {"github": "GITHUB_ACTOR", "azure": "BUILD_REQUESTEDFOREMAIL", "jenkins": "BUILD_USER_ID"}
# Outside CI: who runs this, when set (a local convenience; CI ignores it).
LOCAL_TRAINER_VARIABLE = "TRAINED_BY"
LOCAL_APPROVER_VARIABLE = "APPROVER"
IDENTITY = re.compile(r"[\w.@+' \[\]-]{2,100}")

Fetch = Callable[[str, Mapping[str, str]], Any]
Send = Callable[[str, str, Mapping[str, str], Any], Any]


class ApprovalError(Exception):
    """An identity could not be established; the release must stop. The message says what to fix."""


def send_json(method: str, url: str, headers: Mapping[str, str], body: Any = None) -> Any:
    """Call a JSON HTTPS API and return the answer, None when it has no body (GitHub's 204, Jenkins' 201):
    the one network boundary (release_pr and retrain_trigger use it too)."""
    if not url.startswith("https://"):
        raise ApprovalError(f"refusing to call a CI or git host API over a non-HTTPS URL: {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        # The scheme is checked above: only HTTPS reaches urlopen.
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # nosec B310 # https only
            payload = response.read()
        return json.loads(payload) if payload.strip() else None
    except (OSError, ValueError) as error:
        raise ApprovalError(f"{method} {url} failed: {error}") from error


def github_headers(token: str) -> dict[str, str]:
    """The headers GitHub's REST API documents for a token's calls."""
    return {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28",
    }


def basic_auth(user: str, token: str) -> str:
    """An HTTP basic Authorization value (git hosts' and Jenkins' user + API token)."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def fetch_json(url: str, headers: Mapping[str, str]) -> Any:
    """GET a JSON document from an HTTPS API."""
    return send_json("GET", url, headers)


def provider_of(env: Mapping[str, str]) -> str | None:
    """The CI system this process runs in, from the variables each one always sets; None outside CI."""
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    if env.get("TF_BUILD", "").lower() == "true":
        return "azure"
    if env.get("JENKINS_URL"):
        return "jenkins"
    return None


def in_ci(env: Mapping[str, str]) -> bool:
    """True inside one of the supported CI providers: there, identities and data come from the CI system."""
    return provider_of(env) is not None


def detect_provider(env: Mapping[str, str]) -> str:
    """The CI system this process runs in; fails when there is none (no gate can have approved)."""
    provider = provider_of(env)
    if provider is not None:
        return provider
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
    approvals = fetch(url, github_headers(token))
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
    query = urllib.parse.urlencode(
        {"$expand": "steps", "state": "approved", "api-version": AZURE_API_VERSION}
    )
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


def identity_key(name: str) -> str:
    """The form identities are compared in: NFKC, case-folded, whitespace collapsed, without invisible
    characters (zero-width, soft hyphen) or accents, so "carol​" and "caról" are Carol; one script only."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", name))
    visible = "".join(char for char in decomposed if unicodedata.category(char) not in ("Cf", "Mn", "Me"))
    text = " ".join(visible.split()).casefold()
    scripts = {unicodedata.name(char, "UNKNOWN").split()[0] for char in text if char.isalpha()}
    if len(scripts) > 1:
        raise ApprovalError(
            f"identity {name!r} mixes {' and '.join(sorted(scripts))} letters (a look-alike of another"
            " name?): use the exact account name"
        )
    return text


def check_identity(name: str, what: str) -> str:
    """One identity, checked as a whole string; returned stripped."""
    name = name.strip()
    if not IDENTITY.fullmatch(unicodedata.normalize("NFKC", name)):
        raise ApprovalError(
            f"{what} {name!r} is not a user name or email (2-100 letters, digits, . @ + ' - _ [ ] or spaces)"
        )
    identity_key(name)
    return name


def approver_names(approvers: str) -> list[str]:
    """The named humans behind a gate (it may report several, comma-separated), each checked."""
    names = [check_identity(name, "approver") for name in approvers.split(",") if name.strip()]
    if not names:
        raise ApprovalError(
            "an approver is required: locally pass APPROVER=<your name>; in CI the gate supplies it"
        )
    return names


def release_approvers(env: Mapping[str, str], environment: str, fetch: Fetch = fetch_json) -> list[str]:
    """Who approved this release to `environment`: the CI gate's record in CI, APPROVER outside it."""
    if provider_of(env) is not None:
        gated = env.get(ENVIRONMENT_VARIABLE, "")
        if gated != environment:
            raise ApprovalError(
                f"this job's gate is for {ENVIRONMENT_VARIABLE}={gated!r}, not {environment!r}: a release"
                " only goes to the environment whose reviewers approved the job"
            )
        if env.get(LOCAL_APPROVER_VARIABLE):
            raise ApprovalError(
                f"{LOCAL_APPROVER_VARIABLE} is set inside CI: the approver is read from the CI gate, never"
                f" passed in; remove {LOCAL_APPROVER_VARIABLE} from the pipeline"
            )
        return approver_names(resolve_approver(env, fetch))
    return approver_names(env.get(LOCAL_APPROVER_VARIABLE, ""))


def trainer_identity(env: Mapping[str, str]) -> str:
    """Who trained: the identity that started the CI run, or the local user outside CI."""
    provider = provider_of(env)
    if provider is None:
        return check_identity(env.get(LOCAL_TRAINER_VARIABLE) or getpass.getuser(), "trainer")
    variable = TRAINER_VARIABLES[provider]
    if not env.get(variable, "").strip():
        raise ApprovalError(
            f"cannot tell who started this {provider} run ({variable} is not set), so four-eyes could not be"
            f" checked later: see docs/ci-{provider}.md"
        )
    return check_identity(env[variable], "trainer")


def ci_run_url(env: Mapping[str, str]) -> str:
    """A link to the CI run (GitHub, Azure Pipelines, Jenkins), or "local"."""
    if env.get("CI_RUN_URL"):
        return env["CI_RUN_URL"]
    if env.get("GITHUB_RUN_ID"):
        repository = f"{env.get('GITHUB_SERVER_URL')}/{env.get('GITHUB_REPOSITORY')}"
        return f"{repository}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("BUILD_BUILDID") and env.get("SYSTEM_COLLECTIONURI"):
        project = env.get("SYSTEM_TEAMPROJECT", "")
        return f"{env['SYSTEM_COLLECTIONURI']}{project}/_build/results?buildId={env['BUILD_BUILDID']}"
    return env.get("BUILD_URL") or "local"
