"""GitOps pins: the exact image tag (and digest) and model version each environment runs, kept in git.

`deploy/<env>/kustomization.yaml` pins the image (`newTag`, optional `digest`) and `deploy/<env>/model.env`
pins the model version; Flux reconciles whatever the default branch says, and a rollback is a revert.
"""

from __future__ import annotations

import re
import shutil

# git is run by absolute path with fixed argument lists and no shell.
import subprocess  # nosec B404 # git with fixed argument lists, no shell
from dataclasses import dataclass
from pathlib import Path

from {{ cookiecutter.package_name }} import registry

NEW_TAG = re.compile(r'^(?P<indent>[ \t]*)newTag:[ \t]*"?(?P<tag>[^"\s]+)"?[ \t]*$', re.MULTILINE)
DIGEST = re.compile(r"^[ \t]*digest:[ \t]*\S+[ \t]*\n", re.MULTILINE)
MODEL_VERSION = re.compile(r"^MODEL_VERSION=(?P<version>.*)$", re.MULTILINE)
UNRELEASED = "unreleased"  # what model.env pins before an environment's first promotion
# The branch Flux reconciles and release pull requests target.
DEFAULT_BRANCH = "{{ cookiecutter.default_branch }}"


class PinError(Exception):
    """The environment's manifests are not in the shape promotion can pin; nothing was changed."""


@dataclass(frozen=True)
class Pins:
    image_tag: str
    model_version: str


def image_tag(version: str) -> str:
    """Serving images are tagged by model version, never `latest`."""
    return f"v{version}"


def _files(env_dir: Path) -> tuple[Path, Path]:
    return env_dir / "kustomization.yaml", env_dir / "model.env"


def read_pins(env_dir: Path) -> Pins:
    """What an environment runs now, according to git."""
    kustomization, model_env = _files(env_dir)
    if not kustomization.is_file() or not model_env.is_file():
        raise PinError(f"{env_dir} needs kustomization.yaml and model.env: restore them from git")
    tags = NEW_TAG.findall(kustomization.read_text())
    versions = MODEL_VERSION.findall(model_env.read_text())
    if len(tags) != 1 or len(versions) != 1:
        raise PinError(f"{env_dir}: expected exactly one `newTag:` and one `MODEL_VERSION=` line to pin")
    return Pins(image_tag=tags[0][1], model_version=versions[0])


def running_version(env_dir: Path) -> str:
    """The registry version an environment runs, according to git; PinError when it runs none yet."""
    pinned = read_pins(env_dir).model_version
    if pinned == UNRELEASED:
        raise PinError(
            f"{env_dir}/ pins no version yet ({UNRELEASED!r}): promote one first"
            f" (`make promote VERSION=N ENV={env_dir.name}`)"
        )
    try:
        return registry.parse_version(pinned, "MODEL_VERSION")
    except registry.RegistryError as error:
        raise PinError(f"{env_dir}/model.env: {error}") from None


def pinned_contents(env_dir: Path, version: str, digest: str | None) -> dict[Path, str]:
    """New contents of the pin files for `version`; pure, so refusals happen before anything is written."""
    read_pins(env_dir)
    kustomization, model_env = _files(env_dir)
    manifest = DIGEST.sub("", kustomization.read_text())
    pin = f'\\g<indent>newTag: "{image_tag(version)}"'
    if digest:
        pin += f"\n\\g<indent>digest: {digest}"
    manifest = NEW_TAG.sub(pin, manifest)
    env_file = MODEL_VERSION.sub(f"MODEL_VERSION={version}", model_env.read_text())
    return {kustomization: manifest, model_env: env_file}


def write_atomically(contents: dict[Path, str]) -> dict[Path, str]:
    """Write each file via a temporary sibling; return the previous contents for undo."""
    previous = {path: path.read_text() for path in contents}
    for path, text in contents.items():
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_text(text)
        partial.replace(path)
    return previous


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git") or "git"
    return subprocess.run(  # nosec B603 # absolute git path, argument list
        [git, "-C", str(root), *args], capture_output=True, text=True, check=False
    )


def repository_of(path: Path) -> Path | None:
    """The top of the git work tree that holds `path`, or None when it is not in one."""
    result = _git(path, "rev-parse", "--show-toplevel")
    return Path(result.stdout.strip()).resolve() if result.returncode == 0 else None


def is_git_repo(root: Path) -> bool:
    """True when `root` is the top of its own git work tree (not a folder inside another repo)."""
    return repository_of(root) == root.resolve()


def _relative(root: Path, path: Path) -> str:
    return str(path.resolve().relative_to(root.resolve()))


def uncommitted(root: Path, folder: Path) -> list[str]:
    """Files under `folder` that differ from HEAD (staged, unstaged or untracked)."""
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", _relative(root, folder))
    if status.returncode:
        raise PinError(f"git status failed in {root}: {status.stderr.strip()}")
    return [line[3:] for line in status.stdout.splitlines()]


def require_clean(root: Path, folder: Path) -> None:
    """A release commit holds only its pins: refuse while the environment's folder has other edits."""
    dirty = uncommitted(root, folder)
    if dirty:
        raise PinError(
            f"{folder} has uncommitted changes ({', '.join(dirty)}): commit or discard them"
            f" (git status {_relative(root, folder)}), then re-run"
        )


def last_commit(root: Path, folder: Path) -> str:
    """The newest commit that changed `folder`: the release commit when the pins are already in place."""
    return _git(root, "log", "-1", "--format=%H", "--", _relative(root, folder)).stdout.strip()


def identity(root: Path) -> list[str]:
    """git's own identity when it has one; a bot identity only when it has none (fresh machines, CI)."""
    if _git(root, "config", "user.email").stdout.strip():
        return []
    return ["-c", "user.name=release-bot", "-c", "user.email=release-bot@localhost"]


def initialise_repository(root: Path, branch: str = DEFAULT_BRANCH) -> bool:
    """Make `root` a git repository with a first commit, unless it is one already; True if it made one.

    Production takes only versions trained from a commit, and promotions commit their pins: without this,
    a fresh render would find out at the production gate, after everything else had run. A project rendered
    inside another work tree (the template's own `make demo`) gets a repository of its own.
    """
    if is_git_repo(root):
        return False
    for args in (
        ("init", "--quiet", f"--initial-branch={branch}"),
        ("add", "--all"),
        (*identity(root), "commit", "--quiet", "-m", "Start the project from the template"),
    ):
        result = _git(root, *args)
        if result.returncode:
            raise PinError(f"git {args[0]} failed in {root}: {result.stderr.strip()}")
    print(f"Initialised a git repository in {root} on branch {branch}, with a first commit.")
    return True


def commit(root: Path, paths: list[Path], message: str) -> str:
    """Commit exactly `paths` (nothing else staged goes in); return the new commit SHA."""
    author = identity(root)
    relative = [_relative(root, path) for path in paths]
    added = _git(root, "add", "--", *relative)
    committed = _git(root, *author, "commit", "--quiet", "--only", "-m", message, "--", *relative)
    if added.returncode or committed.returncode:
        raise PinError(f"git commit failed: {(added.stderr + committed.stderr).strip()}")
    return _git(root, "rev-parse", "HEAD").stdout.strip()
