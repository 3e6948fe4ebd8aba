"""What a version's evidence report says, written once, and its formats: Markdown, one HTML page, one line.

Every recorded value is untrusted (anyone who can write to the registry writes tags), so Markdown escapes
its markup, HTML escapes everything and forbids fetching or running anything, and only http(s) and file
URLs become links. Standard library only.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from {{ cookiecutter.package_name }}.backtest_record import WORST_SCENARIOS, BacktestRecord, ScenarioSummary, window_plot
from {{ cookiecutter.package_name }}.registry import RETRAIN_REASON, scenario_status_counts

NOT_RECORDED = "not recorded"
NEVER_PROMOTED = "Never promoted: no approval is recorded for this version yet."


@dataclass(frozen=True)
class Evidence:
    """Everything recorded about one version; `backtest` and `gate` are None when nothing usable is."""

    model: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]
    backtest: BacktestRecord | None
    backtest_missing: str  # why `backtest` is None, and what to run
    gate: dict[str, Any] | None  # the data gate's summary, as logged with the training run
    docs_links: dict[str, str]  # suite -> that run's Data Docs page
    releases: list[dict[str, str]]  # release history entries naming this version
    scenarios: list[dict[str, Any]] | None = None  # per-scenario versions: the training's table per scenario

    def tag(self, key: str) -> str:
        return self.tags.get(key, "").strip() or NOT_RECORDED

    @property
    def verdict(self) -> str:
        """What the promotion gate reads: the tag, not the record."""
        return {"passed": "PASSED", "failed": "FAILED"}.get(self.tags.get("backtest_verdict", ""), "NOT RUN")


@dataclass(frozen=True)
class Fact:
    """One line of the report: a label, its text, and links (label, URL) after it."""

    label: str
    text: str
    links: tuple[tuple[str, str], ...] = ()


def link_target(url: str) -> bool:
    """May this URL become a link: http(s) or file, with nothing that could break out of an attribute."""
    return url.startswith(("https://", "http://", "file:///")) and not re.search(r"[\s\"'<>()\\`]", url)


def gate_result(evidence: Evidence) -> str:
    """'passed: 34 of 34 expectations met, 0 failed', or the bare tag when no counts were logged."""
    gate, tag = evidence.gate, evidence.tag("data_validation")
    evaluated, failed = (gate or {}).get("evaluated"), (gate or {}).get("failed")
    if not (isinstance(evaluated, int) and isinstance(failed, int)):
        return f"{tag} (no counts logged with the run)"
    return f"{tag}: {evaluated - failed} of {evaluated} expectations met, {failed} failed"


def _data_facts(evidence: Evidence) -> list[Fact]:
    data = [
        Fact("Data fingerprint", f"sha256 {evidence.tag('data_fingerprint')}"),
        Fact("Data snapshot", evidence.tag("data_snapshot")),
    ]
    gate = evidence.gate
    if not gate:
        suite = evidence.tag("data_validation_suite")
        return [Fact("Data gate", f"{gate_result(evidence)} (suite {suite}); no Data Docs on the run"), *data]
    suites = gate.get("suites")
    suites = ", ".join(map(str, suites)) if isinstance(suites, list) else NOT_RECORDED
    links = tuple((suite, url) for suite, url in evidence.docs_links.items() if link_target(url))
    unlinked = ", ".join(url for url in evidence.docs_links.values() if not link_target(url))
    run = f"{gate.get('run_name', NOT_RECORDED)} at {gate.get('run_time', NOT_RECORDED)}"
    return [
        Fact("Data gate", f"{gate_result(evidence)} (suites {suites})"),
        Fact("Data asset", f"{gate.get('data_asset', NOT_RECORDED)}, validated in run {run}"),
        Fact("Data Docs", unlinked or ("that run's, per suite:" if links else NOT_RECORDED), links),
        *data,
    ]


def _commit(evidence: Evidence) -> str:
    state = {"false": "clean", "true": "DIRTY working tree"}.get(
        evidence.tags.get("git_dirty", ""), "state unknown"
    )
    return f"{evidence.tag('git_sha')} ({state})"


def latest_approval(evidence: Evidence) -> str:
    if not evidence.releases:
        return "never promoted"
    entry = evidence.releases[-1]
    return (
        f"{entry.get('action', '?')} to {entry.get('environment', '?')} approved by"
        f" {entry.get('approved_by', '?')} at {entry.get('approved_at', '?')}"
    )


def _retrain_fact(evidence: Evidence) -> list[Fact]:
    """Why monitoring asked for this version, when it did (a version trained on schedule has no reason)."""
    reason = evidence.tags.get(RETRAIN_REASON, "").strip()
    return [Fact("Retrained because", reason)] if reason else []


def facts(evidence: Evidence) -> list[Fact]:
    """The report's summary lines, in the order a reviewer reads them."""
    record, run_url = evidence.backtest, evidence.tags.get("ci_run_url", "")
    if record:
        backtest = [
            Fact("Back-test", f"{evidence.verdict}: {record.reason} (at {record.at})"),
            Fact("Policy", record.policy.describe()),
            Fact("Champion", record.champion_text()),
        ]
    else:
        backtest = [Fact("Back-test", f"{evidence.verdict}: {evidence.backtest_missing}")]
    ci_run = (
        Fact("CI run", "", (("training run", run_url),))
        if link_target(run_url)
        else Fact("CI run", evidence.tag("ci_run_url"))
    )
    return [
        *backtest,
        Fact("Stage", f"{evidence.tag('stage')}; aliases: {', '.join(evidence.aliases) or 'none'}"),
        *_data_facts(evidence),
        Fact("Commit", _commit(evidence)),
        ci_run,
        Fact("Trained by", evidence.tag("trained_by")),
        *_retrain_fact(evidence),
        Fact("Serving image", f"{evidence.tag('image')} {evidence.tags.get('image_digest', '')}".strip()),
        Fact("Latest approval", latest_approval(evidence)),
    ]


WINDOW_HEADER = (
    "window", "from", "candidate WAPE", "candidate MAE", "candidate bias",
    "champion WAPE", "champion MAE", "champion bias",
)  # fmt: skip
APPROVAL_HEADER = ("when", "action", "environment", "from → to", "approved by", "CI run", "commit")


def _scores(scores: dict[str, float] | None) -> list[str]:
    if scores is None:
        return ["-", "-", "-"]
    return [f"{scores['wape']:.4f}", f"{scores['mae']:.2f}", f"{scores['bias']:+.4f}"]


def window_rows(record: BacktestRecord) -> list[list[str]]:
    return [[str(w.window), w.start, *_scores(w.candidate), *_scores(w.champion)] for w in record.windows]


SCENARIO_VERDICT_HEADER = ("scenario", "outcome", "WAPE", "production's WAPE", "why")


def scenario_verdict_rows(record: BacktestRecord) -> list[list[str]]:
    """The back-test's worst scenarios (failed first): each against production's model for it."""

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    worst = record.scenarios.worst if record.scenarios else []
    return [[v.scenario, v.outcome, shown(v.wape), shown(v.champion_wape), v.reason] for v in worst]


def scenario_verdicts_note(summary: ScenarioSummary, version: str) -> str:
    """The counts, and where every scenario's verdict is."""
    return (
        f"Per scenario against production: {summary.describe()}. Worst first; every scenario:"
        f" {BacktestRecord.scenarios_artifact(version)} on the run."
    )


def approval_rows(evidence: Evidence) -> list[list[str]]:
    def row(entry: dict[str, str]) -> list[str]:
        moved = f"{entry.get('from_version', '?')} → {entry.get('version', '?')}"
        before, after = ("approved_at", "action", "environment"), ("approved_by", "ci_run", "commit")
        return [*(entry.get(k, "?") for k in before), moved, *(entry.get(k, "?") for k in after)]

    return [row(entry) for entry in evidence.releases]


def short_form(evidence: Evidence) -> str:
    """One line for the version's description, which the MLflow UI shows before anything else."""
    record = evidence.backtest
    backtest = f"Back-test {evidence.verdict}"
    if record and record.champion_version:
        champion = "?" if record.champion_wape is None else f"{record.champion_wape:.4f}"
        backtest += f": WAPE {record.candidate_wape:.4f} vs champion v{record.champion_version} {champion}"
    elif record:
        backtest += f": WAPE {record.candidate_wape:.4f}, no champion"
    if record:
        backtest += f" (floor {record.policy.wape_floor:g})"
    dirty = "" if evidence.tags.get("git_dirty") == "false" else " (dirty)"
    return " · ".join(
        [
            backtest,
            f"data gate {gate_result(evidence)}",
            f"commit {evidence.tag('git_sha')[:12]}{dirty}",
            f"trained by {evidence.tag('trained_by')}",
            f"latest approval: {latest_approval(evidence)}",
        ]
    )


# ---- Markdown (CI job summaries) -----------------------------------------------------------------------

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]|#!~])")


SCENARIO_HEADER = ("scenario", "status", "hold-out WAPE", "rows", "why not trained")


def scenario_fit_counts(scenarios: list[dict[str, Any]]) -> str:
    """How many scenarios were trained, skipped and failed, in one line."""
    if not scenarios:
        return f"{NOT_RECORDED}: the run has no per-scenario table"
    counts = scenario_status_counts(scenarios)
    return f"{len(scenarios)} scenarios: " + ", ".join(
        f"{count} {status}" for status, count in counts.items()
    )


def scenario_rows(scenarios: list[dict[str, Any]]) -> list[list[str]]:
    """The worst trained scenarios by hold-out WAPE, then every scenario not trained, with its reason."""

    def wape(row: dict[str, Any]) -> float:
        value = row.get("wape")
        return float(value) if isinstance(value, int | float) else float("inf")

    trained = sorted((row for row in scenarios if row.get("status") == "trained"), key=wape, reverse=True)
    others = [row for row in scenarios if row.get("status") != "trained"]
    return [
        [
            str(row.get("scenario", "")),
            str(row.get("status", "")),
            f"{wape(row):.4f}" if row.get("status") == "trained" else "-",
            str(row.get("rows", "")),
            str(row.get("reason") or ""),
        ]
        for row in [*trained[:WORST_SCENARIOS], *others]
    ]


SCENARIOS_NOTE = (
    "Worst scenarios by hold-out WAPE, then those not trained;"
    " every scenario: scenarios/scenarios.json on the run."
)


def md(value: object) -> str:
    """A value as literal Markdown text: no markup, HTML, link or table-cell break gets through."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(value).split()), quote=False))


def md_table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]


def backtest_markdown(record: BacktestRecord) -> str:
    """The back-test section: verdict, the policy that decided it, the champion, and every window."""
    lines = [
        f"### Back-test of version {md(record.version)}: {record.verdict}",
        "",
        f"{md(record.reason)}.",
        "",
        f"- Policy: {md(record.policy.describe())}",
        f"- Champion: {md(record.champion_text())}",
        "",
        *md_table(WINDOW_HEADER, window_rows(record)),
    ]
    if record.scenarios is not None:
        lines += ["", md(scenario_verdicts_note(record.scenarios, record.version)), ""]
        lines += md_table(SCENARIO_VERDICT_HEADER, scenario_verdict_rows(record))
    return "\n".join(lines) + "\n"


def _md_fact(fact: Fact) -> str:
    links = [f"[{md(label)}]({url})" for label, url in fact.links]
    return f"| {md(fact.label)} | {' '.join([md(fact.text), *links]).strip()} |"


def markdown(evidence: Evidence, page_name: str) -> str:
    """The report in Markdown, for CI job summaries and the run's artefacts."""
    lines = [
        f"## Evidence of {md(evidence.model)} version {md(evidence.version)}: back-test {evidence.verdict}",
        "",
        "| | |",
        "|---|---|",
        *map(_md_fact, facts(evidence)),
        "",
    ]
    if evidence.backtest:
        lines += ["### Back-test windows", "", *md_table(WINDOW_HEADER, window_rows(evidence.backtest)), ""]
        if evidence.backtest.scenarios is not None:
            lines += [
                "### Back-test per scenario",
                "",
                md(scenario_verdicts_note(evidence.backtest.scenarios, evidence.version)),
                "",
            ]
            lines += [*md_table(SCENARIO_VERDICT_HEADER, scenario_verdict_rows(evidence.backtest)), ""]
    if evidence.scenarios is not None:
        lines += [
            "### Scenarios",
            "",
            md(scenario_fit_counts(evidence.scenarios)),
            "",
            md(SCENARIOS_NOTE),
            "",
        ]
        lines += [*md_table(SCENARIO_HEADER, scenario_rows(evidence.scenarios)), ""]
    lines += ["### Approval history", ""]
    lines += md_table(APPROVAL_HEADER, approval_rows(evidence)) if evidence.releases else [NEVER_PROMOTED]
    lines += [
        "",
        f"With the plot, as one page: `{md(page_name)}` (CI artefact; on the run under evidence/).",
        "",
    ]
    return "\n".join(lines)


# ---- HTML (one self-contained page) --------------------------------------------------------------------

# Nothing may be fetched, run or framed, whatever a recorded value contains.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.verdict { padding: .8rem 1rem; border-radius: 6px; font-size: 1.25rem; font-weight: bold; }
.PASSED { background: #e3f4e8; color: #145a2a; } .FAILED { background: #fbe5e3; color: #8c1d12; }
.NOT-RUN { background: #eeeeee; color: #333333; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d0d0d0; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { white-space: nowrap; }
.facts td { white-space: normal; overflow-wrap: anywhere; }
.missing { color: #6b6b6b; font-style: italic; }
"""


def html_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_fact(fact: Fact) -> str:
    links = "".join(
        f' <a href="{html.escape(url)}" rel="noopener noreferrer">{html.escape(label)}</a>'
        for label, url in fact.links
    )
    return f"<tr><th>{html.escape(fact.label)}</th><td>{html.escape(fact.text)}{links}</td></tr>"


def html_page(evidence: Evidence) -> str:
    """The report as one page: inline styles and SVG, no scripts, nothing to fetch."""
    title = html.escape(f"Evidence of {evidence.model} version {evidence.version}")
    record = evidence.backtest
    if record:
        table = html_table(WINDOW_HEADER, window_rows(record))
        backtest = f"<h2>Back-test windows</h2>\n{window_plot(record)}{table}"
        if record.scenarios is not None:
            note = html.escape(scenario_verdicts_note(record.scenarios, record.version))
            backtest += (
                f"<h2>Back-test per scenario</h2>\n<p>{note}</p>\n"
                f"{html_table(SCENARIO_VERDICT_HEADER, scenario_verdict_rows(record))}"
            )
    else:
        backtest = f'<h2>Back-test</h2>\n<p class="missing">{html.escape(evidence.backtest_missing)}</p>'
    scenarios = ""
    if evidence.scenarios is not None:
        scenarios = (
            f"<h2>Scenarios</h2>\n<p>{html.escape(scenario_fit_counts(evidence.scenarios))}</p>\n"
            f'<p class="missing">{html.escape(SCENARIOS_NOTE)}</p>\n'
            f"{html_table(SCENARIO_HEADER, scenario_rows(evidence.scenarios))}"
        )
    approvals = (
        html_table(APPROVAL_HEADER, approval_rows(evidence))
        if evidence.releases
        else f'<p class="missing">{NEVER_PROMOTED}</p>'
    )
    written = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p class="verdict {evidence.verdict.replace(" ", "-")}">Back-test {evidence.verdict}</p>
<table class="facts"><tbody>
{"".join(map(_html_fact, facts(evidence)))}
</tbody></table>
{backtest}
{scenarios}
<h2>Approval history</h2>
{approvals}
<p class="missing">Read from the model registry at {written} by
<code>make evidence VERSION={html.escape(evidence.version)}</code>.</p>
</body>
</html>
"""
