"""The evidence report a reviewer judges a gate from: complete, honest about gaps, and safe to open.

Recorded values come from whoever can write to the registry, so hostile ones are part of the table.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser

import mlflow
import pytest

from conftest import GOOD_EVIDENCE, TODAY
from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.backtest_record import (
    BacktestRecord,
    Policy,
    ScenarioSummary,
    ScenarioVerdict,
    WindowScore,
    window_plot,
)
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.evidence import GATE_SUMMARY_ARTIFACT, write_evidence
from {{ cookiecutter.package_name }}.evidence_report import backtest_markdown
from {{ cookiecutter.package_name }}.settings import shareable_uri

POLICY = Policy(windows=2, window_weeks=4, wape_floor=0.15, max_wape_regression=0.005)
AT = "2026-03-18T09:00:00+00:00"
# A completely trained version (the promotion tests' evidence, training part), now in staging.
TAGS = {key: GOOD_EVIDENCE[key] for key in registry.TRAINING_EVIDENCE} | {
    "stage": "staging",
    "ci_run_url": "https://ci.example.com/runs/7",
}
GATE = {
    "success": True,
    "evaluated": 34,
    "failed": 0,
    "suites": ["raw_sales", "raw_sales_series"],
    "data_asset": "s3://sales/raw.parquet (sha256 ffffffffffff)",
    "run_name": "train-ffffffff",
    "run_time": AT,
    "pages": {"raw_sales": "validations/raw_sales/train-ffffffff/1/sales-raw_sales.html"},
}
HOSTILE = {
    "trained_by": "<script>alert(1)</script>",
    "ci_run_url": '"><img src=x onerror=alert(1)>',
    "data_snapshot": "javascript:alert(1)",
    "git_sha": "[click](https://evil.example) | injected cell",
}


def record(version: str = "2", champion: str | None = "1", passed: bool = True) -> BacktestRecord:
    scores = [({"wape": 0.10, "mae": 12.0, "bias": 0.01}, {"wape": 0.11, "mae": 13.0, "bias": -0.02})] * 2
    return BacktestRecord(
        version=version,
        champion_version=champion,
        policy=POLICY,
        windows=[
            WindowScore(i + 1, f"2026-0{i + 1}-05", candidate, champion_scores if champion else None)
            for i, (candidate, champion_scores) in enumerate(scores)
        ],
        passed=passed,
        reason="mean WAPE 0.1000 vs champion 0.1100: within the margin",
        candidate_wape=0.10,
        champion_wape=0.11 if champion else None,
        at=AT,
    )


@pytest.fixture
def client(settings, tmp_path, blank_store):
    """A real registry in a temp SQLite store with one registered model."""
    shutil.copy(blank_store, settings.tracking_uri.removeprefix("sqlite:///"))
    client = registry.connect(settings)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("evidence", tmp_path.joinpath("art").as_uri())
    )
    client.create_registered_model(settings.model_name)
    return client


def new_version(client, settings, tags=TAGS, backtest: BacktestRecord | None = None, gate=GATE) -> str:
    """A version with training evidence, its gate summary and, when given, a back-test (record and tags)."""
    with mlflow.start_run() as run:
        mlflow.log_text("placeholder", "model/MLmodel")
        if gate is not None:
            mlflow.log_dict(gate, GATE_SUMMARY_ARTIFACT)
    version = str(
        client.create_model_version(
            settings.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags
        ).version
    )
    if backtest is not None:
        client.log_text(run.info.run_id, backtest.to_json(), BacktestRecord.artifact_path(version))
        registry.set_evidence(
            client,
            settings.model_name,
            version,
            {"backtest_at": backtest.at, "backtest_verdict": "passed" if backtest.passed else "failed"},
        )
    return version


def approve(client, settings, version: str, environment: str, approver: str) -> None:
    """A release history entry, as promotion writes it."""
    entry = {
        "action": "promotion",
        "environment": environment,
        "version": version,
        "from_version": "none",
        "approved_by": approver,
        "approved_at": "2026-03-19T10:00:00+00:00",
        "ci_run": "local",
        "history_key": "",
        "commit": "abc123",
    }
    key = registry.history_key(environment, datetime(2026, 3, 19, 10, tzinfo=UTC))
    target = registry.environment_model(settings.model_name, environment)
    registry.ensure_model(client, target)
    client.set_registered_model_tag(target, key, json.dumps(entry))


def write(client, settings, version: str, capsys) -> tuple[str, str, str]:
    """Run the stage; the Markdown it printed, the HTML page, and the version's description."""
    assert write_evidence(settings, version) == 0
    printed = capsys.readouterr().out
    page = (settings.reports_dir / f"evidence-v{version}.html").read_text()
    assert (settings.reports_dir / f"evidence-v{version}.md").read_text() == printed
    return printed, page, client.get_model_version(settings.model_name, version).description


LOADING_ATTRIBUTES = {"src", "srcset", "poster", "data", "action", "formaction", "background", "xlink:href"}


def elements(page: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every element of the page with its attributes, as an HTML parser reads them."""
    found: list[tuple[str, list[tuple[str, str]]]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, [(name, value or "") for name, value in attrs]))

    Collector().feed(page)
    return found


def visible_text(page: str) -> str:
    """Roughly what a reader sees: tags dropped, entities decoded."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_report_shows_verdict_policy_windows_data_gate_commit_and_approvals(client, settings, capsys):
    # given a back-tested version approved for staging
    version = new_version(client, settings, backtest=record())
    approve(client, settings, version, "staging", "alice.reviewer")
    # when its evidence is written
    markdown, page, description = write(client, settings, version, capsys)
    # then both formats carry what decided the gate, and what a reviewer checks next to it
    for text in (markdown, visible_text(page)):
        assert "back-test PASSED" in text or "Back-test PASSED" in text
        assert "at most 0.15 (the floor)" in text and "at most 0.005 worse" in text
        assert "2 windows of 4 weeks" in text and "version 1: mean WAPE 0.1100 vs candidate 0.1000" in text
        assert "34 of 34 expectations met, 0 failed" in text
        assert "s3://sales/raw.parquet (sha256 ffffffffffff)" in text and "train-ffffffff" in text
        assert "0123456789abcdef0123456789abcdef01234567 (clean)" in text and "carol" in text
        assert "promotion to staging approved by alice.reviewer" in text
    assert "| 1 | 2026-01-05 | 0.1000 | 12.00 | +0.0100 | 0.1100 | 13.00 | -0.0200 |" in markdown
    assert '<a href="https://ci.example.com/runs/7"' in page
    # and the MLflow UI shows the short form first
    assert description.startswith("Back-test PASSED: WAPE 0.1000 vs champion v1 0.1100 (floor 0.15)")
    assert "latest approval: promotion to staging approved by alice.reviewer" in description
    # and both files are on the version's run
    run_id = client.get_model_version(settings.model_name, version).run_id
    logged = {item.path for item in client.list_artifacts(run_id, "evidence")}
    assert logged == {f"evidence/evidence-v{version}.md", f"evidence/evidence-v{version}.html"}


def test_a_missing_back_test_and_no_approval_are_shown_as_missing_not_as_errors(client, settings, capsys):
    # given a version that was trained before gate summaries were logged, and never back-tested or promoted
    version = new_version(client, settings, gate=None)
    # when
    markdown, page, description = write(client, settings, version, capsys)
    # then
    for text in (markdown, visible_text(page)):
        assert f"NOT RUN: run `make backtest VERSION={version}`" in text.replace("\\`", "`")
        assert "Never promoted" in text
        assert (
            "passed (no counts logged with the run) (suite raw_sales); no Data Docs on the run"
            in text.replace("\\_", "_")
        )
    assert description.startswith("Back-test NOT RUN · data gate passed")


def test_a_back_test_record_that_does_not_match_the_tags_is_not_shown(client, settings, capsys):
    # given a record from another back-test than the one the tags (which promotion reads) describe
    version = new_version(client, settings, backtest=record())
    client.set_model_version_tag(settings.model_name, version, "backtest_at", "2026-03-20T00:00:00+00:00")
    # when
    markdown, page, _ = write(client, settings, version, capsys)
    # then the verdict the gate reads is shown, and why its details are not
    assert "PASSED: the back-test record does not match the version's tags" in markdown
    assert "0.1100" not in markdown and "<svg" not in page


def test_hostile_recorded_values_are_shown_as_text_never_as_markup_or_links(client, settings, capsys):
    # given tags, a gate summary and an approver name written to attack whoever opens the report
    gate = {**GATE, "data_asset": "<iframe src=https://evil.example>", "suites": 5, "evaluated": "<b>"}
    version = new_version(client, settings, tags={**TAGS, **HOSTILE}, backtest=record(), gate=gate)
    approve(client, settings, version, "staging", "</td><script>steal()</script>")
    # when
    markdown, page, description = write(client, settings, version, capsys)
    # then nothing of them became markup in the page, and the text is still there to read
    assert "<script" not in page and "<img" not in page and "<iframe" not in page and "<b>" not in page
    links = [value for _, attributes in elements(page) for name, value in attributes if name == "href"]
    assert links and all("/data_validation/data-docs/" in link for link in links), (
        "a hostile URL became a link"
    )
    seen = visible_text(page)
    assert "<script>alert(1)</script>" in seen and '"><img src=x onerror=alert(1)>' in seen
    assert "</td><script>steal()</script>" in seen
    # and in Markdown and the description: no raw HTML, no link, no extra table cell
    for text in (markdown, description):
        assert "<script>" not in text and "<img" not in text and "[click](https://evil" not in text
    assert "\\[click\\]" in markdown and "\\| injected cell" in markdown


def test_a_version_monitoring_asked_for_says_why_it_was_retrained(client, settings, capsys):
    # given a version monitoring asked for, with markup in its reason, and one trained on schedule
    reason = "drift in price | <b>promo</b> [x](https://evil.example) WAPE 0.41"
    asked = new_version(client, settings, tags={**TAGS, registry.RETRAIN_REASON: reason}, backtest=record())
    scheduled = new_version(client, settings)
    # when their evidence is written
    markdown, page, _ = write(client, settings, asked, capsys)
    plain_markdown, plain_page, _ = write(client, settings, scheduled, capsys)
    # then the reason is a line of the report, as text
    escaped = r"drift in price \| &lt;b&gt;promo&lt;/b&gt; \[x\](https://evil.example) WAPE 0.41"
    assert f"| Retrained because | {escaped} |" in markdown
    assert f"Retrained because {reason}" in " ".join(visible_text(page).split())
    assert "<b>promo" not in page
    # and a version nobody asked for has no such line
    assert "Retrained because" not in plain_markdown + plain_page


def test_the_page_needs_nothing_from_the_network_and_runs_nothing(client, settings, capsys):
    version = new_version(client, settings, tags={**TAGS, **HOSTILE}, backtest=record())
    _, page, _ = write(client, settings, version, capsys)
    found = elements(page)
    # nothing loads from anywhere: no scripts, images, styles, frames or fonts from elsewhere
    assert not {tag for tag, _ in found} & {
        "script",
        "iframe",
        "object",
        "embed",
        "link",
        "img",
        "base",
        "form",
    }
    assert [name for _, attributes in found for name, _ in attributes if name in LOADING_ATTRIBUTES] == []
    assert "url(" not in page and "@import" not in page
    # links are navigation only, to http(s) or file URLs
    links = [(tag, value) for tag, attributes in found for name, value in attributes if name == "href"]
    assert all(tag == "a" and value.startswith(("https://", "http://", "file:///")) for tag, value in links)
    # and the browser is told: the page's policy forbids fetching and running anything, whatever a value does
    metas = [dict(attributes) for tag, attributes in found if tag == "meta"]
    policy = next(meta["content"] for meta in metas if meta.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none';") and "script-src" not in policy


@pytest.fixture
def command_line(settings, monkeypatch):
    """`main` pointed at this test's store and reports folder, as make would run it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("MODEL_NAME", settings.model_name)
    monkeypatch.setenv("REPORTS_DIR", str(settings.reports_dir))
    return main


def test_an_unknown_version_is_refused_in_one_line_and_writes_nothing(client, settings, capsys, command_line):
    # given a store with no version 99, when
    code = command_line(["evidence", "--version", "99"])
    # then
    printed = capsys.readouterr()
    assert code == 1 and printed.out == ""
    assert printed.err.count("\n") == 1 and "has no version 99" in printed.err, printed.err
    assert not settings.reports_dir.exists()


def test_a_tampered_release_history_is_refused_in_one_line_not_shown_as_never_promoted(
    client, settings, capsys, command_line
):
    # given a version whose staging model carries a history entry that is not a release record
    version = new_version(client, settings, backtest=record())
    staging = registry.environment_model(settings.model_name, "staging")
    registry.ensure_model(client, staging)
    client.set_registered_model_tag(staging, f"{registry.HISTORY_PREFIX}x.staging", "[1, 2]")
    # when
    code = command_line(["evidence", "--version", version])
    # then
    printed = capsys.readouterr()
    assert code == 1 and printed.out == ""
    assert printed.err.count("\n") == 1 and "malformed entry" in printed.err, printed.err


def test_the_plot_draws_both_lines_distinctly_with_the_floor_version_and_verdict():
    svg = window_plot(record(version="3", champion="2", passed=False))
    polylines = re.findall(r"<polyline [^>]*>", svg)
    assert len(polylines) == 2
    champion, candidate = polylines  # the candidate is drawn last: on top, never hidden under the champion
    width = [float(re.search(r'stroke-width="([\d.]+)"', line).group(1)) for line in (champion, candidate)]
    assert width[0] > width[1] and 'stroke-opacity="0.35"' in champion  # a wide, see-through band below
    assert re.search(r'stroke="(#\w+)"', champion).group(1) != re.search(r'stroke="(#\w+)"', candidate).group(
        1
    )
    assert "Version 3: back-test FAILED" in svg and "floor 0.15" in svg and 'stroke-dasharray="8 5"' in svg
    assert "candidate v3" in svg and "champion v2" in svg


def test_a_first_release_plot_has_no_champion_line():
    svg = window_plot(record(champion=None))
    assert len(re.findall(r"<polyline ", svg)) == 1 and "champion v" not in svg


@pytest.mark.parametrize(
    "broken",
    [
        lambda raw: raw.pop("policy"),
        lambda raw: raw.update(candidate_wape="NaN"),
        lambda raw: raw.update(version="2; rm -rf /"),
        lambda raw: raw["windows"][0]["candidate"].pop("wape"),
    ],
)
def test_a_malformed_back_test_record_is_rejected(broken):
    raw = json.loads(record().to_json())
    broken(raw)
    with pytest.raises(ValueError, match=r"back-test record|finite"):
        BacktestRecord.from_json(json.dumps(raw))


def test_a_record_survives_its_round_trip():
    assert BacktestRecord.from_json(record().to_json()) == record()


def test_a_per_scenario_record_shows_its_counts_and_worst_scenarios_as_text_and_survives_its_round_trip():
    hostile = ScenarioVerdict("S01:dairy", "failed", 0.31, None, "<img src=x onerror=alert(1)> | cell")
    kept = ScenarioVerdict("S02:dairy", "kept", 0.12, 0.12, "production's own model (the same forecasts)")
    per_scenario = replace(record(), scenarios=ScenarioSummary.of([kept, hostile]))
    assert BacktestRecord.from_json(per_scenario.to_json()) == per_scenario
    report = backtest_markdown(per_scenario)
    assert "2 scenarios: 0 improved, 0 new, 1 kept, 1 failed, 0 untrained" in report
    assert "backtest/backtest-v2-scenarios.json" in report
    worst = [line for line in report.splitlines() if line.startswith("| S0")]
    assert worst[0].startswith("| S01:dairy | failed | 0.3100 | - |")  # failed first
    assert "<img" not in report and "&lt;img src=x onerror=alert(1)&gt; \\| cell" in report


def record_before_1_1_json() -> str:
    """The record as templates before 1.1.0 logged it: the margin under its old key, `max_regression`."""
    raw = json.loads(record().to_json())
    raw["policy"]["max_regression"] = raw["policy"].pop("max_wape_regression")
    return json.dumps(raw)


def test_a_record_logged_before_the_key_was_renamed_still_reads_as_written():
    assert BacktestRecord.from_json(record_before_1_1_json()) == record()


def test_evidence_of_a_version_back_tested_before_1_1_still_shows_its_policy(client, settings, capsys):
    # given a version whose back-test record on its run was logged by a template before 1.1.0
    version = new_version(client, settings, backtest=record())
    run_id = client.get_model_version(settings.model_name, version).run_id
    client.log_text(run_id, record_before_1_1_json(), BacktestRecord.artifact_path(version))
    assert '"max_regression"' in mlflow.artifacts.load_text(
        f"{client.get_run(run_id).info.artifact_uri}/{BacktestRecord.artifact_path(version)}"
    )
    # when its evidence is written
    markdown, _, _ = write(client, settings, version, capsys)
    # then the policy that decided it is shown, margin included, not an unreadable record
    assert "at most 0.15 (the floor) and at most 0.005 worse than the champion's" in markdown
    assert "unreadable" not in markdown


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "https://user:secret@mlflow.example.com:5000/path?token=abc#x",
            "https://mlflow.example.com:5000/path",
        ),
        (
            "https://account.blob.core.windows.net/c/sales.parquet?sv=2024&sig=SECRET",
            "https://account.blob.core.windows.net/c/sales.parquet",
        ),
        ("data/raw/sales.parquet", "data/raw/sales.parquet"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_reports_show_uris_without_credentials(uri, shown):
    assert shareable_uri(uri) == shown


def test_the_data_docs_a_version_links_to_name_the_data_and_the_gate_run(sales, tmp_path):
    from {{ cookiecutter.package_name }}.validation import asset_name, validate_sales

    # given the gate run training does, on data read from a URL that carries a token
    asset = asset_name("https://store.example.com/sales.parquet?sig=SECRET", "0123456789ab" + "0" * 52)
    report = validate_sales(sales, tmp_path / "docs", today=TODAY, data_asset=asset, run_name="train-0123")
    # then each suite's page (the one the evidence report links) names the data and the run
    summary = report.summary()
    assert summary["evaluated"] == report.evaluated > 0 and summary["failed"] == 0
    assert (
        set(summary["pages"])
        == set(summary["suites"])
        == {"raw_sales", "raw_sales_series", "raw_sales_weeks"}
    )
    for page in summary["pages"].values():
        text = (tmp_path / "docs" / page).read_text()
        assert "https://store.example.com/sales.parquet (sha256 0123456789ab)" in text, page
        assert "train-0123" in text and "SECRET" not in text


def test_a_per_scenario_version_summarises_its_scenarios_worst_first_and_why_some_were_not_trained(
    client, settings, capsys
):
    # given a per-scenario version: 7 trained scenarios, one skipped, one failed whose reason has markup
    table = [
        {"scenario": f"S0{index}:dairy", "status": "trained", "reason": "", "rows": 104, "wape": index / 100}
        for index in range(1, 8)
    ]
    table += [
        {"scenario": "S08:dairy", "status": "skipped", "reason": "21 weeks of history, needs 52", "rows": 21},
        {
            "scenario": "S09:dairy",
            "status": "failed",
            "reason": "ValueError: <script>x</script>",
            "rows": 104,
        },
    ]
    version = new_version(
        client, settings, tags={**TAGS, registry.GRANULARITY: "per_scenario"}, backtest=record()
    )
    run_id = client.get_model_version(settings.model_name, version).run_id
    client.log_dict(run_id, table, registry.SCENARIOS_ARTIFACT)
    # when its evidence is written
    markdown, page, _ = write(client, settings, version, capsys)
    # then the counts, the five worst trained scenarios (worst first) and every untrained one with its reason
    assert "9 scenarios: 7 trained, 1 skipped, 1 failed" in markdown
    listed = [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| S0")]
    assert listed == [
        "S07:dairy",
        "S06:dairy",
        "S05:dairy",
        "S04:dairy",
        "S03:dairy",
        "S08:dairy",
        "S09:dairy",
    ]
    assert "| S08:dairy | skipped | - | 21 | 21 weeks of history, needs 52 |" in markdown
    text = " ".join(visible_text(page).split())
    assert "9 scenarios: 7 trained, 1 skipped, 1 failed" in text and "ValueError: <script>x</script>" in text
    assert "<script>" not in page
    # and a global version has no such section
    global_markdown, global_page, _ = write(client, settings, new_version(client, settings), capsys)
    assert "Scenarios" not in global_markdown + global_page
