"""Prune the rendered repo to the chosen options, then say what to run first.

Cookiecutter's post-generation hook and copier's second task. Idempotent and free of git or network side
effects: cruft re-runs it on every `cruft update`, copier on each of the copies `copier update` compares.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

# Paths owned by each CI provider; everything of the providers not chosen is removed.
CI_FILES: dict[str, tuple[str, ...]] = {
    "github": (".github", "docs/ci-github.md"),
    "azure": ("azure-pipelines", "docs/ci-azure.md", "renovate.json"),
    "jenkins": ("Jenkinsfile", "Jenkinsfile.monitor", "Jenkinsfile.template-update", "docs/ci-jenkins.md"),
}
# Renovate keeps Azure and Jenkins repos current; GitHub repos use Dependabot under .github/.
SHARED_BY = {"renovate.json": ("azure", "jenkins")}
# Copier's answers file: `copier update` reads it; cookiecutter renders it empty, and cruft keeps .cruft.json.
COPIER_ANSWERS = ".copier-answers.yml"


def paths_to_remove(ci_provider: str, engine: str = "cookiecutter") -> list[str]:
    """Files of the other providers, except those the chosen one shares, and the other engine's answers file."""
    doomed = [] if engine == "copier" else [COPIER_ANSWERS]
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


def main(answers: dict[str, object], root: Path, operation: str | None = None) -> int:
    """Prune; announce the next steps only on a first render into the user's folder.

    `operation` is copier's (copy or update); cookiecutter passes none and sets _output_dir, which cruft's
    re-runs in temporary folders do not.
    """
    engine = "cookiecutter" if operation is None else "copier"
    for relative in paths_to_remove(str(answers["ci_provider"]), engine):
        remove(root, relative)
    if operation == "copy" or (operation is None and "_output_dir" in answers):
        print(next_steps(root))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2:  # copier's task: the answers, then the operation
        raise SystemExit(main(json.loads(sys.argv[1]), Path.cwd(), sys.argv[2]))
    ANSWERS = json.loads(
        r"""
{{ cookiecutter | tojson }}
""".strip()
    )
    raise SystemExit(main(ANSWERS, Path.cwd()))
