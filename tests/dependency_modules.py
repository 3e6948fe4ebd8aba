"""Top-level modules of the rendered project's dependencies: the names `package_name` must not take.

The rendered project puts `src/<package_name>` first on the path, so a package named like a module of one of
its dependencies (or of their requirements) shadows it and the project breaks. The pre-generation hook cannot
read files when it runs, so it embeds the names as `DEPENDENCY_MODULES`; tests/test_hooks.py derives them again
from the rendered project's `[project].dependencies` and its `dev`, `monitor` and `spark` extras, installed in the
template's virtualenv, and fails naming what is missing. To regenerate the constant after changing the dependencies:

    make test PYTEST_ARGS='tests/test_hooks.py'   # installs a rendered project into .venv
    .venv/bin/python tests/dependency_modules.py  # prints DEPENDENCY_MODULES to paste into the hook
"""

from __future__ import annotations

import inspect
import keyword
import re
import sys
import tempfile
import textwrap
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The names a `package_name` answer can take at all (the hook's PACKAGE rule): others need not be listed.
ANSWERABLE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
# mypyc's per-build helper modules (`<hash>__mypyc`): nobody picks such a name, and the hash changes per release.
GENERATED = re.compile(r"[0-9a-f]+__mypyc")
EXTRAS = ("dev", "monitor", "spark")


def project_requirements(pyproject: Path) -> list[str]:
    """The rendered project's runtime dependencies plus its `dev`, `monitor` and `spark` extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return [*project.get("dependencies", []), *(req for extra in EXTRAS for req in optional.get(extra, []))]


def requirement_closure(requirements: Iterable[str]) -> dict[str, metadata.Distribution]:
    """Installed distributions the requirements pull in, recursively, following markers and extras."""
    queue = [(Requirement(spec), "") for spec in requirements]
    extras_walked: dict[str, set[str]] = {}
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    while queue:
        requirement, parent_extra = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = {""} | {canonicalize_name(extra) for extra in requirement.extras}
        if name in extras_walked and extras <= extras_walked[name]:
            continue
        new_extras = extras - extras_walked.get(name, set())
        extras_walked.setdefault(name, set()).update(extras)
        try:
            distribution = found.get(name) or metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        found[name] = distribution
        queue.extend((Requirement(spec), extra) for spec in distribution.requires or [] for extra in new_extras)
    if missing:
        raise LookupError(
            f"not installed, so the closure is incomplete: {', '.join(sorted(missing))}; "
            "install the rendered project with its dev extra first"
        )
    return found


def top_level_modules(distribution: metadata.Distribution) -> set[str]:
    """Importable top-level names a distribution installs: its top_level.txt and what its RECORD holds."""
    names = set((distribution.read_text("top_level.txt") or "").split())
    for file in distribution.files or []:
        top = file.parts[0]
        if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".data")):
            continue  # scripts and data outside site-packages, and metadata
        name = top if len(file.parts) > 1 else inspect.getmodulename(top)
        if name and name.isidentifier():
            names.add(name)
    return names


def dependency_modules(pyproject: Path) -> set[str]:
    """Top-level module names of the project's dependency closure that a `package_name` answer could take."""
    names = set().union(*map(top_level_modules, requirement_closure(project_requirements(pyproject)).values()))
    return {
        name
        for name in names
        if ANSWERABLE.fullmatch(name)
        and not GENERATED.fullmatch(name)
        and not keyword.iskeyword(name)
        and name not in sys.stdlib_module_names
    }


def as_constant(names: Iterable[str]) -> str:
    """The hook's constant, wrapped to the template's line length."""
    lines = textwrap.wrap(" ".join(sorted(names)), width=116, break_on_hyphens=False)
    body = "\n".join(f"    {line}" for line in lines)
    return (
        f'DEPENDENCY_MODULE_NAMES = """\n{body}\n"""\nDEPENDENCY_MODULES = frozenset(DEPENDENCY_MODULE_NAMES.split())'
    )


def main() -> None:
    """Render a default project and print the constant for its dependencies as installed in this venv."""
    from cookiecutter.main import cookiecutter

    template = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as output:
        project = Path(cookiecutter(str(template), no_input=True, output_dir=output))
        print(as_constant(dependency_modules(project / "pyproject.toml")))


if __name__ == "__main__":
    main()
