"""Validate the template answers before anything is written.

Runs under the Python that runs cookiecutter, so it uses the standard library only.
Each bad answer prints one line naming the field, the value and the rule; the hook then
exits non-zero and cookiecutter removes the half-made project folder.
"""

# Jinja renders this file: the raw block keeps the rules' literal braces out of its reach.
# {% raw %}
from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Callable

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
REGISTRY = re.compile(
    r"^(localhost|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)(:[0-9]{1,5})?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
GIT_URL = re.compile(r"^(https://|ssh://git@)[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)+$")
BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
TRACKING_URI = re.compile(
    r"^(sqlite:///[A-Za-z0-9._/-]+\.db|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._/-]*)?|databricks)$"
)
UNSAFE_TEXT = re.compile(r'[\x00-\x1f\x7f"\\`]|\{\{|\}\}|\{%|%\}|\{#|\$\(|\$\{')
# Suffixes appended to names in manifests ("-production", "-backtest-<version>"): keep room for them.
MAX_NAMESPACE = 40
RESERVED_PACKAGES = {"mlflow", "sklearn", "pandas", "numpy", "great_expectations", "test", "tests", "src"}
PYTHON_VERSIONS = ("3.11", "3.12")
CI_PROVIDERS = ("github", "azure", "jenkins")

Check = Callable[[str], str | None]


def safe_text(max_length: int) -> Check:
    """Free text lands in TOML, YAML and Markdown: refuse anything that could break out of a string."""

    def check(value: str) -> str | None:
        if not value.strip():
            return "must not be empty"
        if len(value) > max_length:
            return f"must be at most {max_length} characters"
        if UNSAFE_TEXT.search(value):
            return "must not contain quotes, backslashes, backticks, control characters, '{{', '{%', '$(' or '${'"
        return None

    return check


def slug(value: str) -> str | None:
    """The slug is the pip distribution name and the prefix of every Kubernetes object name."""
    if not SLUG.match(value):
        return "use lowercase letters, digits and single hyphens, starting with a letter (e.g. demand-forecast)"
    if len(value) > MAX_NAMESPACE:
        return f"must be at most {MAX_NAMESPACE} characters (Kubernetes names get suffixes)"
    return None


def package(value: str) -> str | None:
    """The package is imported by name: it must be an identifier that shadows nothing."""
    if not PACKAGE.match(value) or not value.isidentifier():
        return "use lowercase letters, digits and underscores, starting with a letter (e.g. demand_forecast)"
    if keyword.iskeyword(value):
        return "must not be a Python keyword"
    if value in sys.stdlib_module_names or value in RESERVED_PACKAGES:
        return "must not shadow a standard-library or dependency module; pick a product-specific name"
    return None


def dns_label(value: str) -> str | None:
    """Kubernetes object names follow RFC 1123 labels."""
    if len(value) > MAX_NAMESPACE:
        return f"must be at most {MAX_NAMESPACE} characters (Kubernetes names get suffixes)"
    if not DNS_1123_LABEL.match(value):
        return "must be a DNS-1123 label: lowercase letters, digits and hyphens, starting and ending alphanumeric"
    return None


def email(value: str) -> str | None:
    """The email goes into package metadata and CODEOWNERS-style contacts."""
    return None if EMAIL.match(value) else "must look like name@example.com"


def registry(value: str) -> str | None:
    """Image references are <registry>/<slug>:<tag>; the registry part is host[:port][/path]."""
    if not REGISTRY.match(value):
        return "must be a registry host with optional path, lowercase, no scheme (e.g. ghcr.io/acme)"
    return None


def git_url(value: str) -> str | None:
    """Flux clones the repo from this URL."""
    if not GIT_URL.match(value):
        return "must be an https:// or ssh://git@ URL of the repo (e.g. https://github.com/acme/demand-forecast)"
    return None


def branch(value: str) -> str | None:
    """Pipelines trigger on this branch and Flux tracks it."""
    if not BRANCH.match(value) or ".." in value or value.endswith((".", "/", ".lock")):
        return "must be a valid git branch name (e.g. main)"
    return None


def tracking_uri(value: str) -> str | None:
    """MLflow 3 refuses the old file: store; a server or an SQLite file are the supported choices."""
    if not TRACKING_URI.match(value):
        return "must be sqlite:///<file>.db, http(s)://host[:port] of an MLflow server, or databricks"
    return None


def choice(allowed: tuple[str, ...]) -> Check:
    """Choice answers can still be overridden on the command line."""

    def check(value: str) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


RULES: dict[str, Check] = {
    "project_name": safe_text(60),
    "project_slug": slug,
    "package_name": package,
    "description": safe_text(200),
    "author_name": safe_text(80),
    "author_email": email,
    "python_version": choice(PYTHON_VERSIONS),
    "ci_provider": choice(CI_PROVIDERS),
    "git_repo_url": git_url,
    "default_branch": branch,
    "container_registry": registry,
    "k8s_namespace": dns_label,
    "model_name": dns_label,
    "mlflow_tracking_uri": tracking_uri,
}


def validate(answers: dict[str, object]) -> list[str]:
    """Return one message per bad answer, in the order the prompts ask them."""
    errors = []
    for field, check in RULES.items():
        value = answers.get(field)
        problem = "must be text" if not isinstance(value, str) else check(value)
        if problem:
            errors.append(f"ERROR: {field}={value!r} is invalid: {problem}.")
    return errors


def main(answers: dict[str, object]) -> int:
    """Print every problem and fail, so the user fixes all answers in one go."""
    errors = validate(answers)
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        print("Nothing was generated. Re-run cookiecutter with corrected answers.", file=sys.stderr)
    return 1 if errors else 0


# {% endraw %}
if __name__ == "__main__":
    ANSWERS = json.loads(
        r"""
{{ cookiecutter | tojson }}
""".strip()
    )
    raise SystemExit(main(ANSWERS))
