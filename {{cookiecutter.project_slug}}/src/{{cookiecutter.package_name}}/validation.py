"""The data gate: a Great Expectations (1.x) suite over the raw sales data, and over two views of it.

`make data-test` and the start of training run the same `validate_sales`, so bad data never reaches a model.
The rows are checked as they are; rules about whole series and whole weeks run on two small views derived
from them (one row per store x category, one row per week) and carry names of their own, such as
`series_history_too_short(store_id,category)`, in the same report and the same Data Docs.
What the data must look like is the contract in `contract.py`; this module only checks it.
Great Expectations takes seconds to import: it is imported here only, and only when validating.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from {{ cookiecutter.package_name }}.contract import (
    CATEGORIES,
    COLUMN_TYPES,
    COLUMNS,
    FLAG_COLUMNS,
    KEY_COLUMNS,
    MAX_AGE_DAYS,
    MIN_FRESH_SERIES_SHARE,
    MIN_ROWS,
    SERIES_COLUMNS,
    STORE_ID_PATTERN,
    TARGET,
    VALUE_RANGES,
    WEEK_START_DAY,
    WEEKDAY_NAMES,
    DataUnreadable,
    load_sales,
)
from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri
from {{ cookiecutter.package_name }}.snapshot import fingerprint

SUITE_NAME = "raw_sales"
SERIES_SUITE_NAME = f"{SUITE_NAME}_series"  # one row per store x category
WEEKS_SUITE_NAME = f"{SUITE_NAME}_weeks"  # one row per week


@dataclass(frozen=True)
class Failure:
    """One failed expectation, named as a user would search for it."""

    expectation: str
    column: str
    observed: str

    @property
    def name(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of one validation run: what failed, on which data, in which run, where the Data Docs are."""

    success: bool
    evaluated: int
    failures: list[Failure]
    docs_index: Path | None
    suites: tuple[str, ...]
    data_asset: str
    run_name: str
    run_time: str
    pages: dict[str, str]  # suite -> its result page in the Data Docs (relative path); empty without docs

    def summary(self) -> dict[str, Any]:
        """What the evidence report shows of this run (logged with the training run as JSON)."""
        return {
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "suites": list(self.suites),
            "data_asset": self.data_asset,
            "run_name": self.run_name,
            "run_time": self.run_time,
            "pages": self.pages,
        }

    def summary_table(self) -> str:
        """A short plain-text table of failed expectations for logs and CI output."""
        if self.success:
            return f"Data gate passed: {self.evaluated} expectations met."
        lines = [f"Data gate FAILED: {len(self.failures)} of {self.evaluated} expectations not met.", ""]
        lines.append(f"{'expectation':<60} observed")
        lines += [f"{failure.name:<60} {failure.observed}" for failure in self.failures]
        return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    """One suite and the frame it runs on: the rows, or a view of them."""

    suite: str
    expectations: list[Any]
    data: pd.DataFrame
    unit: str = "rows"  # what one row of `data` is, for messages
    label_columns: tuple[str, ...] = ()  # the columns that name an offending row, for messages


def newest_allowed_week(today: date) -> pd.Timestamp:
    """The latest week start the gate accepts: a week must have ended by `today`, so none is in the future."""
    return pd.Timestamp(today - timedelta(days=7))


def expectations(today: date) -> list[Any]:
    """The suite over the rows, in code. What it checks comes from `contract.py`: edit values there."""
    import great_expectations as gx

    e = gx.expectations
    freshest_allowed = pd.Timestamp(today - timedelta(days=MAX_AGE_DAYS))
    newest_allowed = newest_allowed_week(today)
    return [
        e.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=True),
        *(e.ExpectColumnValuesToBeInTypeList(column=c, type_list=types) for c, types in COLUMN_TYPES.items()),
        *(e.ExpectColumnValuesToNotBeNull(column=column) for column in COLUMNS),
        e.ExpectCompoundColumnsToBeUnique(column_list=KEY_COLUMNS),
        e.ExpectColumnValuesToMatchRegex(column="store_id", regex=STORE_ID_PATTERN),
        e.ExpectColumnValuesToBeInSet(column="category", value_set=list(CATEGORIES)),
        *(
            e.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)
            for column, (low, high) in VALUE_RANGES.items()
        ),
        *(e.ExpectColumnValuesToBeInSet(column=column, value_set=[0, 1]) for column in FLAG_COLUMNS),
        e.ExpectColumnMaxToBeBetween(
            column=TARGET, min_value=0, strict_min=True, description=f"`{TARGET}` is not all zero."
        ),
        e.ExpectColumnStdevToBeBetween(
            column=TARGET, min_value=0, strict_min=True, description=f"`{TARGET}` is not constant."
        ),
        e.ExpectTableRowCountToBeBetween(min_value=MIN_ROWS),
        e.ExpectColumnMaxToBeBetween(column="week_start", min_value=freshest_allowed),
        e.ExpectColumnValuesToBeBetween(
            column="week_start",
            max_value=newest_allowed,
            description=f"No week after {newest_allowed.date()}: every week has ended by {today}.",
        ),
    ]


def series_view(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per store x category series: how many distinct weeks it has, and its newest week."""
    return frame.groupby(SERIES_COLUMNS, as_index=False, observed=True, sort=True).agg(
        weeks=("week_start", "nunique"), newest_week=("week_start", "max")
    )


def weeks_view(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct week: the weekday it starts on, and the days since the week before it."""
    weeks = pd.Series(frame["week_start"].dropna().unique()).sort_values(ignore_index=True)
    return pd.DataFrame(
        {
            "week_start": weeks,
            "weekday": [WEEKDAY_NAMES[day] for day in weeks.dt.weekday],
            "days_since_previous": weeks.diff().dt.days,
        }
    )


def _rule(expectation: type, rule: str, shows: str, description: str, **kwargs: Any) -> Any:
    """An expectation on a view, named by `rule` and the raw columns it is about."""
    return expectation(**kwargs, meta={"rule": rule, "shows": shows}, description=f"{rule}: {description}")


def series_expectations(today: date, min_series_weeks: int) -> list[Any]:
    """Rules on whole series: long enough for the hold-out, and fresh (not hidden behind a few fresh rows)."""
    import great_expectations as gx

    e = gx.expectations
    shows = ",".join(SERIES_COLUMNS)
    freshest_allowed = pd.Timestamp(today - timedelta(days=MAX_AGE_DAYS))
    return [
        _rule(
            e.ExpectColumnValuesToBeBetween,
            "series_history_too_short",
            shows,
            f"every series has at least {min_series_weeks} distinct weeks (the hold-out and some training).",
            column="weeks",
            min_value=min_series_weeks,
        ),
        _rule(
            e.ExpectColumnValuesToBeBetween,
            "series_stale",
            shows,
            f"at least {MIN_FRESH_SERIES_SHARE * 100:.0f}% of the series have a week on or after "
            f"{freshest_allowed.date()} ({MAX_AGE_DAYS} days before {today}).",
            column="newest_week",
            min_value=freshest_allowed,
            mostly=MIN_FRESH_SERIES_SHARE,
        ),
    ]


def weeks_expectations() -> list[Any]:
    """Rules on the calendar: weeks start on the contract's weekday, and the history has no stale gap."""
    import great_expectations as gx

    e = gx.expectations
    weekday = WEEKDAY_NAMES[WEEK_START_DAY]
    return [
        _rule(
            e.ExpectColumnValuesToBeInSet,
            "wrong_weekday",
            "week_start",
            f"every week starts on a {weekday}.",
            column="weekday",
            value_set=[weekday],
        ),
        _rule(
            e.ExpectColumnValuesToBeBetween,
            "history_gap",
            "week_start",
            f"no gap of more than {MAX_AGE_DAYS} days between weeks: old history is as fresh as the newest.",
            column="days_since_previous",
            max_value=MAX_AGE_DAYS,
        ),
    ]


def _has_views(frame: pd.DataFrame) -> bool:
    """The views need the key columns, with real dates; without them the row suite already fails."""
    has_keys = set(KEY_COLUMNS) <= set(frame.columns)
    return has_keys and pd.api.types.is_datetime64_any_dtype(frame["week_start"])


def _data_docs_site(base_directory: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(base_directory.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def asset_name(uri: str, data_fingerprint: str) -> str:
    """How the Data Docs name the data: where it was read (without credentials) and exactly what it was."""
    return f"{shareable_uri(uri)} (sha256 {data_fingerprint[:12]})"


def _name_data_asset(context: Any, data_asset: str) -> None:
    """Name the data in the stored results: a data-frame batch has no name, so Data Docs showed None."""
    store = context.validation_results_store
    for key in store.list_keys():
        result = store.get(key)
        result.meta["batch_spec"]["data_asset_name"] = data_asset
        store.set(key, result)


def _build_data_docs(context: Any, docs_dir: Path, run_name: str) -> dict[str, str]:
    """Data Docs of this validation only (a folder kept from an earlier run is replaced); page per suite."""
    shutil.rmtree(docs_dir, ignore_errors=True)
    context.add_data_docs_site(site_name="local", site_config=_data_docs_site(docs_dir))
    context.build_data_docs(site_names=["local"])
    return {
        page.parts[-4]: page.relative_to(docs_dir).as_posix()
        for page in sorted(docs_dir.glob(f"validations/*/{run_name}/*/*.html"))
    }


def _show(value: Any) -> str:
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return str(value.date())
    return f"{value:g}" if isinstance(value, float) else str(value)


def _requirement(column: str, kwargs: dict[str, Any], dates: bool) -> str:
    """What a rule asks of the view's column, e.g. 'weeks >= 50' or 'newest_week >= 2026-02-25 for 90%'."""
    bounds = {">=": kwargs.get("min_value"), "<=": kwargs.get("max_value")}
    parts = [
        f"{column} {sign} {_show(pd.Timestamp(bound) if dates else bound)}"
        for sign, bound in bounds.items()
        if bound is not None
    ]
    parts += [f"{column} in {', '.join(map(str, kwargs['value_set']))}"] if kwargs.get("value_set") else []
    mostly = f" for {kwargs['mostly'] * 100:.0f}%" if kwargs.get("mostly", 1) < 1 else ""
    return " and ".join(parts) + mostly


def _offenders(check: Check, outcome: Any) -> str:
    """'3 of 40 series, e.g. S01/dairy weeks=12; needs weeks >= 50': which rows of a view break a rule."""
    details = outcome.result or {}
    kwargs = outcome.expectation_config.kwargs
    column = kwargs["column"]
    example = ""
    for i in (details.get("partial_unexpected_index_list") or [])[:1]:
        label = "/".join(_show(check.data.at[i, c]) for c in check.label_columns)
        example = f", e.g. {label} {column}={_show(check.data.at[i, column])}"
    counts = f"{details.get('unexpected_count')} of {details.get('element_count')} {check.unit}"
    dates = pd.api.types.is_datetime64_any_dtype(check.data[column])
    return f"{counts}{example}; needs {_requirement(column, kwargs, dates)}"


def _failure(check: Check, outcome: Any) -> Failure:
    """A failed expectation as the report names it: a view's rule by its own name, others by GX's."""
    config = outcome.expectation_config
    rule = (config.meta or {}).get("rule")
    details = outcome.result or {}
    if outcome.exception_info and outcome.exception_info.get("raised_exception"):
        observed = "column missing or unreadable"
    elif rule:
        observed = _offenders(check, outcome)
    else:
        observed = str(details.get("observed_value", details.get("unexpected_count", "")))[:80]
    if rule:
        return Failure(rule, config.meta["shows"], observed)
    column = config.kwargs.get("column") or ",".join(config.kwargs.get("column_list") or [])
    return Failure(config.type, column, observed)


def checks(frame: pd.DataFrame, today: date, min_series_weeks: int) -> list[Check]:
    """The rows' suite, and the views' suites when the rows have the key columns to build them from."""
    rows = Check(SUITE_NAME, expectations(today), frame)
    if not _has_views(frame):
        return [rows]
    return [
        rows,
        Check(
            SERIES_SUITE_NAME,
            series_expectations(today, min_series_weeks),
            series_view(frame),
            "series",
            tuple(SERIES_COLUMNS),
        ),
        Check(WEEKS_SUITE_NAME, weeks_expectations(), weeks_view(frame), "weeks", ("week_start",)),
    ]


def validate_sales(
    frame: pd.DataFrame,
    docs_dir: Path | None = None,
    today: date | None = None,
    min_series_weeks: int = 1,
    data_asset: str = "sales",
    run_name: str = "data-test",
) -> ValidationReport:
    """Run the suites on a data frame; write Data Docs HTML to `docs_dir` (replacing it) when given.

    `min_series_weeks`: the fewest distinct weeks every series needs (training passes its hold-out plus some).
    `data_asset` and `run_name` name the data and the run in the Data Docs, so a page traces to a version.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    today = today or date.today()
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("sales")
    failures: list[Failure] = []
    evaluated, success = 0, True
    all_checks = checks(frame, today, min_series_weeks)
    for check in all_checks:
        suite = context.suites.add(gx.ExpectationSuite(name=check.suite, expectations=check.expectations))
        batch = source.add_dataframe_asset(check.suite).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=check.suite, data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": check.data}, result_format="SUMMARY", run_id=run_id
        )
        failures += [_failure(check, outcome) for outcome in result.results if not outcome.success]
        evaluated += len(suite.expectations)
        success = success and bool(result.success)
    docs_index, pages = None, {}
    if docs_dir is not None:
        _name_data_asset(context, data_asset)
        pages = _build_data_docs(context, docs_dir, run_name)
        docs_index = docs_dir / "index.html"
    return ValidationReport(
        success=success and not failures,
        evaluated=evaluated,
        failures=failures,
        docs_index=docs_index,
        suites=tuple(check.suite for check in all_checks),
        data_asset=data_asset,
        run_name=run_name,
        run_time=run_id.run_time.isoformat(timespec="seconds"),
        pages=pages,
    )


def validate_data(settings: Settings, min_series_weeks: int) -> int:
    """Entry point of `make data-test`: validate DATA_URI, write Data Docs, fail on any unmet expectation."""
    try:
        frame = load_sales(settings.data_uri)
    except DataUnreadable as error:
        print(f"Data gate FAILED: {error}", file=sys.stderr)
        return 1
    report = validate_sales(
        frame,
        settings.reports_dir / "data-docs",
        min_series_weeks=min_series_weeks,
        data_asset=asset_name(settings.data_uri, fingerprint(frame)),
    )
    print(report.summary_table())
    print(f"Data Docs: {report.docs_index}")
    if report.success:
        print("Next: make train (runs this gate again on the same data, then trains and registers a version)")
    return 0 if report.success else 1
