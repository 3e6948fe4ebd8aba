"""The template-update pipeline's decisions: which release the repo is on, what is newer, what the PR says."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.template_update import (
    PENDING,
    TemplateSource,
    TemplateUpdateError,
    changelog_entries,
    current_release,
    propose,
    recorded_source,
    releases,
)

SHA = {"v1.0.0": "a" * 40, "v1.1.0": "b" * 40, "v1.10.0": "c" * 40}
CHANGELOG = """# Changelog

## v1.10.0 — 2027-03-01
- ten

## v1.1.0 — 2026-12-03
- one

## v1.0.0 — 2026-12-02
- first
"""


class FakeGit:
    """Answers `git ls-remote` with a listing and `git clone` with a CHANGELOG; records every command."""

    def __init__(self, listing: str = "", changelog: str = CHANGELOG) -> None:
        self.listing = listing
        self.changelog = changelog
        self.commands: list[list[str]] = []
        self.requests: list[tuple[str, str, object]] = []

    def run(self, args: Sequence[str], env: Mapping[str, str]) -> str:
        self.commands.append(list(args))
        if args[:2] == ["git", "clone"]:
            Path(args[-1], "CHANGELOG.md").write_text(self.changelog)
        return self.listing if args[:2] == ["git", "ls-remote"] else ""

    def send(self, method: str, url: str, headers: Mapping[str, str], body: object = None) -> object:
        self.requests.append((method, url, body))
        return {"html_url": "https://github.com/acme/demand-forecast/pull/12"}


def test_releases_are_semantic_version_tags_with_annotated_tags_peeled() -> None:
    listing = "\n".join(
        [
            f"{'1' * 40}\trefs/tags/v1.1.0",  # the annotated tag object...
            SHA["v1.1.0"] + "\trefs/tags/v1.1.0^{}",  # ...and the commit it tags
            f"{SHA['v1.0.0']}\trefs/tags/v1.0.0",
            f"{'d' * 40}\trefs/tags/nightly",
            f"{'e' * 40}\trefs/tags/v2.0.0-rc1",
        ]
    )
    assert releases("url", {}, FakeGit(listing).run) == {"v1.1.0": SHA["v1.1.0"], "v1.0.0": SHA["v1.0.0"]}


@pytest.mark.parametrize(
    ("recorded", "release"),
    [
        ("v1.1.0", "v1.1.0"),  # copier, made from a tag
        (SHA["v1.0.0"], "v1.0.0"),  # cruft records the commit
        ("v1.1.0-3-g0123abc", "v1.1.0"),  # copier, made from a commit after a tag
    ],
)
def test_the_current_release_is_found_from_what_the_engine_recorded(recorded: str, release: str) -> None:
    assert current_release(TemplateSource("copier", "url", recorded), SHA) == release


def test_an_unknown_recorded_commit_is_refused_with_the_way_out() -> None:
    with pytest.raises(TemplateUpdateError, match="update once by hand to a release"):
        current_release(TemplateSource("cruft", "url", "f" * 40), SHA)


def test_a_repo_without_a_template_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateUpdateError, match="copier copy` or `cruft create"):
        recorded_source(tmp_path)


def test_copier_record_is_read_before_cruft(tmp_path: Path) -> None:
    (tmp_path / ".copier-answers.yml").write_text("_commit: v1.0.0\n_src_path: gh:acme/template\n")
    (tmp_path / ".cruft.json").write_text(json.dumps({"template": "x", "commit": "y"}))
    assert recorded_source(tmp_path) == TemplateSource("copier", "gh:acme/template", "v1.0.0")


def test_the_pr_quotes_the_changelog_entries_of_the_range_only() -> None:
    # versions compare as numbers: v1.10.0 is after v1.1.0
    entries = changelog_entries("url", "v1.0.0", "v1.10.0", {}, FakeGit().run)
    assert entries.startswith("## v1.10.0") and "- one" in entries and "- first" not in entries


def test_proposing_pushes_the_update_branch_and_opens_the_pr(tmp_path: Path) -> None:
    # given a committed update waiting for its PR, on Jenkins with a GitHub remote
    pending = tmp_path / PENDING
    pending.parent.mkdir(parents=True)
    proposal = {"branch": "template-update/v1.1.0", "title": "Update the template", "body": "## v1.1.0"}
    pending.write_text(json.dumps(proposal))
    env = {"JENKINS_URL": "https://ci", "GIT_URL": "https://github.com/acme/demand-forecast.git"}
    fake = FakeGit()
    # when
    url = propose(tmp_path, {**env, "GIT_USERNAME": "bot", "GIT_TOKEN": "t0ken"}, fake.run, fake.send)
    # then the branch is pushed, the PR opened into the default branch with the proposal's text, and done
    assert url == "https://github.com/acme/demand-forecast/pull/12"
    assert fake.commands == [["git", "push", "origin", "HEAD:refs/heads/template-update/v1.1.0"]]
    (_, api, body) = fake.requests[0]
    assert api == "https://api.github.com/repos/acme/demand-forecast/pulls"
    assert body == {
        "title": "Update the template",
        "body": "## v1.1.0",
        "head": proposal["branch"],
        "base": "main",
    }
    assert not pending.exists()


def test_nothing_is_proposed_without_an_update(tmp_path: Path) -> None:
    fake = FakeGit()
    assert propose(tmp_path, {"JENKINS_URL": "https://ci"}, fake.run, fake.send) is None
    assert fake.commands == [] and fake.requests == []


@pytest.mark.parametrize("source", ["--upload-pack=touch /tmp/owned", "", "https://x/t\n--bare"])
def test_a_recorded_source_git_would_read_as_an_option_is_refused(tmp_path: Path, source: str) -> None:
    (tmp_path / ".copier-answers.yml").write_text(f"_commit: v1.0.0\n_src_path: {json.dumps(source)}\n")
    with pytest.raises(TemplateUpdateError, match="is not a git URL or path"):
        recorded_source(tmp_path)
