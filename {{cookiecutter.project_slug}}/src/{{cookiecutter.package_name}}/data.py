"""Example data: SYNTHETIC weekly unit sales per store x product category.

The generator exists so the template runs end to end on a laptop; what real data must look like is the data
contract in `contract.py`. TODO: plug in your own data there (and via DATA_URI), not here.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }} import ci
from {{ cookiecutter.package_name }}.contract import (
    CATEGORIES,
    COLUMNS,
    KEY_COLUMNS,
    SERIES_COLUMNS,
    TARGET,
    WEEK_START_DAY,
    load_sales,  # noqa: F401 - re-exported: callers still import it from here
)
from {{ cookiecutter.package_name }}.settings import Settings, variable

STORES = tuple(f"S{number:02d}" for number in range(1, 9))
HISTORY_WEEKS = 156
SEED = 20240101


def scenario_grid(scenarios: int | None) -> pd.DataFrame:
    """The store x category series to generate: the default 8 stores x every category, or the first
    `scenarios` of as many stores as they need (`make data SCENARIOS=N`)."""
    if scenarios is None:
        stores = STORES
    else:
        stores = tuple(f"S{number:02d}" for number in range(1, math.ceil(scenarios / len(CATEGORIES)) + 1))
    grid = pd.MultiIndex.from_product([stores, CATEGORIES], names=SERIES_COLUMNS).to_frame(index=False)
    return grid if scenarios is None else grid.head(scenarios)


def newest_complete_week(today: date) -> date:
    """The start of the last full week before `today` (weeks start on the contract's WEEK_START_DAY)."""
    this_week = today - timedelta(days=(today.weekday() - WEEK_START_DAY) % 7)
    return this_week - timedelta(weeks=1)


def generate_sales(
    end_week: date, weeks: int = HISTORY_WEEKS, seed: int = SEED, scenarios: int | None = None
) -> pd.DataFrame:
    """Deterministic synthetic history: same end week, seed and scenario count, same rows."""
    rng = np.random.default_rng(seed)
    week_starts = pd.date_range(end=pd.Timestamp(end_week), periods=weeks, freq="7D")
    series = scenario_grid(scenarios)
    grid = series.merge(pd.DataFrame({"week_start": week_starts}), how="cross")[KEY_COLUMNS]
    rows = len(grid)
    stores = tuple(series["store_id"].unique())
    store_size = dict(zip(stores, rng.uniform(0.7, 1.5, len(stores)), strict=True))
    category_base = dict(zip(CATEGORIES, (120.0, 80.0, 150.0, 200.0, 60.0), strict=True))
    list_price = dict(zip(CATEGORIES, (2.5, 3.0, 1.8, 2.2, 6.5), strict=True))

    week_of_year = grid["week_start"].dt.isocalendar().week.to_numpy(dtype=float)
    promo = rng.random(rows) < 0.15
    discount = np.where(promo, rng.uniform(0.1, 0.35, rows), 0.0).round(2)
    holiday = np.isin(week_of_year, (1, 14, 22, 35, 47, 51, 52))
    price = (grid["category"].map(list_price) * (1 - discount) * rng.normal(1.0, 0.02, rows)).round(2)
    seasonality = 1 + 0.25 * np.sin(2 * np.pi * (week_of_year - 10) / 52)
    trend = 1 + 0.002 * (grid["week_start"] - week_starts[0]).dt.days.to_numpy() / 7
    expected = (
        grid["category"].map(category_base).to_numpy()
        * grid["store_id"].map(store_size).to_numpy()
        * seasonality
        * trend
        * (1 + 0.6 * discount + 0.2 * promo)
        * np.where(holiday, 1.3, 1.0)
    )
    grid["price"] = price.astype("float64")
    grid["discount"] = discount.astype("float64")
    grid["promo"] = promo.astype("int64")
    grid["holiday"] = holiday.astype("int64")
    grid[TARGET] = rng.poisson(expected).astype("int64")
    return grid[COLUMNS]


def generate_data(settings: Settings, scenarios: int | None = None, today: date | None = None) -> int:
    """Entry point of `make data`: write the synthetic data set to DATA_URI (never over real data in CI)."""
    if ci.in_ci(os.environ) and variable("DATA_URI") is not None:
        print(
            "Refused: in CI, DATA_URI names your real data and the SYNTHETIC generator never overwrites it;"
            " pipelines run `make data-test train` on it instead.",
            file=sys.stderr,
        )
        return 1
    frame = generate_sales(newest_complete_week(today or date.today()), scenarios=scenarios)
    target = Path(settings.data_uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    series = frame.groupby(SERIES_COLUMNS).ngroups
    print(
        f"Wrote {len(frame)} rows ({series} store x category series) of SYNTHETIC sales data to {target}"
        " (replace it via DATA_URI)."
    )
    print("Next: make data-test (the data gate), then make train")
    return 0
