"""Features and the model pipeline: the two places a product team adapts first.

The pipeline takes raw rows (the columns of the data set minus the target) and derives everything else
itself, so the served model accepts exactly what the data gate validated.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

CATEGORICAL = ["store_id", "category"]
NUMERIC = ["price", "discount", "promo", "holiday", "week_of_year", "month", "year"]
MAX_CATEGORIES = 255  # HistGradientBoostingRegressor's limit on the values of one categorical feature


def too_many_categories(frame: pd.DataFrame, params: dict[str, Any]) -> str | None:
    """Why one model with `params` cannot be fitted on all of `frame` (a categorical feature with more values
    than the estimator takes: at most `max_bins`), or None. A per-scenario fit sees one store and one
    category, so never hits it."""
    limit = min(MAX_CATEGORIES, int(params.get("max_bins", MAX_CATEGORIES)))
    for column in CATEGORICAL:
        count = frame[column].nunique()
        if count > limit:
            return f"{count} distinct {column} values, and one global model takes at most {limit}"
    return None


def add_calendar_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Derive seasonality inputs from the week start. TODO: add your own features here."""
    week_start = pd.to_datetime(frame["week_start"])
    return frame.assign(
        week_of_year=week_start.dt.isocalendar().week.astype("int64").to_numpy(),
        month=week_start.dt.month.to_numpy(),
        year=week_start.dt.year.to_numpy(),
    )


def build_pipeline(model_params: dict[str, Any], seed: int) -> Pipeline:
    """Calendar features, categorical encoding, gradient boosting. TODO: swap in your own estimator."""
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                CATEGORICAL,
            ),
            ("numeric", "passthrough", NUMERIC),
        ],
        verbose_feature_names_out=False,
    )
    # Deterministic by default (no validation split); the config may still choose otherwise.
    params = {"early_stopping": False, **model_params}
    model = HistGradientBoostingRegressor(**params, categorical_features=[0, 1], random_state=seed)
    return Pipeline(
        [("calendar", FunctionTransformer(add_calendar_features)), ("encode", encode), ("model", model)]
    )
