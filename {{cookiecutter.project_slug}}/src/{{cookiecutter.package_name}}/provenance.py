"""What produced a version: code commit, working-tree state and the installed environment.

Who produced it, and in which CI run, is read by `ci`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil

# git is run by absolute path with fixed argument lists and no shell.
import subprocess  # nosec B404 # git with fixed argument lists, no shell


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    result = subprocess.run([git, *args], capture_output=True, text=True, check=False)  # nosec B603 # fixed git arguments
    return result.stdout.strip() if result.returncode == 0 else None


def git_sha() -> str:
    """The commit the code was trained from, or "none" outside a git repository."""
    return _git("rev-parse", "HEAD") or "none"


def git_dirty() -> bool:
    """True with uncommitted or untracked (not ignored) files, or no commit: the code is not traceable."""
    status = _git("status", "--porcelain")
    return status is None or git_sha() == "none" or bool(status)


def untraceable_reason() -> str | None:
    """Why code trained now could not be traced to a commit (production refuses such versions), or None."""
    status = _git("status", "--porcelain")
    if status is None or git_sha() == "none":
        return "this folder is not a git repository with a commit (`make install` makes one)"
    if status:
        changed = [line.split(maxsplit=1)[1] for line in status.splitlines()]  # "XY path", first one stripped
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"uncommitted changes in {', '.join(changed[:3])}{more} (see `git status`)"
    return None


def environment_lock() -> str:
    """Every installed distribution pinned, sorted: the environment the model was trained in."""
    pins = {
        f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions() if d.metadata["Name"]
    }
    return "\n".join(sorted(pins, key=str.lower)) + "\n"


def lock_hash(lock: str) -> str:
    return hashlib.sha256(lock.encode()).hexdigest()
