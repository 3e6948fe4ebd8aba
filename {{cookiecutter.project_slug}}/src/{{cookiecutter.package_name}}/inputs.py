"""Values a person or CI hands to a command (VERSION, ENV, CONFIG, PORT), checked as whole strings.

Make recipes never expand these variables: the CLI reads them from its options or, failing that, from the
environment, so a value is always data and never code. A bad value stops the command with one line naming
the variable, what is wrong and how to fix it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.contract import CATEGORIES, SCENARIO_SEPARATOR, STORE_ID_PATTERN
from {{ cookiecutter.package_name }}.settings import variable

PORT = re.compile(r"[1-9][0-9]{0,4}")
COUNT = re.compile(r"[1-9][0-9]{0,5}")
MAX_SCENARIOS = 100_000  # a laptop's synthetic data set; real data names its own series
ENGINES = ("local", "spark")
GRANULARITIES = ("global", "per_scenario")  # config/train.toml `granularity`: one model, or one per scenario
CONFIG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}\.toml")


class InputError(Exception):
    """A value passed to a command is missing or malformed; the message names it and the fix."""


class MissingInput(InputError):
    """A required value was not given at all: the command answers with its usage line."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is required")


def _value(given: str | None, name: str, env: Mapping[str, str]) -> str | None:
    return given if given is not None else variable(name, env)


def version(given: str | None, env: Mapping[str, str] = os.environ, required: bool = True) -> str | None:
    """VERSION: a registry version number."""
    value = _value(given, "VERSION", env)
    if value is None:
        if required:
            raise MissingInput("VERSION")
        return None
    try:
        return registry.parse_version(value)
    except registry.RegistryError as error:
        raise InputError(str(error)) from error


def environment(given: str | None, env: Mapping[str, str] = os.environ) -> str:
    """ENV: the release environment."""
    value = _value(given, "ENV", env)
    if value is None:
        raise MissingInput("ENV")
    if value not in registry.ENVIRONMENTS:
        raise InputError(f"ENV={value!r} is not a release environment: pass ENV=staging or ENV=production")
    return value


def port(given: str | None, env: Mapping[str, str] = os.environ, default: int = 5001) -> int:
    """PORT: a TCP port on 127.0.0.1."""
    value = _value(given, "PORT", env)
    if value is None:
        return default
    if not PORT.fullmatch(value) or int(value) > 65535:
        raise InputError(f"PORT={value!r} is not a TCP port: pass a number from 1 to 65535, e.g. PORT=5001")
    return int(value)


def host(given: str | None) -> str:
    """--host: the IP address a server listens on (0.0.0.0 in a pod, 127.0.0.1 on a laptop)."""
    value = given if given is not None else "127.0.0.1"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InputError(f"--host {value!r} is not an IP address: pass e.g. 127.0.0.1 or 0.0.0.0") from None


def config(
    given: str | None, env: Mapping[str, str] = os.environ, default: str = "config/train.toml"
) -> Path:
    """CONFIG: a TOML file of training parameters inside the repository."""
    value = _value(given, "CONFIG", env) or default
    if not CONFIG.fullmatch(value) or ".." in Path(value).parts:
        raise InputError(
            f"CONFIG={value!r} is not a relative path to a .toml file in this repository, e.g."
            " CONFIG=config/train.toml"
        )
    if not Path(value).is_file():
        raise InputError(
            f"CONFIG={value!r} does not exist: pass a file under config/, e.g. config/train.toml"
        )
    return Path(value)


def scenarios(given: str | None, env: Mapping[str, str] = os.environ, name: str = "SCENARIOS") -> int | None:
    """SCENARIOS (or the benchmark's N): how many store x category series (None: the generator's default)."""
    value = _value(given, name, env)
    if value is None:
        return None
    if not COUNT.fullmatch(value) or int(value) > MAX_SCENARIOS:
        raise InputError(
            f"{name}={value!r} is not a number of series: pass a whole number from 1 to {MAX_SCENARIOS},"
            f" e.g. {name}=500"
        )
    return int(value)


def engine(given: str | None, env: Mapping[str, str] = os.environ) -> str:
    """ENGINE: where per-scenario fits run (local processes, or Spark)."""
    value = _value(given, "ENGINE", env) or "local"
    if value not in ENGINES:
        raise InputError(f"ENGINE={value!r} is not an engine: pass ENGINE=local or ENGINE=spark")
    return value


def scenario(given: str | None, env: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """SCENARIO: one store x category series, written STORE:CATEGORY as in the data (e.g. S01:dairy)."""
    value = _value(given, "SCENARIO", env)
    if value is None:
        return None
    store, _, category = value.partition(SCENARIO_SEPARATOR)
    if not re.fullmatch(STORE_ID_PATTERN.strip("^$"), store) or category not in CATEGORIES:
        raise InputError(
            f"SCENARIO={value!r} is not a scenario: pass STORE:CATEGORY, a store id and one of"
            f" {', '.join(CATEGORIES)}, e.g. S01:dairy"
        )
    return store, category
