"""The data gate names the expectation that catches each kind of bad data, and training refuses it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conftest import TODAY
from {{ cookiecutter.package_name }}.data import generate_sales, newest_complete_week
from {{ cookiecutter.package_name }}.train import train
from {{ cookiecutter.package_name }}.validation import validate_sales

Corruption = Callable[[pd.DataFrame], pd.DataFrame]


def set_first(column: str, value: object) -> Corruption:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        if value is None and frame[column].dtype.kind in "iu":
            frame[column] = frame[column].astype("float64")
        frame.loc[0, column] = value
        return frame

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
}


def test_clean_data_passes_the_gate(sales):
    report = validate_sales(sales, today=TODAY)
    assert report.success, report.summary_table()
    assert report.evaluated >= 20


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


def test_gate_writes_data_docs(sales, tmp_path):
    report = validate_sales(sales, docs_dir=tmp_path / "docs", today=TODAY)
    assert report.docs_index == tmp_path / "docs" / "index.html"
    assert "raw_sales" in report.docs_index.read_text()


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
