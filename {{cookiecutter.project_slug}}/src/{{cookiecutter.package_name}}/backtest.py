"""Back-test stage: replay history through the candidate and the current champion, and record a verdict.

Both models are scored over HTTP, so the same replay runs locally (servers on loopback ports) and in the
cluster back-test environment (infra/backtest/, the candidate's Service URL passed in). The verdict goes on
the version as tags; what decided it (policy, every window's scores, champion) goes on its run as a
`BacktestRecord`, with the report and plot `make evidence` shows a reviewer.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.backtest_record import (
    ARTIFACT_DIR,
    METRICS,
    BacktestRecord,
    Policy,
    ScenarioSummary,
    ScenarioVerdict,
    WindowScore,
    window_plot,
)
from {{ cookiecutter.package_name }}.data import TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.evidence_report import backtest_markdown
from {{ cookiecutter.package_name }}.scenario_models import scenario_names
from {{ cookiecutter.package_name }}.scenario_release import judge_scenarios
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.snapshot import snapshot_of_version

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    candidate_wape: float
    champion_wape: float | None


def rolling_windows(history: pd.DataFrame, windows: int, window_weeks: int) -> list[pd.DataFrame]:
    """The newest `windows * window_weeks` weeks, cut into consecutive windows, oldest first."""
    weeks = sorted(history["week_start"].unique())[-windows * window_weeks :]
    return [
        history[history["week_start"].isin(weeks[i : i + window_weeks])].reset_index(drop=True)
        for i in range(0, len(weeks), window_weeks)
    ]


class ScoringRefused(registry.RegistryError):
    """The replay cannot judge a model: a window with nothing to ask it, or forecasts that are not numbers."""


@dataclass(frozen=True)
class Replayed:
    """One model's forecasts for every row of the windows, in order, and which rows it was asked: those of
    the scenarios it serves (NaN forecasts elsewhere)."""

    forecasts: np.ndarray
    asked: np.ndarray


def replay(url: str, windows: list[pd.DataFrame], label: str, serves: set[str] | None = None) -> Replayed:
    """Score every window through one endpoint, a progress line per window. A per-scenario model is asked
    only about the scenarios it serves (`serves`; None: all)."""
    from {{ cookiecutter.package_name }}.serve import score

    forecasts, asked = [], []
    for number, window in enumerate(windows, 1):
        mask = np.ones(len(window), dtype=bool)
        if serves is not None:
            mask = scenario_names(window).isin(serves).to_numpy()
        if not mask.any():
            raise ScoringRefused(
                f"{label}: window {number} has no row of a scenario it serves: nothing to judge"
            )
        predictions = score(url, window[mask].drop(columns=TARGET))
        if predictions.shape != (int(mask.sum()),):
            raise ScoringRefused(
                f"{label}: the scoring server returned forecasts of shape {predictions.shape} for"
                f" {int(mask.sum())} rows in window {number}: it is not this project's server"
            )
        if not np.isfinite(predictions).all():
            bad = int((~np.isfinite(predictions)).sum())
            raise ScoringRefused(
                f"{label}: the scoring server returned {bad} forecasts that are not numbers in window"
                f" {number}: fix the model or the server, then back-test again"
            )
        full = np.full(len(window), np.nan)
        full[mask] = predictions
        forecasts.append(full)
        asked.append(mask)
        wape = forecast_metrics(window[TARGET].to_numpy()[mask], predictions)["wape"]
        print(f"  {label}: window {number}/{len(windows)} scored (WAPE {wape:.4f})", flush=True)
    return Replayed(np.concatenate(forecasts), np.concatenate(asked))


def window_scores(windows: list[pd.DataFrame], replayed: Replayed, rows: np.ndarray) -> pd.DataFrame:
    """One row of metrics per window, over `rows` (a mask over every window's rows, in order)."""
    scores, start = [], 0
    for number, window in enumerate(windows, 1):
        chosen = rows[start : start + len(window)]
        if not chosen.any():
            raise ScoringRefused(
                f"window {number} has no row of a scenario both the candidate and production serve:"
                " they cannot be compared"
            )
        actual = window[TARGET].to_numpy()[chosen]
        predicted = replayed.forecasts[start : start + len(window)][chosen]
        scores.append(
            {
                "window": number,
                "from": window["week_start"].min().date(),
                **forecast_metrics(actual, predicted),
            }
        )
        start += len(window)
    return pd.DataFrame(scores)


def compare_to_champion(
    candidate: pd.DataFrame,
    champion: pd.DataFrame | None,
    policy: Policy,
    candidate_on_shared: pd.DataFrame | None = None,
) -> Verdict:
    """Pass when the candidate meets the absolute floor (on every row it serves) and is not worse than the
    champion beyond a margin. Where the two serve different scenarios, they are compared on the rows of the
    scenarios both serve (`candidate_on_shared`, and `champion` scored on the same rows)."""
    candidate_wape = float(candidate["wape"].mean())
    champion_wape = None if champion is None else float(champion["wape"].mean())
    if not candidate_wape <= policy.wape_floor:  # a NaN mean (nothing scored) fails too
        reason = f"mean WAPE {candidate_wape:.4f} is above the floor {policy.wape_floor}"
        return Verdict(False, reason, candidate_wape, champion_wape)
    if champion_wape is None:
        return Verdict(
            True, f"mean WAPE {candidate_wape:.4f} meets the floor (no champion yet)", candidate_wape, None
        )
    shared = candidate_wape if candidate_on_shared is None else float(candidate_on_shared["wape"].mean())
    on = "" if candidate_on_shared is None else " on the scenarios both serve"
    if not shared <= champion_wape + policy.max_wape_regression:
        reason = (
            f"mean WAPE {shared:.4f}{on} is worse than the champion's {champion_wape:.4f}"
            f" by more than {policy.max_wape_regression}"
        )
        return Verdict(False, reason, candidate_wape, champion_wape)
    reason = f"mean WAPE {shared:.4f} vs champion {champion_wape:.4f}{on}: within the margin"
    return Verdict(True, reason, candidate_wape, champion_wape)


def record_of(
    version: str,
    champion_version: str | None,
    candidate: pd.DataFrame,
    champion: pd.DataFrame | None,
    verdict: Verdict,
    policy: Policy,
    at: str,
    scenarios: ScenarioSummary | None = None,
) -> BacktestRecord:
    """The machine-readable back-test: what decided the verdict, window by window."""

    def scores(frame: pd.DataFrame | None, index: int) -> dict[str, float] | None:
        return None if frame is None else {metric: float(frame.iloc[index][metric]) for metric in METRICS}

    windows = [
        WindowScore(int(row.window), str(row["from"]), scores(candidate, index), scores(champion, index))
        for index, row in candidate.iterrows()
    ]
    return BacktestRecord(
        version=version,
        champion_version=champion_version,
        policy=policy,
        windows=windows,
        passed=verdict.passed,
        reason=verdict.reason,
        candidate_wape=verdict.candidate_wape,
        champion_wape=verdict.champion_wape,
        at=at,
        scenarios=scenarios,
    )


def _score_both(
    settings: Settings,
    windows: list[pd.DataFrame],
    models: list[tuple[str, str, set[str] | None]],
    urls: dict[str, str | None],
) -> list[Replayed]:
    """Replay the windows through each (label, version, scenarios it serves or None for all) in turn; one
    server hosts the versions not given by URL."""
    from {{ cookiecutter.package_name }}.serve import serving

    to_start = [version for _, version, _ in models if not urls.get(version)]
    started_at = time.monotonic()
    with serving(settings, *to_start) as started:
        urls = {**urls, **dict(zip(to_start, started, strict=True))}
        if to_start:
            print(f"Server ready after {time.monotonic() - started_at:.0f} s.", flush=True)
        return [
            replay(urls[version], windows, f"{label} v{version}", serves) for label, version, serves in models
        ]


def _record(
    settings: Settings,
    client: MlflowClient,
    run_id: str,
    record: BacktestRecord,
    scenarios: list[ScenarioVerdict] | None,
) -> Path:
    """Write the report, plot and record (and every scenario's verdict) to reports/ and log them to the
    version's run; the report's path."""
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    stem = settings.reports_dir / BacktestRecord.file_stem(record.version)
    files = {".md": backtest_markdown(record), ".svg": window_plot(record), ".json": record.to_json()}
    if scenarios is not None:
        files["-scenarios.json"] = json.dumps([asdict(verdict) for verdict in scenarios], indent=1)
    for suffix, text in files.items():
        path = stem.parent / f"{stem.name}{suffix}"
        path.write_text(text)
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    return stem.with_suffix(".md")


def scenario_gate(verdict: Verdict, scenarios: list[ScenarioVerdict], policy: Policy) -> Verdict:
    """A per-scenario version also fails when more of its scenarios failed than the policy allows."""
    failed = [scenario for scenario in scenarios if scenario.outcome == "failed"]
    if len(failed) <= policy.max_failed_backtest_scenarios:
        return verdict
    named = "; ".join(f"{scenario.scenario} ({scenario.reason})" for scenario in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    reason = (
        f"{len(failed)} scenario(s) failed, the policy allows {policy.max_failed_backtest_scenarios}"
        f" (max_failed_backtest_scenarios in config/backtest.toml): {named}{more}"
    )
    return replace(
        verdict, passed=False, reason=f"{verdict.reason}; {reason}" if not verdict.passed else reason
    )


def run_backtest(
    settings: Settings, version: str, candidate_url: str | None = None, champion_url: str | None = None
) -> int:
    """Entry point of `make backtest`: replay, compare, record the verdict on the version; exit 1 on fail."""
    client = registry.connect(settings)
    candidate_version = registry.get_version(client, settings.model_name, version)
    missing = registry.missing_evidence(candidate_version.tags, registry.TRAINING_EVIDENCE)
    if missing:
        print(
            f"Back-test refused: version {version} is incomplete (missing evidence: {', '.join(missing)}):"
            " its training did not finish; train a new version with `make train`",
            file=sys.stderr,
        )
        return 1
    production = registry.running_in(client, settings.model_name, registry.CHAMPION_ENVIRONMENT)
    champion = production if production != str(version) else None
    policy = Policy.from_toml()
    print(
        f"Back-testing v{version} against {f'champion v{champion}' if champion else 'no champion'}:"
        f" {policy.windows} windows of {policy.window_weeks} weeks from its training snapshot.",
        flush=True,
    )
    windows = rolling_windows(snapshot_of_version(candidate_version), policy.windows, policy.window_weeks)
    table = registry.scenario_table(version, candidate_version.run_id, candidate_version.tags)
    models = [("candidate", version, registry.served_scenarios(table))]
    if champion:
        defending = registry.get_version(client, settings.model_name, champion)
        defended = registry.scenario_table(champion, defending.run_id, defending.tags)
        models.append(("champion", champion, registry.served_scenarios(defended)))
    candidate, *defending = _score_both(
        settings, windows, models, {version: candidate_url, **({champion: champion_url} if champion else {})}
    )
    candidate_scores, champion_scores = window_scores(windows, candidate, candidate.asked), None
    verdict = compare_to_champion(candidate_scores, None, policy)
    if defending:
        shared = candidate.asked & defending[0].asked
        champion_scores = window_scores(windows, defending[0], shared)
        differ = not (np.array_equal(shared, candidate.asked) and np.array_equal(shared, defending[0].asked))
        candidate_on_shared = window_scores(windows, candidate, shared) if differ else None
        verdict = compare_to_champion(candidate_scores, champion_scores, policy, candidate_on_shared)
    scenarios = None
    if table is not None:
        scenarios = judge_scenarios(
            pd.concat(windows, ignore_index=True),
            candidate,
            defending[0] if defending else None,
            models[1][2] if defending else None,
            table,
            policy,
        )
        verdict = scenario_gate(verdict, scenarios, policy)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    record = record_of(
        version,
        champion,
        candidate_scores,
        champion_scores,
        verdict,
        policy,
        at,
        None if scenarios is None else ScenarioSummary.of(scenarios),
    )
    # The old verdict is overwritten before anything else is written, and the new one written last: a
    # back-test interrupted at any write never reads as passed, nor as an old verdict beside a new report.
    # Overwritten, not deleted: deleting a version tag needs MANAGE, which no pipeline identity has.
    if "backtest_verdict" in candidate_version.tags:
        registry.set_evidence(
            client, settings.model_name, version, {"backtest_verdict": registry.BACKTEST_PENDING}
        )
    report = _record(settings, client, candidate_version.run_id, record, scenarios)
    champion_wape = "none" if verdict.champion_wape is None else f"{verdict.champion_wape:.6f}"
    registry.set_evidence(
        client,
        settings.model_name,
        version,
        {
            "backtest_champion": champion or "none",
            "backtest_wape": f"{verdict.candidate_wape:.6f}",
            "backtest_champion_wape": champion_wape,
            "backtest_report": f"{ARTIFACT_DIR}/{report.name}",
            "backtest_at": at,
            "backtest_verdict": "passed" if verdict.passed else "failed",
        },
    )
    print(f"\n{report.read_text()}")
    print(
        f"Report: {report}, plot {report.with_suffix('.svg')} (also on the version's run, {ARTIFACT_DIR}/)."
    )
    next_step = (
        f"make promote VERSION={version} ENV=staging APPROVER=<name>" if verdict.passed else "make train"
    )
    print(f"Next: `make evidence VERSION={version}` for the reviewer's page, then `{next_step}`.")
    return 0 if verdict.passed else 1
