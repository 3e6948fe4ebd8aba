"""The data contract: what the raw weekly sales data must look like, named once.

The synthetic generator (`data.py`) writes data that meets it, the data gate (`validation.py`) refuses data
that does not, and training, back-test and serving read these names. `load_sales` is the one reader of
DATA_URI.

TODO: to plug in your own source, have your extraction job write a Parquet file (local path or any fsspec URL)
to DATA_URI with these columns, then adapt the values below to describe it. Change `load_sales` only if your
source is not Parquet; keep its promise: a frame, or `DataUnreadable` with one line saying what to fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below are read by light commands too (inputs): pandas loads with the data
    import pandas as pd

# ---------------------------------------------------------------- shape: columns, types, keys
SERIES_COLUMNS = ["store_id", "category"]  # one time series per store x category
KEY_COLUMNS = [*SERIES_COLUMNS, "week_start"]  # one row per series and week
TARGET = "units_sold"  # what the model forecasts
COLUMNS = [*KEY_COLUMNS, "price", "discount", "promo", "holiday", TARGET]  # exactly these, nothing else

STRING_TYPES = ["str", "string", "object"]
INTEGER_TYPES = ["int64", "int32", "Int64"]
FLOAT_TYPES = ["float64", "float32"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]"]
COLUMN_TYPES = {
    "store_id": STRING_TYPES,
    "category": STRING_TYPES,
    "week_start": DATETIME_TYPES,
    "price": FLOAT_TYPES,
    "discount": FLOAT_TYPES,
    "promo": INTEGER_TYPES,
    "holiday": INTEGER_TYPES,
    TARGET: INTEGER_TYPES,
}

# A scenario is one series, named STORE:CATEGORY (e.g. S01:dairy) in lineage, reports, errors and SCENARIO.
SCENARIO_SEPARATOR = ":"


def scenario_name(store_id: object, category: object) -> str:
    """The name one store x category series goes by."""
    return f"{store_id}{SCENARIO_SEPARATOR}{category}"


# ---------------------------------------------------------------- values
CATEGORIES = ("beverages", "bakery", "dairy", "produce", "household")  # every category the model knows
STORE_ID_PATTERN = r"^S[0-9]{2,4}$"  # store ids as your source writes them
VALUE_RANGES = {"price": (0.05, 500), "discount": (0, 0.9), TARGET: (0, 100_000)}  # inclusive bounds
FLAG_COLUMNS = ("promo", "holiday")  # 0 or 1
WEEK_START_DAY = 0  # weekday every `week_start` falls on (Monday=0 ... Sunday=6), as datetime.weekday()
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# ---------------------------------------------------------------- volume and freshness
MIN_ROWS = 1000  # fewer rows than this is a broken extract, not a small business
MAX_AGE_DAYS = 21  # a series is fresh when its newest week starts at most this many days before today
MIN_FRESH_SERIES_SHARE = 0.9  # share of series that must be fresh: a few fresh rows cannot hide stale data

MAKE_DATA_HINT = "run `make data` for the synthetic example, or point DATA_URI at your Parquet extract"


class DataUnreadable(Exception):
    """DATA_URI cannot be read as sales data; the message is one line naming the URI and the fix."""


def load_sales(uri: str) -> pd.DataFrame:
    """Read the raw sales data from a local path or any fsspec URL. TODO: your own reader, if not Parquet."""
    import pandas as pd

    try:
        frame = pd.read_parquet(uri)
    except FileNotFoundError:
        raise DataUnreadable(f"{uri}: no such file; {MAKE_DATA_HINT}.") from None
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        problem = f"not a Parquet file ({_first_line(error)})"
        if _is_empty(uri):
            problem = "the file is empty (0 bytes)"
        raise DataUnreadable(f"{uri}: {problem}; {MAKE_DATA_HINT}.") from None
    if frame.empty:
        raise DataUnreadable(f"{uri}: the Parquet file has no rows; re-run the extraction that writes it.")
    return frame


def _is_empty(uri: str) -> bool:
    """True when the file exists and holds no bytes at all."""
    try:
        import fsspec

        filesystem, path = fsspec.core.url_to_fs(uri)
        return filesystem.size(path) == 0
    except Exception:  # the size only refines the message: the read has already failed
        return False


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
