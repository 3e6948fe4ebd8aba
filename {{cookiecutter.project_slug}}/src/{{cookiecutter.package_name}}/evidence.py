"""Evidence stage: the one page per model version a reviewer judges a release gate from.

`make evidence VERSION=N` reads what the registry holds about a version (its tags, the back-test record and
the data-gate summary logged with its run, the release history) and writes `reports/evidence-vN.md`
(printed too, for CI job summaries) and `reports/evidence-vN.html` (one self-contained page with the plot).
Both are logged to the version's run under `evidence/`, and a one-line summary becomes the version's
description, which the MLflow UI shows first. What is missing is shown as missing, not as an error.
Light on purpose: no pandas, plotting or data-validation library is imported here.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
import tempfile
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.backtest_record import BacktestRecord
from {{ cookiecutter.package_name }}.evidence_report import Evidence, html_page, markdown, md, short_form
from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# Artefacts of the version's run: training writes the data gate's, this stage its own.
GATE_SUMMARY_ARTIFACT = "data_validation/summary.json"
DATA_DOCS_ARTIFACT_DIR = "data_validation/data-docs"
ARTIFACT_DIR = "evidence"


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    """A small artefact of a run, or None when the run has nothing at that path."""
    if path not in {item.path for item in client.list_artifacts(run_id, posixpath.dirname(path))}:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_text()


def _backtest(
    client: MlflowClient, run_id: str, version: str, tags: dict[str, str]
) -> tuple[BacktestRecord | None, str]:
    """The back-test record that belongs to the version's tags, or why there is none to show."""
    if not tags.get("backtest_verdict"):
        return None, f"run `make backtest VERSION={version}`"
    again = f"run `make backtest VERSION={version}` again"
    text = _artifact_text(client, run_id, BacktestRecord.artifact_path(version))
    if text is None:
        return None, f"no back-test record was logged with this version's run: {again}"
    try:
        record = BacktestRecord.from_json(text)
    except ValueError:
        return None, f"the back-test record on this version's run is unreadable: {again}"
    if record.at != tags.get("backtest_at") or record.passed != (tags["backtest_verdict"] == "passed"):
        return None, f"the back-test record does not match the version's tags (interrupted?): {again}"
    return record, ""


def _gate(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The data gate's summary logged by training, or None (older versions have none)."""
    text = _artifact_text(client, run_id, GATE_SUMMARY_ARTIFACT)
    try:
        summary = json.loads(text) if text else None
    except ValueError:
        return None
    return summary if isinstance(summary, dict) else None


def _scenarios(client: MlflowClient, run_id: str, tags: dict[str, str]) -> list[dict[str, Any]] | None:
    """A per-scenario training's table of its scenarios; None for a global model, [] when it is missing."""
    if tags.get(registry.GRANULARITY) != "per_scenario":
        return None
    text = _artifact_text(client, run_id, registry.SCENARIOS_ARTIFACT)
    try:
        table = json.loads(text) if text else []
    except ValueError:
        return []
    return [row for row in table if isinstance(row, dict)] if isinstance(table, list) else []


def _local_folder(artifact_uri: str) -> Path | None:
    """The folder of a run's artefacts when it is on this machine's file system."""
    parts = urllib.parse.urlsplit(artifact_uri)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    return Path(artifact_uri) if not parts.scheme and artifact_uri.startswith("/") else None


def _docs_links(tracking_uri: str, run: Run, pages: Any) -> dict[str, str]:
    """Each suite's Data Docs page on the run: a file URL (local store), the MLflow UI (server) or runs:/."""
    if not isinstance(pages, dict):
        return {}
    local = _local_folder(run.info.artifact_uri)
    server = tracking_uri.startswith(("http://", "https://"))
    links = {}
    for suite, page in pages.items():
        if str(page).startswith("/") or ".." in PurePosixPath(str(page)).parts:
            continue
        artifact = f"{DATA_DOCS_ARTIFACT_DIR}/{page}"
        if local is not None:
            links[str(suite)] = (local / artifact).as_uri()
        elif server:
            run_page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            links[str(suite)] = (
                f"{shareable_uri(tracking_uri).rstrip('/')}/{run_page}/artifactPath/{urllib.parse.quote(artifact)}"
            )
        else:
            links[str(suite)] = f"runs:/{run.info.run_id}/{artifact}"
    return links


def gather(client: MlflowClient, settings: Settings, version: str) -> Evidence:
    """Read one version's evidence; RegistryError (one line) when the version does not exist."""
    model_version = registry.get_version(client, settings.model_name, version)
    tags, run_id = dict(model_version.tags), model_version.run_id
    record, missing = _backtest(client, run_id, version, tags)
    gate = _gate(client, run_id)
    held = registry.environment_aliases(client, settings.model_name)
    return Evidence(
        model=settings.model_name,
        version=version,
        run_id=run_id,
        tags=tags,
        aliases=sorted(environment for environment, number in held.items() if number == version),
        backtest=record,
        backtest_missing=missing,
        gate=gate,
        docs_links=_docs_links(settings.tracking_uri, client.get_run(run_id), (gate or {}).get("pages")),
        releases=_releases(registry.release_tags(client, settings.model_name), version),
        scenarios=_scenarios(client, run_id, tags),
    )


def _releases(model_tags: dict[str, str], version: str) -> list[dict[str, str]]:
    """The release history entries that moved this version in or out of an environment, oldest first."""
    return [
        {key: str(value) for key, value in entry.items()}
        for entry in registry.release_history(model_tags)
        if version in (str(entry.get("version")), str(entry.get("from_version")))
    ]


def write_evidence(settings: Settings, version: str) -> int:
    """Entry point of `make evidence`: write, log and print one version's evidence; describe the version."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for the one line
    client = registry.connect(settings)
    evidence = gather(client, settings, version)
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    page = settings.reports_dir / f"evidence-v{version}.html"
    summary = settings.reports_dir / f"evidence-v{version}.md"
    text = markdown(evidence, page.name)
    summary.write_text(text)
    page.write_text(html_page(evidence))
    for path in (summary, page):
        client.log_artifact(evidence.run_id, str(path), ARTIFACT_DIR)
    client.update_model_version(settings.model_name, version, description=md(short_form(evidence)))
    print(text, end="")
    print(
        f"Evidence of version {version}: {summary} and {page} (logged to its run under {ARTIFACT_DIR}/)",
        file=sys.stderr,
    )
    return 0
