"""The data gate: a Great Expectations (1.x) suite over the raw sales data.

`make data-test` and the start of training run the same `validate_sales`, so bad data never reaches a model.
Great Expectations takes seconds to import: it is imported here only, and only when validating.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from {{ cookiecutter.package_name }}.data import CATEGORIES, COLUMNS, KEY_COLUMNS, TARGET, load_sales
from {{ cookiecutter.package_name }}.settings import Settings

SUITE_NAME = "raw_sales"
MIN_ROWS = 1000
MAX_AGE_DAYS = 21  # the newest week must be at most this old: stale extracts are refused
STRING_TYPES = ["str", "string", "object"]
INTEGER_TYPES = ["int64", "int32", "Int64"]
FLOAT_TYPES = ["float64", "float32"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]"]


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
    """Outcome of one validation run: what failed, and where the Data Docs are."""

    success: bool
    evaluated: int
    failures: list[Failure]
    docs_index: Path | None

    def summary_table(self) -> str:
        """A short plain-text table of failed expectations for logs and CI output."""
        if self.success:
            return f"Data gate passed: {self.evaluated} expectations met."
        lines = [f"Data gate FAILED: {len(self.failures)} of {self.evaluated} expectations not met.", ""]
        lines.append(f"{'expectation':<60} observed")
        lines += [f"{failure.name:<60} {failure.observed}" for failure in self.failures]
        return "\n".join(lines)


def expectations(today: date) -> list[Any]:
    """The suite, in code. TODO: adapt ranges and categories to your own data."""
    import great_expectations as gx

    e = gx.expectations
    freshest_allowed = pd.Timestamp(today - timedelta(days=MAX_AGE_DAYS))
    column_types = {
        "store_id": STRING_TYPES,
        "category": STRING_TYPES,
        "week_start": DATETIME_TYPES,
        "price": FLOAT_TYPES,
        "discount": FLOAT_TYPES,
        "promo": INTEGER_TYPES,
        "holiday": INTEGER_TYPES,
        TARGET: INTEGER_TYPES,
    }
    return [
        e.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=True),
        *(e.ExpectColumnValuesToBeInTypeList(column=c, type_list=types) for c, types in column_types.items()),
        *(e.ExpectColumnValuesToNotBeNull(column=column) for column in COLUMNS),
        e.ExpectCompoundColumnsToBeUnique(column_list=KEY_COLUMNS),
        e.ExpectColumnValuesToMatchRegex(column="store_id", regex=r"^S[0-9]{2}$"),
        e.ExpectColumnValuesToBeInSet(column="category", value_set=list(CATEGORIES)),
        e.ExpectColumnValuesToBeBetween(column="price", min_value=0.05, max_value=500),
        e.ExpectColumnValuesToBeBetween(column="discount", min_value=0, max_value=0.9),
        e.ExpectColumnValuesToBeInSet(column="promo", value_set=[0, 1]),
        e.ExpectColumnValuesToBeInSet(column="holiday", value_set=[0, 1]),
        e.ExpectColumnValuesToBeBetween(column=TARGET, min_value=0, max_value=100_000),
        e.ExpectTableRowCountToBeBetween(min_value=MIN_ROWS),
        e.ExpectColumnMaxToBeBetween(column="week_start", min_value=freshest_allowed),
    ]


def _data_docs_site(base_directory: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(base_directory.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _failures(result: Any) -> list[Failure]:
    failures = []
    for run in result.run_results.values():
        for outcome in run.results:
            if outcome.success:
                continue
            config = outcome.expectation_config
            kwargs = config.kwargs
            column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
            details = outcome.result or {}
            observed = details.get("observed_value", details.get("unexpected_count", ""))
            if outcome.exception_info and outcome.exception_info.get("raised_exception"):
                observed = "column missing or unreadable"
            failures.append(Failure(config.type, column, str(observed)[:80]))
    return failures


def validate_sales(
    frame: pd.DataFrame, docs_dir: Path | None = None, today: date | None = None
) -> ValidationReport:
    """Run the suite on a data frame; write Data Docs HTML to `docs_dir` when given."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(site_name="local", site_config=_data_docs_site(docs_dir))
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs"))
    batch = context.data_sources.add_pandas("sales").add_dataframe_asset("raw_sales")
    suite = context.suites.add(
        gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations(today or date.today()))
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=SUITE_NAME, data=batch.add_batch_definition_whole_dataframe("all"), suite=suite
        )
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=SUITE_NAME, validation_definitions=[definition], actions=actions, result_format="SUMMARY"
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    docs_index = docs_dir / "index.html" if docs_dir is not None else None
    return ValidationReport(bool(result.success), len(suite.expectations), _failures(result), docs_index)


def validate_data(settings: Settings) -> int:
    """Entry point of `make data-test`: validate DATA_URI, write Data Docs, fail on any unmet expectation."""
    report = validate_sales(load_sales(settings.data_uri), docs_dir=settings.reports_dir / "data-docs")
    print(report.summary_table())
    print(f"Data Docs: {report.docs_index}")
    return 0 if report.success else 1
