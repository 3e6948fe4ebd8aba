"""Batch forecasts: the next `horizon_weeks` of every series, with the version an environment runs.

`make forecast ENV=production` (or VERSION=N) on a laptop or in CI, and the weekly CronJob in the cluster
(deploy/base/cronjob-forecast.yaml, no ENV or VERSION: the `model` ConfigMap's MODEL_VERSION) run the same
code. Each run writes a NEW Parquet file into the folder FORECAST_URI names (any fsspec URL) and never
touches an earlier one: monitoring joins every forecast with the actuals that arrive later (`read_forecasts`).
"""

from __future__ import annotations

import io
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from {{ cookiecutter.package_name }} import gitops, registry
from {{ cookiecutter.package_name }}.contract import COLUMNS as SALES_COLUMNS
from {{ cookiecutter.package_name }}.contract import SERIES_COLUMNS, TARGET, DataUnreadable, load_sales
from {{ cookiecutter.package_name }}.inputs import InputError, MissingInput
from {{ cookiecutter.package_name }}.monitor_config import MonitorConfig
from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri, variable

COLUMNS = [*SERIES_COLUMNS, "week_start", "forecast", "model_version", "generated_at"]
DTYPES = {
    **dict.fromkeys(SERIES_COLUMNS, "object"),
    "week_start": "datetime64[ns]",
    "forecast": "float64",
    "model_version": "object",
    "generated_at": "datetime64[us, UTC]",  # as written: microseconds, like the file names
}
FILE_PREFIX = "forecast-"
DECIMALS = 1  # a tenth of a unit: finer is noise for weekly unit counts, coarser would bias small series
FUTURE_INPUTS = [column for column in SALES_COLUMNS if column != TARGET]  # what the model reads, as served


def future_frame(history: pd.DataFrame, horizon_weeks: int) -> pd.DataFrame:
    """The model's input rows for the `horizon_weeks` weeks after each series' newest week, in series order.

    TODO: plug in your promotion and holiday plan here. The future's covariates are not in the history, so
    the forecast is a "business as usual" one: each series at its regular price (that of its newest week
    without a promotion; its newest week's when it never had one), no discount, no promotion, no holiday.
    Join your planned promotions and your holiday calendar on (store_id, category, week_start) to forecast
    what you actually plan.
    """
    ordered = history.sort_values("week_start")
    anchors = ordered.drop_duplicates(SERIES_COLUMNS, keep="last")[[*SERIES_COLUMNS, "week_start"]]
    without_promotion = ordered[ordered["promo"] == 0]
    regular = pd.concat([ordered, without_promotion]).drop_duplicates(SERIES_COLUMNS, keep="last")
    newest = anchors.merge(regular[[*SERIES_COLUMNS, "price"]], on=SERIES_COLUMNS)
    newest = newest.sort_values(SERIES_COLUMNS, ignore_index=True)
    ahead = pd.DataFrame({"weeks_ahead": range(1, horizon_weeks + 1)})
    rows = newest.merge(ahead, how="cross")
    rows["week_start"] = rows["week_start"] + pd.to_timedelta(7 * rows.pop("weeks_ahead"), unit="D")
    return rows.assign(discount=0.0, promo=0, holiday=0)[FUTURE_INPUTS]


def read_forecasts(forecast_uri: str) -> pd.DataFrame:
    """Every forecast written to the folder, oldest run first; an empty frame when there is none yet."""
    import fsspec

    filesystem, folder = fsspec.core.url_to_fs(forecast_uri)
    paths = sorted(filesystem.glob(f"{folder.rstrip('/')}/{FILE_PREFIX}*.parquet"))
    frames = [_read_parquet(filesystem, path) for path in paths]
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DTYPES.items()})
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def run_forecast(
    settings: Settings, environment: str | None, version: str | None, now: datetime | None = None
) -> str:
    """Entry point of `make forecast` and of the CronJob: forecast every series into a new file; its URL."""
    version = resolve_version(settings, environment, version)
    horizon = MonitorConfig.from_toml().horizon_weeks
    history = _history(settings.data_uri)
    future = future_frame(history, horizon)
    predictions = _predict(settings, version, future)
    generated_at = _utc(now or datetime.now(UTC))
    rows = future[[*SERIES_COLUMNS, "week_start"]].assign(
        forecast=predictions.clip(lower=0).round(DECIMALS), model_version=version, generated_at=generated_at
    )
    name = f"{FILE_PREFIX}{generated_at:%Y%m%dT%H%M%S%fZ}-v{version}.parquet"
    url = _write(rows, settings.forecast_uri, name)
    series = len(rows) // horizon
    print(
        f"Wrote {len(rows)} forecasts ({series} series x {horizon} weeks) of version {version}"
        f" to {shareable_uri(url)}"
    )
    return url


def resolve_version(settings: Settings, environment: str | None, version: str | None) -> str:
    """The given version, else what deploy/<environment>/ pins, else MODEL_VERSION (the cluster's)."""
    if version is not None:
        return _checked(version, "VERSION")
    if environment is not None:
        try:
            return gitops.running_version(settings.deploy_dir / environment)
        except gitops.PinError as error:
            raise InputError(str(error)) from None
    pinned = variable("MODEL_VERSION")
    if pinned is None:
        raise MissingInput("ENV or VERSION")
    if pinned == gitops.UNRELEASED:
        raise InputError(
            f"MODEL_VERSION is {gitops.UNRELEASED!r}: no version to forecast with; promotion sets it"
        )
    return _checked(pinned, "MODEL_VERSION")


def _checked(version: str, name: str) -> str:
    try:
        return registry.parse_version(version, name)
    except registry.RegistryError as error:
        raise InputError(str(error)) from None


def _history(data_uri: str) -> pd.DataFrame:
    """The sales history, refused in one line when it cannot be read or lacks what the forecast needs."""
    try:
        history = load_sales(data_uri)
    except DataUnreadable as error:
        raise InputError(str(error)) from None
    missing = [column for column in FUTURE_INPUTS if column not in history.columns]
    if missing:
        raise InputError(f"{data_uri}: lacks the column(s) {missing}; contract.py says what DATA_URI holds")
    return history.drop(columns=TARGET, errors="ignore")


def _predict(settings: Settings, version: str, rows: pd.DataFrame) -> pd.Series:
    """Predictions of the version: one code path on a laptop (registry export) and in the serving image."""
    baked = variable("MODEL_DIR")
    if baked is not None and (Path(baked) / version / "MLmodel").is_file():
        return _scores(_load(Path(baked) / version), rows)
    from {{ cookiecutter.package_name }}.serve import export_versions

    registry.get_version(registry.connect(settings), settings.model_name, version)  # a missing one: one line
    with tempfile.TemporaryDirectory(prefix="models-") as folder:
        export_versions(settings, [version], Path(folder))
        return _scores(_load(Path(folder) / version), rows)


def _load(folder: Path) -> Any:
    from {{ cookiecutter.package_name }}.serving import load_model

    return load_model(folder)


def _scores(model: Any, rows: pd.DataFrame) -> pd.Series:
    return pd.Series(model.predict(rows), index=rows.index, dtype="float64")


def _utc(moment: datetime) -> pd.Timestamp:
    """A timestamp in UTC; a naive one is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def _write(rows: pd.DataFrame, forecast_uri: str, name: str) -> str:
    """Write a new file into the folder (never over an existing one); readers never see it half-written."""
    import fsspec

    filesystem, folder = fsspec.core.url_to_fs(forecast_uri)
    path = f"{folder.rstrip('/')}/{name}"
    if filesystem.exists(path):
        raise FileExistsError(f"{path} exists: forecasts are never overwritten; re-run for a new file")
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    filesystem.makedirs(folder, exist_ok=True)
    filesystem.pipe_file(f"{path}.partial", buffer.getvalue())
    filesystem.mv(f"{path}.partial", path)
    return f"{forecast_uri.rstrip('/')}/{name}"


def _read_parquet(filesystem: Any, path: str) -> pd.DataFrame:
    with filesystem.open(path, "rb") as handle:
        return pd.read_parquet(handle)
