"""The data gate names the rule that catches each kind of bad data, and training refuses it."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conftest import TODAY
from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.train import train
from {{ cookiecutter.package_name }}.validation import (
    SERIES_SUITE_NAME,
    WEEKS_SUITE_NAME,
    DataUnreadable,
    load_sales,
    validate_data,
    validate_sales,
)

Corruption = Callable[[pd.DataFrame], pd.DataFrame]
MIN_SERIES_WEEKS = 26 + 24  # the hold-out (test_weeks in config/train.toml) plus weeks to train on


def set_first(column: str, value: object) -> Corruption:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        if value is None and frame[column].dtype.kind in "iu":
            frame[column] = frame[column].astype("float64")
        frame.loc[0, column] = value
        return frame

    return corrupt


def newest_week_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["week_start"] == frame["week_start"].max()]


def add_week(weeks_after_newest: int) -> Corruption:
    """One series gains a week this many weeks after the newest one."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        extra = newest_week_rows(frame).head(1)
        extra = extra.assign(week_start=extra["week_start"] + timedelta(weeks=weeks_after_newest))
        return pd.concat([frame, extra], ignore_index=True)

    return corrupt


def year_stale_with_fresh_rows(series: int) -> Corruption:
    """The whole history a year old, plus the newest week of a few (or all) series at its real date."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        stale = frame.assign(week_start=frame["week_start"] - timedelta(weeks=52))
        return pd.concat([stale, newest_week_rows(frame).head(series)], ignore_index=True)

    return corrupt


def shorten_series(store_id: str, category: str, keep_weeks: int) -> Corruption:
    """One store x category series keeps only its newest weeks."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        series = (frame["store_id"] == store_id) & (frame["category"] == category)
        too_old = frame["week_start"] < frame["week_start"].max() - timedelta(weeks=keep_weeks - 1)
        return frame[~(series & too_old)].reset_index(drop=True)

    return corrupt


# kind of bad data -> (corruption, the expectation that must catch it)
BAD_DATA: dict[str, tuple[Corruption, str]] = {
    "missing column": (lambda f: f.drop(columns="price"), "expect_table_columns_to_match_set"),
    "unexpected column": (lambda f: f.assign(store_name="x"), "expect_table_columns_to_match_set"),
    "price as text": (
        lambda f: f.assign(price=f["price"].astype(str)),
        "expect_column_values_to_be_in_type_list(price)",
    ),
    "null store key": (set_first("store_id", None), "expect_column_values_to_not_be_null(store_id)"),
    "null target": (set_first("units_sold", None), "expect_column_values_to_not_be_null(units_sold)"),
    "negative units": (set_first("units_sold", -5), "expect_column_values_to_be_between(units_sold)"),
    "price out of range": (set_first("price", 9999.0), "expect_column_values_to_be_between(price)"),
    "discount above 90%": (set_first("discount", 0.95), "expect_column_values_to_be_between(discount)"),
    "unknown category": (set_first("category", "toys"), "expect_column_values_to_be_in_set(category)"),
    "malformed store id": (set_first("store_id", "store-1"), "expect_column_values_to_match_regex(store_id)"),
    "promo flag not 0/1": (set_first("promo", 3), "expect_column_values_to_be_in_set(promo)"),
    "duplicate key rows": (
        lambda f: pd.concat([f, f.head(3)], ignore_index=True),
        "expect_compound_columns_to_be_unique(store_id,category,week_start)",
    ),
    "too few rows": (lambda f: f.head(200), "expect_table_row_count_to_be_between"),
    "stale extract": (
        lambda f: f.assign(week_start=f["week_start"] - timedelta(weeks=8)),
        "expect_column_max_to_be_between(week_start)",
    ),
    "all-zero target": (lambda f: f.assign(units_sold=0), "expect_column_max_to_be_between(units_sold)"),
    "constant target": (lambda f: f.assign(units_sold=7), "expect_column_stdev_to_be_between(units_sold)"),
    "a week in the future": (add_week(2), "expect_column_values_to_be_between(week_start)"),
    "the running, unfinished week": (add_week(1), "expect_column_values_to_be_between(week_start)"),
    "year-stale extract with a few fresh rows": (
        year_stale_with_fresh_rows(series=3),
        "series_stale(store_id,category)",
    ),
    "year-stale extract with one fresh week": (
        year_stale_with_fresh_rows(series=40),
        "history_gap(week_start)",
    ),
    "weeks starting on Tuesday": (
        lambda f: f.assign(week_start=f["week_start"] + timedelta(days=1)),
        "wrong_weekday(week_start)",
    ),
}


def test_clean_data_passes_the_gate(sales):
    report = validate_sales(sales, today=TODAY, min_series_weeks=MIN_SERIES_WEEKS)
    assert report.success, report.summary_table()
    assert report.evaluated >= 30


@pytest.mark.parametrize("kind", list(BAD_DATA))
def test_gate_names_the_expectation_that_catches_bad_data(sales, kind):
    # given
    corrupt, expectation = BAD_DATA[kind]
    # when
    report = validate_sales(corrupt(sales), today=TODAY)
    # then
    assert not report.success
    assert expectation in [failure.name for failure in report.failures], report.summary_table()
    assert expectation in report.summary_table()


def test_gate_refuses_a_series_shorter_than_the_hold_out_needs(sales):
    # given one series with 30 weeks, where training needs MIN_SERIES_WEEKS
    short = shorten_series("S03", "dairy", keep_weeks=30)(sales)
    # when
    report = validate_sales(short, today=TODAY, min_series_weeks=MIN_SERIES_WEEKS)
    # then the rule is named, with the series and what it needs
    failures = {failure.name: failure.observed for failure in report.failures}
    assert not report.success
    assert "series_history_too_short(store_id,category)" in failures, report.summary_table()
    observed = failures["series_history_too_short(store_id,category)"]
    assert observed == f"1 of 40 series, e.g. S03/dairy weeks=30; needs weeks >= {MIN_SERIES_WEEKS}"


def test_gate_writes_data_docs(sales, tmp_path):
    report = validate_sales(sales, docs_dir=tmp_path / "docs", today=TODAY)
    assert report.docs_index == tmp_path / "docs" / "index.html"
    index = report.docs_index.read_text()
    assert all(suite in index for suite in ("raw_sales", SERIES_SUITE_NAME, WEEKS_SUITE_NAME))
    pages = " ".join(page.read_text() for page in (tmp_path / "docs").rglob("*.html"))
    assert all(rule in pages for rule in ("series_history_too_short", "series_stale", "wrong_weekday"))


# kind of unreadable file -> (what is written to DATA_URI, what the one-line refusal says)
UNREADABLE: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing file": (lambda path: None, "no such file"),
    "empty file": (lambda path: path.write_bytes(b""), "the file is empty (0 bytes)"),
    "not Parquet": (lambda path: path.write_text("store_id,category\nS01,dairy\n"), "not a Parquet file"),
    "zero rows": (lambda path: generate_sales(TODAY).head(0).to_parquet(path), "has no rows"),
}


@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_loader_refuses_unreadable_data_in_one_line(tmp_path, kind):
    # given
    write, problem = UNREADABLE[kind]
    path = tmp_path / "sales.parquet"
    write(path)
    # when
    with pytest.raises(DataUnreadable) as refused:
        load_sales(str(path))
    # then one line names the file, the problem and the next step, and hides the reader's traceback
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert "\n" not in message
    assert "DATA_URI" in message or "extraction" in message
    assert "pyarrow" not in "".join(traceback.format_exception(refused.value))


def test_data_test_fails_in_one_line_on_an_unreadable_file(settings, capsys):
    # given
    data_path = Path(settings.data_uri)
    data_path.parent.mkdir(parents=True)
    data_path.write_bytes(b"")
    # when
    code = validate_data(settings, MIN_SERIES_WEEKS)
    # then
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"Data gate FAILED: {data_path}: the file is empty")


@pytest.mark.parametrize("kind", ["null store key", "unknown category", "duplicate key rows"])
def test_training_refuses_bad_data_and_logs_nothing(settings, kind, capsys):
    # given fresh data with one kind of corruption, where training reads it
    corrupt, expectation = BAD_DATA[kind]
    data_path = Path(settings.data_uri)
    data_path.parent.mkdir(parents=True)
    corrupt(generate_sales(newest_complete_week(date.today()), weeks=104)).to_parquet(data_path, index=False)
    # when
    code = train(settings)
    # then it names the expectation, and neither a snapshot nor a tracking store was written
    assert code == 1
    assert expectation in capsys.readouterr().out
    assert not settings.snapshot_dir.exists()
    assert not Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()


def test_training_refuses_history_shorter_than_the_hold_out_and_logs_nothing(settings, capsys):
    # given 30 weeks of fresh data, where config/train.toml holds out 26 and training needs more before them
    data_path = Path(settings.data_uri)
    data_path.parent.mkdir(parents=True)
    generate_sales(newest_complete_week(date.today()), weeks=30).to_parquet(data_path, index=False)
    # when
    code = train(settings)
    # then
    assert code == 1
    assert "series_history_too_short(store_id,category)" in capsys.readouterr().out
    assert not settings.snapshot_dir.exists()
    assert not Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()


def test_a_global_training_refuses_more_stores_than_one_model_takes_and_logs_nothing(
    settings, capsys, monkeypatch
):
    # given valid data with 8 stores, and a model that takes at most 5 values of a categorical feature
    from {{ cookiecutter.package_name }} import features

    monkeypatch.setattr(features, "MAX_CATEGORIES", 5)
    data_path = Path(settings.data_uri)
    data_path.parent.mkdir(parents=True)
    generate_sales(newest_complete_week(date.today()), weeks=104).to_parquet(data_path, index=False)
    # when
    code = train(settings)
    # then it says why in one line and what to do instead, before writing anything
    refusal = capsys.readouterr().err.strip().splitlines()[-1]  # after a note if this folder is not committed
    assert code == 1
    assert "8 distinct store_id values, and one global model takes at most 5" in refusal
    assert "make train-scenarios" in refusal
    assert not settings.snapshot_dir.exists()
    assert not Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("kind", ["empty file", "not Parquet"])
def test_training_refuses_an_unreadable_file_in_one_line_and_logs_nothing(settings, kind, capsys):
    # given
    write, problem = UNREADABLE[kind]
    data_path = Path(settings.data_uri)
    data_path.parent.mkdir(parents=True)
    write(data_path)
    # when
    code = train(settings)
    # then
    captured = capsys.readouterr()
    assert code == 1
    assert problem in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not settings.snapshot_dir.exists()
    assert not Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()
