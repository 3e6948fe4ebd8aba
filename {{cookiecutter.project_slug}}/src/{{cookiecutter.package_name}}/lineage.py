"""Lineage: everything recorded about a version, for a reviewer or an auditor, in one place."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.contract import scenario_name
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:  # the registry imports MLflow when a command first talks to it
    from mlflow.tracking import MlflowClient


def describe_version(client: MlflowClient, name: str, version: str) -> dict[str, Any]:
    """Code, data, params, metrics, environment, stage, aliases and evidence of one version."""
    model_version = registry.get_version(client, name, version)
    run = client.get_run(model_version.run_id)
    tags = dict(model_version.tags)
    history = [
        entry
        for entry in registry.release_history(registry.release_tags(client, name))
        if str(version) in (entry["version"], entry["from_version"])
    ]
    aliases = [
        environment
        for environment, number in registry.environment_aliases(client, name).items()
        if number == str(version)
    ]
    return {
        "model": name,
        "version": str(model_version.version),
        "stage": tags.get("stage", "unknown"),
        "aliases": sorted(aliases),
        "run_id": model_version.run_id,
        "code": {"git_sha": tags.get("git_sha"), "git_dirty": tags.get("git_dirty")},
        "data": {"fingerprint": tags.get("data_fingerprint"), "snapshot": tags.get("data_snapshot")},
        "environment_lock_hash": run.data.tags.get("env_lock_hash"),
        "params": dict(sorted(run.data.params.items())),
        "metrics": dict(sorted(run.data.metrics.items())),
        "evidence": dict(sorted(tags.items())),
        "releases": history,
    }


def describe_scenario(
    client: MlflowClient, record: dict[str, Any], scenario: tuple[str, str]
) -> dict[str, Any]:
    """One scenario of a per-scenario version: its status, data slice and metrics, and the run (code,
    params) its model came from."""
    from mlflow.exceptions import MlflowException

    name = scenario_name(*scenario)
    if record["evidence"].get(registry.GRANULARITY) != "per_scenario":
        raise registry.RegistryError(
            f"version {record['version']} is one global model, not one per scenario: ask without SCENARIO"
        )
    table = registry.scenario_table(record["version"], record["run_id"], record["evidence"]) or []
    found = next((row for row in table if row["scenario"] == name), None)
    if found is None:
        raise registry.RegistryError(
            f"version {record['version']} has no scenario {name}: it has {len(table)}, e.g."
            f" {', '.join(row['scenario'] for row in table[:3])}"
        )
    try:
        run = client.get_run(str(found.get("run_id")))
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise registry.RegistryError(
            f"scenario {name} of version {record['version']} names run {found.get('run_id')!r}, which the"
            " tracking store does not have: its lineage was deleted or never written"
        ) from None
    return {
        **found,
        "code": {"git_sha": run.data.tags.get("git_sha"), "git_dirty": run.data.tags.get("git_dirty")},
        "params": dict(sorted(run.data.params.items())),
    }


def _named(version: str) -> str:
    return version if version == "none" else f"v{version}"


def _as_text(record: dict[str, Any]) -> str:
    lines = [
        f"{record['model']} version {record['version']}  stage={record['stage']}  aliases={record['aliases']}"
    ]
    lines.append(f"  run_id            {record['run_id']}")
    lines.append(f"  code              {record['code']['git_sha']} (dirty={record['code']['git_dirty']})")
    lines.append(f"  data fingerprint  {record['data']['fingerprint']}")
    lines.append(f"  data snapshot     {record['data']['snapshot']}")
    lines.append(f"  environment lock  sha256:{record['environment_lock_hash']}")
    for section in ("params", "metrics", "evidence"):
        lines.append(f"  {section}:")
        lines += [f"    {key:<28} {value}" for key, value in record[section].items()]
    lines.append("  releases (append-only history):")
    lines += [
        f"    {entry['approved_at']}  {entry['action']:<9} {entry['environment']:<10}"
        f" {_named(entry['from_version'])} -> v{entry['version']}  approved by {entry['approved_by']}"
        f"  run {entry['ci_run']}  commit {entry['commit']}"
        for entry in record["releases"]
    ] or ["    none"]
    return "\n".join(lines)


def version_rows(client: MlflowClient, name: str) -> list[dict[str, str]]:
    """One row per registered version, newest first: what a reviewer needs to pick one."""
    held: dict[str, list[str]] = {}
    for environment, number in sorted(registry.environment_aliases(client, name).items()):
        held.setdefault(number, []).append(environment)
    rows = []
    for model_version in client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]):
        tags, number = model_version.tags, str(model_version.version)
        dirty = " dirty" if tags.get("git_dirty") == "true" else ""
        rows.append(
            {
                "version": number,
                "stage": tags.get("stage", "-") if registry.is_complete(model_version) else "incomplete",
                "alias": ",".join(held.get(number, ["-"])),
                "backtest": tags.get("backtest_verdict", "-"),
                "trained_by": tags.get("trained_by", "-"),
                "commit": tags.get("git_sha", "-")[:8] + dirty,
            }
        )
    return rows


def show_versions(settings: Settings) -> int:
    """Entry point of `versions`: every version with its stage, alias, back-test verdict and trainer."""
    rows = version_rows(registry.connect(settings), settings.model_name)
    if not rows:
        print(f"No versions of {settings.model_name} yet: run `make train` first.", file=sys.stderr)
        return 1
    columns = ("version", "stage", "alias", "backtest", "trained_by", "commit")
    widths = {column: max(len(column), *(len(row[column]) for row in rows)) for column in columns}
    for row in [dict(zip(columns, columns, strict=True)), *rows]:
        print("  ".join(row[column].ljust(widths[column]) for column in columns).rstrip())
    print("Details of one: make lineage VERSION=N")
    return 0


def _scenario_as_text(record: dict[str, Any]) -> str:
    scenario = record["scenario"]
    lines = [f"{record['model']} version {record['version']}  scenario {scenario['scenario']}"]
    for key in (
        "decision",  # improved / new: this version's own run; kept: production's model, from `run_id`
        "decision_reason",
        "status",
        "reason",
        "rows",
        "weeks",
        "data_fingerprint",
        "mae",
        "rmse",
        "wape",
        "bias",
        "run_id",
    ):
        if key in scenario:  # versions trained before champion/challenger per scenario have no decision
            lines.append(f"  {key:<17} {scenario[key]}")
    lines.append(f"  code              {scenario['code']['git_sha']} (dirty={scenario['code']['git_dirty']})")
    lines.append("  params:")
    lines += [f"    {key:<28} {value}" for key, value in scenario["params"].items()]
    return "\n".join(lines)


def show_lineage(
    settings: Settings,
    version: str | None = None,
    as_json: bool = False,
    scenario: tuple[str, str] | None = None,
) -> int:
    """Entry point of `lineage`: print one version's record (the newest when none is named), or one of its
    scenarios' when SCENARIO names one."""
    client = registry.connect(settings)
    if version is None:
        newest = registry.latest_version(client, settings.model_name)
        if newest is None:
            print(f"No versions of {settings.model_name} yet: run `make train` first.", file=sys.stderr)
            return 1
        version = str(newest.version)
    record = describe_version(client, settings.model_name, version)
    if scenario is not None:
        brief = {key: record[key] for key in ("model", "version", "stage", "aliases")}
        record = {**brief, "scenario": describe_scenario(client, record, scenario)}
        print(json.dumps(record, indent=2) if as_json else _scenario_as_text(record))
        return 0
    print(json.dumps(record, indent=2) if as_json else _as_text(record))
    return 0
