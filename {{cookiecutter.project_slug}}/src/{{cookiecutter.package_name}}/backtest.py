"""Back-test stage: replay history through the candidate and the current champion, and record a verdict.

Both models are scored over HTTP, so the same replay runs locally (servers on loopback ports) and in the
cluster back-test environment (infra/backtest/, the candidate's Service URL passed in).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.data import TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.snapshot import snapshot_of_version

POLICY_FILE = Path("config/backtest.toml")
CHAMPION_ALIAS = "production"


@dataclass(frozen=True)
class Policy:
    windows: int
    window_weeks: int
    wape_floor: float
    max_regression: float

    @classmethod
    def from_toml(cls, path: Path = POLICY_FILE) -> Policy:
        raw = tomllib.loads(path.read_text())
        return cls(
            int(raw["windows"]),
            int(raw["window_weeks"]),
            float(raw["wape_floor"]),
            float(raw["max_regression"]),
        )


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


def replay(url: str, windows: list[pd.DataFrame]) -> pd.DataFrame:
    """Score every window through one endpoint; one row of metrics per window."""
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
    if candidate_wape > champion_wape + policy.max_regression:
        reason = (
            f"mean WAPE {candidate_wape:.4f} is worse than the champion's {champion_wape:.4f}"
            f" by more than {policy.max_regression}"
        )
        return Verdict(False, reason, candidate_wape, champion_wape)
    reason = f"mean WAPE {candidate_wape:.4f} vs champion {champion_wape:.4f}: within the margin"
    return Verdict(True, reason, candidate_wape, champion_wape)


def report_markdown(
    version: str,
    champion_version: str | None,
    candidate: pd.DataFrame,
    champion: pd.DataFrame | None,
    verdict: Verdict,
) -> str:
    """The evidence a reviewer reads at the approval gate (CI job summaries show it as is)."""
    lines = [
        f"## Back-test of version {version}: {'PASSED' if verdict.passed else 'FAILED'}",
        "",
        f"{verdict.reason}. Champion: {'version ' + champion_version if champion_version else 'none'}.",
        "",
        "| window | from | candidate WAPE | candidate MAE | candidate bias "
        "| champion WAPE | champion MAE | champion bias |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, row in candidate.iterrows():
        other = champion.iloc[index] if champion is not None else None
        champion_cells = (
            f"{other.wape:.4f} | {other.mae:.2f} | {other.bias:+.4f}" if other is not None else "- | - | -"
        )
        candidate_cells = f"{row.wape:.4f} | {row.mae:.2f} | {row.bias:+.4f}"
        lines.append(f"| {row.window} | {row['from']} | {candidate_cells} | {champion_cells} |")
    return "\n".join(lines) + "\n"


def window_plot(candidate: pd.DataFrame, champion: pd.DataFrame | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(candidate["window"], candidate["wape"], marker="o", label="candidate")
    if champion is not None:
        axis.plot(champion["window"], champion["wape"], marker="s", label="champion")
    axis.set(title="Back-test WAPE per window", xlabel="window (oldest to newest)", ylabel="WAPE")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run_backtest(
    settings: Settings, version: str, candidate_url: str | None = None, champion_url: str | None = None
) -> int:
    """Entry point of `make backtest`: replay, compare, record the verdict on the version; exit 1 on fail."""
    from {{ cookiecutter.package_name }}.serve import serving

    client = registry.connect(settings)
    candidate_version = registry.get_version(client, settings.model_name, version)
    missing = registry.missing_evidence(candidate_version, registry.TRAINING_EVIDENCE)
    if missing:
        print(
            f"Back-test refused: version {version} is incomplete (missing evidence: {', '.join(missing)}):"
            " its training did not finish; train a new version with `make train`"
        )
        return 1
    champion_version = registry.alias_holder(client, settings.model_name, CHAMPION_ALIAS)
    champion_number = (
        str(champion_version.version)
        if champion_version and str(champion_version.version) != str(version)
        else None
    )
    policy = Policy.from_toml()
    windows = rolling_windows(snapshot_of_version(candidate_version), policy.windows, policy.window_weeks)

    wanted = {version: candidate_url, **({champion_number: champion_url} if champion_number else {})}
    to_start = [number for number, url in wanted.items() if not url]
    with serving(settings, *to_start) as started:
        urls = {**wanted, **dict(zip(to_start, started, strict=True))}
        candidate = replay(urls[version], windows)
        champion = replay(urls[champion_number], windows) if champion_number else None
    verdict = compare_to_champion(candidate, champion, policy)

    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    report = settings.reports_dir / f"backtest-v{version}.md"
    plot = settings.reports_dir / f"backtest-v{version}.png"
    report.write_text(report_markdown(str(version), champion_number, candidate, champion, verdict))
    window_plot(candidate, champion, plot)
    client.log_artifact(candidate_version.run_id, str(report), "backtest")
    client.log_artifact(candidate_version.run_id, str(plot), "backtest")
    # The old verdict goes first and the new one last: an interrupted write never reads as passed.
    if "backtest_verdict" in candidate_version.tags:
        client.delete_model_version_tag(settings.model_name, version, "backtest_verdict")
    champion_wape = "none" if verdict.champion_wape is None else f"{verdict.champion_wape:.6f}"
    registry.set_evidence(
        client,
        settings.model_name,
        version,
        {
            "backtest_champion": champion_number or "none",
            "backtest_wape": f"{verdict.candidate_wape:.6f}",
            "backtest_champion_wape": champion_wape,
            "backtest_report": f"backtest/{report.name}",
            "backtest_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "backtest_verdict": "passed" if verdict.passed else "failed",
        },
    )
    print(report.read_text())
    return 0 if verdict.passed else 1
