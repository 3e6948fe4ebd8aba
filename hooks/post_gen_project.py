"""Prune the rendered repo to the chosen options.

Idempotent and free of git or network side effects: cruft re-runs it on every `cruft update`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Paths owned by each CI provider; everything of the providers not chosen is removed.
CI_FILES: dict[str, tuple[str, ...]] = {
    "github": (".github", "docs/ci-github.md"),
    "azure": ("azure-pipelines", "docs/ci-azure.md", "renovate.json"),
    "jenkins": ("Jenkinsfile", "docs/ci-jenkins.md"),
}
# Renovate keeps Azure and Jenkins repos current; GitHub repos use Dependabot under .github/.
SHARED_BY = {"renovate.json": ("azure", "jenkins")}


def paths_to_remove(ci_provider: str) -> list[str]:
    """Files of the other providers, except those the chosen one shares."""
    doomed = []
    for provider, paths in CI_FILES.items():
        if provider == ci_provider:
            continue
        doomed += [p for p in paths if ci_provider not in SHARED_BY.get(p, ())]
    return sorted(set(doomed))


def remove(root: Path, relative: str) -> None:
    """Delete a file or folder if it is still there."""
    target = root / relative
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def main(ci_provider: str, root: Path) -> int:
    for relative in paths_to_remove(ci_provider):
        remove(root, relative)
    return 0


if __name__ == "__main__":
    CI_PROVIDER = json.loads(
        r"""
{{ cookiecutter.ci_provider | tojson }}
""".strip()
    )
    raise SystemExit(main(CI_PROVIDER, Path.cwd()))
