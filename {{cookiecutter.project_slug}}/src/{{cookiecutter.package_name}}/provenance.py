"""Who and what produced a version: code commit, working-tree state, identity, CI run, environment."""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
from collections.abc import Mapping

# Where each CI system says who started the run and which run it is.
IDENTITY_VARIABLES = ("TRAINED_BY", "GITHUB_ACTOR", "BUILD_REQUESTEDFOREMAIL", "BUILD_USER_ID")


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    result = subprocess.run([git, *args], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def git_sha() -> str:
    """The commit the code was trained from, or "none" outside a git repository."""
    return _git("rev-parse", "HEAD") or "none"


def git_dirty() -> bool:
    """True with uncommitted or untracked (not ignored) files, or no commit: the code is not traceable."""
    status = _git("status", "--porcelain")
    return status is None or git_sha() == "none" or bool(status)


def identity(env: Mapping[str, str] = os.environ) -> str:
    """The person or CI identity running this, for four-eyes checks at promotion."""
    for variable in IDENTITY_VARIABLES:
        if env.get(variable):
            return env[variable]
    return getpass.getuser()


def ci_run_url(env: Mapping[str, str] = os.environ) -> str:
    """A link to the CI run, when there is one (GitHub, Azure Pipelines, Jenkins)."""
    if env.get("CI_RUN_URL"):
        return env["CI_RUN_URL"]
    if env.get("GITHUB_RUN_ID"):
        repository = f"{env.get('GITHUB_SERVER_URL')}/{env.get('GITHUB_REPOSITORY')}"
        return f"{repository}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("BUILD_BUILDID") and env.get("SYSTEM_COLLECTIONURI"):
        project = env.get("SYSTEM_TEAMPROJECT", "")
        return f"{env['SYSTEM_COLLECTIONURI']}{project}/_build/results?buildId={env['BUILD_BUILDID']}"
    return env.get("BUILD_URL", "")


def environment_lock() -> str:
    """Every installed distribution pinned, sorted: the environment the model was trained in."""
    pins = {
        f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions() if d.metadata["Name"]
    }
    return "\n".join(sorted(pins, key=str.lower)) + "\n"


def lock_hash(lock: str) -> str:
    return hashlib.sha256(lock.encode()).hexdigest()
