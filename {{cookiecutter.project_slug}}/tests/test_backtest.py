"""The back-test decision and its windows: what a reviewer trusts when a verdict says passed."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.backtest import compare_to_champion, record_of, rolling_windows
from {{ cookiecutter.package_name }}.backtest_record import POLICY_FILE, BacktestRecord, Policy
from {{ cookiecutter.package_name }}.evidence_report import backtest_markdown
from {{ cookiecutter.package_name }}.inputs import InputError

POLICY = Policy(windows=3, window_weeks=4, wape_floor=0.15, max_wape_regression=0.005)
PROJECT = Path(__file__).resolve().parents[1]


def windows_with(wape: float) -> pd.DataFrame:
    return pd.DataFrame({"window": [1, 2, 3], "wape": [wape] * 3})


@pytest.mark.parametrize(
    ("candidate", "champion", "passed", "reason"),
    [
        (0.10, None, True, "meets the floor (no champion yet)"),
        (0.16, None, False, "above the floor 0.15"),
        (0.16, 0.20, False, "above the floor 0.15"),  # beating a bad champion is not enough
        (0.104, 0.10, True, "within the margin"),
        (0.106, 0.10, False, "worse than the champion's"),
        (0.08, 0.10, True, "within the margin"),
    ],
)
def test_the_decision_applies_the_floor_first_then_the_margin(candidate, champion, passed, reason):
    verdict = compare_to_champion(
        windows_with(candidate), None if champion is None else windows_with(champion), POLICY
    )
    assert verdict.passed is passed
    assert reason in verdict.reason


def test_rolling_windows_cut_the_newest_weeks_into_consecutive_windows_oldest_first(sales):
    windows = rolling_windows(sales, POLICY.windows, POLICY.window_weeks)
    weeks = sorted(sales["week_start"].unique())
    assert len(windows) == 3
    assert [w["week_start"].nunique() for w in windows] == [4, 4, 4]
    assert windows[-1]["week_start"].max() == weeks[-1]
    assert windows[0]["week_start"].min() == weeks[-12]
    assert all(a["week_start"].max() < b["week_start"].min() for a, b in itertools.pairwise(windows))
    assert all(len(w) == w["week_start"].nunique() * 40 for w in windows)  # every series in every week


def test_the_report_names_the_policy_that_decided_and_every_window_and_evidence_reads_it_back():
    # given a candidate that beats a bad champion but not the floor
    metrics = {"mae": [20.0, 22.0], "bias": [0.01, -0.02]}
    candidate = pd.DataFrame(
        {"window": [1, 2], "from": [date(2026, 1, 5), date(2026, 2, 2)], "wape": [0.2, 0.18], **metrics}
    )
    champion = candidate.assign(wape=[0.3, 0.28])
    verdict = compare_to_champion(candidate, champion, POLICY)
    # when it is recorded
    record = record_of("2", "1", candidate, champion, verdict, POLICY, "2026-03-18T09:00:00+00:00")
    report = backtest_markdown(record)
    # then the report says what decided, against whom, window by window
    assert "### Back-test of version 2: FAILED" in report and "above the floor 0.15" in report
    assert "at most 0.15 (the floor) and at most 0.005 worse than the champion's" in report
    assert "over 3 windows of 4 weeks" in report and "Champion: version 1: mean WAPE 0.2900" in report
    assert "| 1 | 2026-01-05 | 0.2000 | 20.00 | +0.0100 | 0.3000 | 20.00 | +0.0100 |" in report
    # and the record on the run reads back as written
    assert BacktestRecord.from_json(record.to_json()) == record


def test_the_shipped_policy_file_reads_with_its_margin_over_the_champion():
    policy = Policy.from_toml(PROJECT / POLICY_FILE)
    assert policy.max_wape_regression >= 0 and "worse than the champion's" in policy.describe()


def test_a_policy_file_still_saying_max_regression_is_refused_with_the_fix(tmp_path, monkeypatch):
    # given a product repo whose policy predates template 1.1.0 (not yet through `copier update`)
    monkeypatch.chdir(tmp_path)
    POLICY_FILE.parent.mkdir()
    POLICY_FILE.write_text("windows = 6\nwindow_weeks = 4\nwape_floor = 0.15\nmax_regression = 0.005\n")
    # when the back-test reads it, then it stops with one line naming the key and the fix
    with pytest.raises(InputError) as refused:
        Policy.from_toml()
    assert str(refused.value) == (
        "config/backtest.toml: max_regression was renamed max_wape_regression in template 1.1.0:"
        " rename the key (copier update does it for you)"
    )
