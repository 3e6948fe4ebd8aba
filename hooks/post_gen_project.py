"""Prune the rendered repo to the chosen options, then say what to run first.

Idempotent and free of git or network side effects: cruft re-runs it on every `cruft update`.
"""

from __future__ import annotations

import json
import shlex
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


def start_commands(readme: str) -> list[str]:
    """The commands under the README's "Start here", so the hook and the README never disagree."""
    _, found, section = readme.partition("## Start here")
    parts = section.split("```")
    return parts[1].splitlines()[1:] if found and len(parts) > 2 else []


def next_steps(root: Path) -> str:
    """Where the project is and the first commands its README shows."""
    commands = start_commands((root / "README.md").read_text(encoding="utf-8"))
    return "\n".join(
        [
            "Next steps:",
            f"  cd {shlex.quote(str(root))}",
            *(f"  {command}" for command in commands),
            "README.md explains each step; docs/ has a guide per role.",
        ]
    )


def main(answers: dict[str, object], root: Path) -> int:
    for relative in paths_to_remove(str(answers["ci_provider"])):
        remove(root, relative)
    # Only cookiecutter itself sets _output_dir: cruft does not, and re-runs this hook in temporary folders.
    if "_output_dir" in answers:
        print(next_steps(root))
    return 0


if __name__ == "__main__":
    ANSWERS = json.loads(
        r"""
{{ cookiecutter | tojson }}
""".strip()
    )
    raise SystemExit(main(ANSWERS, Path.cwd()))
