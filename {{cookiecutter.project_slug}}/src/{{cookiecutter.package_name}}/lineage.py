"""Lineage: everything recorded about a version, for a reviewer or an auditor, in one place."""

from __future__ import annotations

import json
from typing import Any

from mlflow.tracking import MlflowClient

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.settings import Settings


def describe_version(client: MlflowClient, name: str, version: str) -> dict[str, Any]:
    """Code, data, params, metrics, environment, stage, aliases and evidence of one version."""
    model_version = registry.get_version(client, name, version)
    run = client.get_run(model_version.run_id)
    tags = dict(model_version.tags)
    history = [
        entry
        for entry in registry.release_history(registry.model_tags(client, name))
        if str(version) in (entry["version"], entry["from_version"])
    ]
    aliases = [
        alias
        for alias, number in client.get_registered_model(name).aliases.items()
        if str(number) == str(version)
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


def show_lineage(settings: Settings, version: str | None = None, as_json: bool = False) -> int:
    """Entry point of `lineage`: print one version's record (the newest when none is named)."""
    client = registry.connect(settings)
    if version is None:
        newest = registry.latest_version(client, settings.model_name)
        if newest is None:
            print(f"No versions of {settings.model_name} yet: run `make train` first.")
            return 1
        version = str(newest.version)
    record = describe_version(client, settings.model_name, version)
    print(json.dumps(record, indent=2) if as_json else _as_text(record))
    return 0
