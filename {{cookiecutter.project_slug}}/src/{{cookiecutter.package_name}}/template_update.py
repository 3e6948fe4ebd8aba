"""Keep this repo on the newest template release: the steps of the scheduled template-update pipeline.

`make template-update` finds the newest release (a semantic-version git tag) of the template this repo was
made from, applies it on a branch with the engine that made the repo (copier or cruft), refuses to commit a
conflict, and commits. CI then runs the PR checks, and `make template-pull-request` pushes the branch and
opens the pull request naming the version range and the template's CHANGELOG entries for it. When the repo
is up to date, nothing is written and nothing is opened. Release state (the pins in deploy/<env>/) and the
team's release policy are never touched: both engines skip them (copier.yml `_exclude`, `[tool.cruft] skip`).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from {{ cookiecutter.package_name }}.ci import ApprovalError, Send, send_json
from {{ cookiecutter.package_name }}.gitops import identity
from {{ cookiecutter.package_name }}.release_pr import Run, open_pull_request, run_command

COPIER_ANSWERS = Path(".copier-answers.yml")
CRUFT_RECORD = Path(".cruft.json")
PENDING = Path("build/template-update/pull-request.json")
RELEASE_TAG = re.compile(r"v?(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)")
# `git describe` form copier records for a commit after a tag: v1.2.0-3-gabc1234.
DESCRIBED = re.compile(rf"(?P<tag>{RELEASE_TAG.pattern})-[0-9]+-g[0-9a-f]+")
CONFLICT_MARKER = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)
CHANGELOG_HEADING = re.compile(r"^## \[?(?P<version>v?[0-9]+\.[0-9]+\.[0-9]+)\]?.*$", re.MULTILINE)


class TemplateUpdateError(ApprovalError):
    """The update cannot be applied or proposed as it stands; the message says what to do."""


@dataclass(frozen=True)
class TemplateSource:
    """Where the repo came from, as its engine recorded it."""

    engine: str  # copier or cruft
    url: str
    commit: str  # a release tag, a `git describe` string or a commit SHA


def recorded_source(root: Path) -> TemplateSource:
    """Read the engine's record (copier's answers file or cruft's .cruft.json), refusing a source git would
    read as an option: the record is a file in the repo, and CI passes it to git."""
    source = _recorded(root)
    if not source.url or source.url.startswith("-") or any(ord(c) < 32 for c in source.url):
        raise TemplateUpdateError(
            f"the template source {source.url!r} recorded in the repo is not a git URL or path:"
            " fix its record"
            " (.copier-answers.yml or .cruft.json)"
        )
    return source


def _recorded(root: Path) -> TemplateSource:
    if (root / COPIER_ANSWERS).is_file():
        answers = yaml.safe_load((root / COPIER_ANSWERS).read_text(encoding="utf-8")) or {}
        return TemplateSource("copier", str(answers.get("_src_path", "")), str(answers.get("_commit", "")))
    if (root / CRUFT_RECORD).is_file():
        record = json.loads((root / CRUFT_RECORD).read_text(encoding="utf-8"))
        return TemplateSource("cruft", str(record.get("template", "")), str(record.get("commit", "")))
    raise TemplateUpdateError(
        f"{root} records no template ({COPIER_ANSWERS} or {CRUFT_RECORD}): create the repo with"
        " `copier copy` or `cruft create` to receive template updates"
    )


def version_of(tag: str) -> tuple[int, int, int]:
    match = RELEASE_TAG.fullmatch(tag)
    if match is None:
        raise TemplateUpdateError(f"{tag!r} is not a release tag (vMAJOR.MINOR.PATCH)")
    return int(match["major"]), int(match["minor"]), int(match["patch"])


def releases(url: str, env: Mapping[str, str], run: Run) -> dict[str, str]:
    """The template's release tags and the commits they point at (annotated tags peeled)."""
    listing = run(["git", "ls-remote", "--tags", url], env)
    tags: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, ref = line.partition("\trefs/tags/")
        name = ref.removesuffix("^{}")
        if RELEASE_TAG.fullmatch(name) and (name not in tags or ref.endswith("^{}")):
            tags[name] = sha
    return tags


def current_release(source: TemplateSource, tags: dict[str, str]) -> str:
    """The release the repo is on: the tag it recorded, the tag of the commit it recorded, or the tag it
    was described from."""
    if source.commit in tags:
        return source.commit
    by_commit = [tag for tag, sha in tags.items() if source.commit and sha.startswith(source.commit)]
    if by_commit:
        return max(by_commit, key=version_of)
    described = DESCRIBED.fullmatch(source.commit)
    if described and described["tag"] in tags:
        return described["tag"]
    raise TemplateUpdateError(
        f"cannot tell which release of {source.url} this repo is on ({source.commit!r} is no release tag):"
        " update once by hand to a release (copier update --vcs-ref vX.Y.Z, cruft update --checkout vX.Y.Z)"
    )


def changelog_entries(url: str, current: str, target: str, env: Mapping[str, str], run: Run) -> str:
    """The template CHANGELOG's sections after `current` up to and including `target`."""
    with tempfile.TemporaryDirectory() as folder:
        run(["git", "clone", "--quiet", "--depth", "1", "--branch", target, url, folder], env)
        changelog = Path(folder, "CHANGELOG.md")
        text = changelog.read_text(encoding="utf-8") if changelog.is_file() else ""
    headings = list(CHANGELOG_HEADING.finditer(text))
    sections = [
        text[heading.start() : following.start() if following else len(text)].strip()
        for heading, following in zip(headings, [*headings[1:], None], strict=True)
        if RELEASE_TAG.fullmatch(heading["version"])
        and version_of(current) < version_of(heading["version"]) <= version_of(target)
    ]
    return "\n\n".join(sections) or f"(the template's CHANGELOG.md at {target} has no entries for this range)"


def apply_command(root: Path, source: TemplateSource, target: str) -> list[str]:
    """The engine's own update to `target`; conflicts are left in the files for conflicted_files()."""
    if source.engine == "copier":
        return [sys.executable, "-m", "copier", "update", "--trust", "--defaults", "--conflict", "inline",
                "--vcs-ref", target, str(root)]  # fmt: skip
    return [sys.executable, "-m", "cruft", "update", "--skip-apply-ask", "--checkout", target,
            "--project-dir", str(root)]  # fmt: skip


def conflicted_files(root: Path, env: Mapping[str, str], run: Run) -> list[str]:
    """Files the merge could not decide: unmerged in git, holding conflict markers, or rejected (.rej)."""
    changed = run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"], env)
    paths = {line[3:] for line in changed.splitlines()}
    unmerged = {line[3:] for line in changed.splitlines() if "U" in line[:2] or line[:2] in ("AA", "DD")}
    marked = {
        path
        for path in paths
        if (root / path).is_file() and CONFLICT_MARKER.search((root / path).read_bytes())
    }
    rejected = {path for path in paths if path.endswith(".rej")}
    return sorted(unmerged | marked | rejected)


def update(root: Path, env: Mapping[str, str], run: Run = run_command) -> str | None:
    """Apply the newest template release on a branch and commit it; None when already up to date."""
    source = recorded_source(root)
    tags = releases(source.url, env, run)
    if not tags:
        raise TemplateUpdateError(f"{source.url} has no release tags (vX.Y.Z): nothing to update to")
    current, newest = current_release(source, tags), max(tags, key=version_of)
    if version_of(newest) <= version_of(current):
        print(f"Template is up to date: {current} is the newest release of {source.url}.")
        return None
    git = ["git", "-C", str(root)]
    if run([*git, "status", "--porcelain"], env):
        raise TemplateUpdateError("the work tree has uncommitted changes: commit or stash them, then re-run")
    branch = f"template-update/{newest}"
    run([*git, "switch", "--quiet", "-c", branch], env)
    run(apply_command(root, source, newest), env)
    conflicts = conflicted_files(root, env, run)
    if conflicts:
        raise TemplateUpdateError(
            f"template {current} -> {newest} conflicts in {', '.join(conflicts)}: resolve them on branch"
            f" {branch} and commit (nothing was committed or pushed)"
        )
    run([*git, "add", "--all"], env)
    title = f"Update the template from {current} to {newest}"
    run([*git, *identity(root), "commit", "--quiet", "-m", title], env)
    body = (
        f"Applies template releases after {current} up to {newest} ({source.engine} update from"
        f" {source.url}).\nRelease pins and the release policy are untouched.\n\n"
        + changelog_entries(source.url, current, newest, env, run)
    )
    pending = root / PENDING
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text(
        json.dumps({"branch": branch, "title": title, "body": body}, indent=2), encoding="utf-8"
    )
    print(f"{title}: committed on branch {branch}; run the PR checks, then `make template-pull-request`.")
    return branch


def propose(root: Path, env: Mapping[str, str], run: Run = run_command, send: Send = send_json) -> str | None:
    """Push the update branch and open its pull request; None when there is no update to propose."""
    pending = root / PENDING
    if not pending.is_file():
        print("No template update to propose.")
        return None
    proposal = json.loads(pending.read_text(encoding="utf-8"))
    url = open_pull_request(proposal["branch"], (proposal["title"], proposal["body"]), env, run, send)
    pending.unlink()
    print(url)
    return url
