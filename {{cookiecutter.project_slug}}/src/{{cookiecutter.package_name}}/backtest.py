"""Back-test stage: replay history through the candidate and the current champion, and record a verdict.

Both models are scored over HTTP, so the same replay runs locally (servers on loopback ports) and in the
cluster back-test environment (infra/backtest/, the candidate's Service URL passed in). The verdict goes on
the version as tags; what decided it (policy, every window's scores, champion) goes on its run as a
`BacktestRecord`, with the report and plot `make evidence` shows a reviewer.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.backtest_record import (
    ARTIFACT_DIR,
    METRICS,
    BacktestRecord,
    Policy,
    WindowScore,
    window_plot,
)
from {{ cookiecutter.package_name }}.data import TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.evidence_report import backtest_markdown
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.snapshot import snapshot_of_version

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

CHAMPION_ALIAS = "production"


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


def replay(url: str, windows: list[pd.DataFrame], label: str) -> pd.DataFrame:
    """Score every window through one endpoint; one row of metrics per window, a progress line per window."""
    from {{ cookiecutter.package_name }}.serve import score

    rows = []
    for number, window in enumerate(windows, 1):
        predictions = score(url, window.drop(columns=TARGET))
        rows.append(
            {
                "window": number,
                "from": window["week_start"].min().date(),
                **forecast_metrics(window[TARGET], predictions),
            }
        )
        print(f"  {label}: window {number}/{len(windows)} scored (WAPE {rows[-1]['wape']:.4f})", flush=True)
    return pd.DataFrame(rows)


def compare_to_champion(candidate: pd.DataFrame, champion: pd.DataFrame | None, policy: Policy) -> Verdict:
    """Pass when the candidate meets the absolute floor and is not worse than the champion beyond a margin."""
    candidate_wape = float(candidate["wape"].mean())
    champion_wape = None if champion is None else float(champion["wape"].mean())
    if candidate_wape > policy.wape_floor:
        reason = f"mean WAPE {candidate_wape:.4f} is above the floor {policy.wape_floor}"
        return Verdict(False, reason, candidate_wape, champion_wape)
    if champion_wape is None:
        return Verdict(
            True, f"mean WAPE {candidate_wape:.4f} meets the floor (no champion yet)", candidate_wape, None
        )
    if candidate_wape > champion_wape + policy.max_wape_regression:
        reason = (
            f"mean WAPE {candidate_wape:.4f} is worse than the champion's {champion_wape:.4f}"
            f" by more than {policy.max_wape_regression}"
        )
        return Verdict(False, reason, candidate_wape, champion_wape)
    reason = f"mean WAPE {candidate_wape:.4f} vs champion {champion_wape:.4f}: within the margin"
    return Verdict(True, reason, candidate_wape, champion_wape)


def record_of(
    version: str,
    champion_version: str | None,
    candidate: pd.DataFrame,
    champion: pd.DataFrame | None,
    verdict: Verdict,
    policy: Policy,
    at: str,
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
    )


def _score_both(
    settings: Settings,
    windows: list[pd.DataFrame],
    version: str,
    champion: str | None,
    urls: dict[str, str | None],
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Replay the windows through the candidate and the champion; one server hosts those not given by URL."""
    from {{ cookiecutter.package_name }}.serve import serving

    to_start = [number for number in (version, champion) if number and not urls.get(number)]
    started_at = time.monotonic()
    with serving(settings, *to_start) as started:
        urls = {**urls, **dict(zip(to_start, started, strict=True))}
        if to_start:
            print(f"Server ready after {time.monotonic() - started_at:.0f} s.", flush=True)
        candidate = replay(urls[version], windows, f"candidate v{version}")
        return candidate, replay(urls[champion], windows, f"champion v{champion}") if champion else None


def _record(settings: Settings, client: MlflowClient, run_id: str, record: BacktestRecord) -> Path:
    """Write the report, plot and record to reports/ and log them to the version's run; the report's path."""
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    stem = settings.reports_dir / BacktestRecord.file_stem(record.version)
    files = {".md": backtest_markdown(record), ".svg": window_plot(record), ".json": record.to_json()}
    for suffix, text in files.items():
        stem.with_suffix(suffix).write_text(text)
        client.log_artifact(run_id, str(stem.with_suffix(suffix)), ARTIFACT_DIR)
    return stem.with_suffix(".md")


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
    production = registry.running_in(client, settings.model_name, CHAMPION_ALIAS)
    champion = production if production != str(version) else None
    policy = Policy.from_toml()
    print(
        f"Back-testing v{version} against {f'champion v{champion}' if champion else 'no champion'}:"
        f" {policy.windows} windows of {policy.window_weeks} weeks from its training snapshot.",
        flush=True,
    )
    windows = rolling_windows(snapshot_of_version(candidate_version), policy.windows, policy.window_weeks)
    candidate_scores, champion_scores = _score_both(
        settings,
        windows,
        version,
        champion,
        {version: candidate_url, **({champion: champion_url} if champion else {})},
    )
    verdict = compare_to_champion(candidate_scores, champion_scores, policy)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    record = record_of(version, champion, candidate_scores, champion_scores, verdict, policy, at)
    report = _record(settings, client, candidate_version.run_id, record)
    # The old verdict is overwritten first and the new one written last: an interrupted write never reads as
    # passed. Overwritten, not deleted: deleting a version tag needs MANAGE, which no pipeline identity has.
    if "backtest_verdict" in candidate_version.tags:
        registry.set_evidence(
            client, settings.model_name, version, {"backtest_verdict": registry.BACKTEST_PENDING}
        )
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
