"""The back-test decision and its windows: what a reviewer trusts when a verdict says passed."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.backtest import Policy, compare_to_champion, rolling_windows

POLICY = Policy(windows=3, window_weeks=4, wape_floor=0.15, max_regression=0.005)


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
