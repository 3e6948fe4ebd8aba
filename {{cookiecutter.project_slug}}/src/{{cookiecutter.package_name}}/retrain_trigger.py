"""Ask the CI system to retrain: start the training pipeline through the provider's own REST API.

`make monitor` calls this in CI when what production runs breaches its thresholds, with the breach as the
reason. The training pipeline hands the reason to `make train` as data (the RETRAIN_REASON variable), which
records it on the version it registers, and the evidence report shows it. Every provider's call needs a
token and a pipeline to start: anything missing or refused fails in one line, so a breach never looks handled
when nothing was started. `start_pipeline` is the one way this project starts that pipeline: the registry
webhook receiver (registry_events.py) uses it too, with a `version` input instead of a reason. Standard
library only.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from {{ cookiecutter.package_name }}.ci import (
    AZURE_API_VERSION,
    ApprovalError,
    Send,
    basic_auth,
    github_headers,
    provider_of,
    require,
    send_json,
)
from {{ cookiecutter.package_name }}.gitops import DEFAULT_BRANCH

# The variable that carries the reason into training, on every provider (Jenkins: the build parameter).
REASON_VARIABLE = "RETRAIN_REASON"
# The Jenkins build parameter naming a registered version to release instead of training one.
VERSION_PARAMETER = "RELEASE_VERSION"
# The training pipeline's inputs: each one's name as a GitHub workflow_dispatch input and an Azure template
# parameter, and the Jenkins build parameter (an environment variable of every step there) that carries it.
JENKINS_PARAMETERS = {"reason": REASON_VARIABLE, "version": VERSION_PARAMETER}
# Long enough for a verdict naming features and metrics, short enough for a tag, a URL and a report line.
MAX_REASON_CHARS = 300
DEFAULT_WORKFLOW = "train.yml"
WORKFLOW = re.compile(r"[\w.-]+\.ya?ml|[1-9][0-9]*")
PIPELINE_ID = re.compile(r"[1-9][0-9]{0,9}")
# Where each provider's token needs a permission to start training, and the pipeline the inputs it is sent.
HINTS = {
    "github": "the job needs `permissions: actions: write` (any other token: Actions write on the repository)"
    " and a train workflow with {inputs} input (see docs/ci-github.md)",
    "azure": "the build service (any other token: Build read & execute) needs 'Queue builds' on the training"
    " pipeline RETRAIN_PIPELINE_ID, whose YAML needs {inputs} parameter (see docs/ci-azure.md)",
    "jenkins": "JENKINS_USER needs Job/Build on RETRAIN_JOB, whose job needs {inputs} parameter"
    " (see docs/ci-jenkins.md)",
}

# (inputs, env, send, purpose) -> what was started
Starter = Callable[[Mapping[str, str], Mapping[str, str], Send, str], str]


def clean_reason(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """The reason as one bounded line without control or invisible format characters.

    It is written to a tag, a URL and a report: a newline, a bidi override or a megabyte must not get there.
    Azure Pipelines expands `$(name)` in the step environment it hands the reason through, so `$(` is split:
    a reason never names a pipeline variable (or its secret).
    """
    visible = "".join(" " if unicodedata.category(char).startswith("C") else char for char in text)
    line = " ".join(visible.split()).replace("$(", "$ (")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _hint(provider: str, inputs: Mapping[str, str]) -> str:
    names = [f"`{JENKINS_PARAMETERS[name] if provider == 'jenkins' else name}`" for name in inputs]
    return HINTS[provider].format(inputs=("a " if len(names) == 1 else "the ") + " and ".join(names))


def _call(
    provider: str,
    purpose: str,
    inputs: Mapping[str, str],
    send: Send,
    request: tuple[str, str, Mapping[str, str], Any],
) -> Any:
    """One API call; any failure becomes one line saying what was not requested and what the token needs."""
    try:
        return send(*request)
    except (ApprovalError, OSError, ValueError) as error:
        detail = " ".join(str(error).split())
        raise ApprovalError(f"{purpose} was not requested: {detail}; {_hint(provider, inputs)}") from error


def _checked(value: str, pattern: re.Pattern[str], name: str, example: str) -> str:
    """A variable that becomes part of a URL path, checked as a whole string."""
    if not pattern.fullmatch(value):
        raise ApprovalError(f"{name}={value!r} is not valid: set it to e.g. {example}")
    return value


def github_dispatch(inputs: Mapping[str, str], env: Mapping[str, str], send: Send, purpose: str) -> str:
    """workflow_dispatch of the training workflow on the default branch (REST: create a dispatch event)."""
    repository, token = require(env, "GITHUB_REPOSITORY", "GITHUB_TOKEN")
    workflow = env.get("RETRAIN_WORKFLOW") or DEFAULT_WORKFLOW
    _checked(workflow, WORKFLOW, "RETRAIN_WORKFLOW", "train.yml (a file in .github/workflows/)")
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    url = f"{api}/repos/{repository}/actions/workflows/{workflow}/dispatches"
    body = {"ref": DEFAULT_BRANCH, "inputs": dict(inputs)}
    _call("github", purpose, inputs, send, ("POST", url, github_headers(token), body))
    return f"GitHub workflow {workflow} on {DEFAULT_BRANCH}"


def azure_run(inputs: Mapping[str, str], env: Mapping[str, str], send: Send, purpose: str) -> str:
    """A run of the training pipeline on the default branch (REST: Pipelines - Runs - Run Pipeline)."""
    collection, project, pipeline, token = require(
        env, "SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECT", "RETRAIN_PIPELINE_ID", "SYSTEM_ACCESSTOKEN"
    )
    _checked(pipeline, PIPELINE_ID, "RETRAIN_PIPELINE_ID", "the definition id in the pipeline's URL, 12")
    project_api = f"{collection.rstrip('/')}/{urllib.parse.quote(project)}/_apis"
    url = f"{project_api}/pipelines/{pipeline}/runs?api-version={AZURE_API_VERSION}"
    body = {
        "resources": {"repositories": {"self": {"refName": f"refs/heads/{DEFAULT_BRANCH}"}}},
        "templateParameters": dict(inputs),
    }
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    _call("azure", purpose, inputs, send, ("POST", url, headers, body))
    return f"Azure pipeline {pipeline} on {DEFAULT_BRANCH}"


def jenkins_job_path(job: str) -> str:
    """`folder/name/branch` as Jenkins' URL path `job/folder/job/name/job/branch`, each segment encoded."""
    segments = job.strip("/").split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ApprovalError(
            f"RETRAIN_JOB={job!r} is not a job's full name: set it to e.g. demand-forecast/main"
        )
    return "/".join(f"job/{urllib.parse.quote(segment, safe='')}" for segment in segments)


def jenkins_build(inputs: Mapping[str, str], env: Mapping[str, str], send: Send, purpose: str) -> str:
    """A build of the training job with the inputs as its parameters (remote access API, API token auth)."""
    jenkins, job, user, token = require(
        env, "JENKINS_URL", "RETRAIN_JOB", "JENKINS_USER", "JENKINS_API_TOKEN"
    )
    query = urllib.parse.urlencode({JENKINS_PARAMETERS[name]: value for name, value in inputs.items()})
    url = f"{jenkins.rstrip('/')}/{jenkins_job_path(job)}/buildWithParameters?{query}"
    # An API token authenticates the POST on its own: Jenkins asks no CSRF crumb of it.
    _call("jenkins", purpose, inputs, send, ("POST", url, {"Authorization": basic_auth(user, token)}, None))
    return f"Jenkins job {job}"


STARTERS: dict[str, Starter] = {"github": github_dispatch, "azure": azure_run, "jenkins": jenkins_build}


def start_pipeline(
    provider: str, purpose: str, inputs: Mapping[str, str], env: Mapping[str, str], send: Send = send_json
) -> str:
    """Start the training pipeline on `provider` with `inputs`; say what was started.

    `purpose` names the request in a failure ("retraining was not requested: ..."). Each input is data: the
    pipelines hand it to their steps through the environment only. Raises ApprovalError, in one line.
    """
    if provider not in STARTERS:
        raise ApprovalError(f"CI provider {provider!r} is not one of {', '.join(STARTERS)}: set CI_PROVIDER")
    unknown = sorted(set(inputs) - set(JENKINS_PARAMETERS))
    if unknown:
        raise ValueError(f"the training pipeline has no input {', '.join(unknown)}")
    return STARTERS[provider](inputs, env, send, purpose)


def request_retraining(reason: str, env: Mapping[str, str], send: Send = send_json) -> str:
    """Start the training pipeline of the CI system this runs in, with `reason`; say what was started."""
    provider = provider_of(env)
    if provider is None:
        raise ApprovalError(
            "not running in GitHub Actions, Azure Pipelines or Jenkins, so there is no training pipeline to"
            f" start: retrain with `{REASON_VARIABLE}='<why>' make train`"
        )
    line = clean_reason(reason)
    if not line:
        raise ApprovalError("a retraining request needs a reason: pass the monitor's verdict")
    started = start_pipeline(provider, "retraining", {"reason": line}, env, send)
    return f"Requested retraining: {started} (reason: {line})"
