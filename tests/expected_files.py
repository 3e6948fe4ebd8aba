"""The exact files each option combination renders: a table, so a change to the tree is a visible diff."""

from __future__ import annotations

COMMON = {
    ".gitignore",
    ".pre-commit-config.yaml",
    "Makefile",
    "README.md",
    "pyproject.toml",
    "src/{package}/__init__.py",
    "src/{package}/__main__.py",
    "src/{package}/cli.py",
    "src/{package}/settings.py",
    "src/{package}/registry.py",
    "tests/test_cli.py",
}

# Serving image, GitOps manifests and back-test infrastructure-as-code.
DEPLOY: set[str] = set()

BY_PROVIDER = {
    "github": {
        ".github/workflows/pr.yml",
    },
    "azure": {
        "azure-pipelines/pr.yml",
    },
    "jenkins": {
        "Jenkinsfile",
    },
}


def expected_files(ci_provider: str, package: str) -> set[str]:
    """Files a render must contain, no more and no fewer."""
    return {path.format(package=package) for path in COMMON | DEPLOY | BY_PROVIDER[ci_provider]}
