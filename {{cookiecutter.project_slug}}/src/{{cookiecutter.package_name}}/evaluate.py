"""Forecast quality: the metrics every stage compares, and the plots reviewers look at.

matplotlib is imported by the plots only: the back-test (also in the serving image) needs just the metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (no display on CI agents or in containers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, WAPE (error share of volume) and bias (over-forecast share of volume)."""
    actual = np.asarray(actual, dtype=float)
    error = np.asarray(predicted, dtype=float) - actual
    volume = float(np.abs(actual).sum()) or 1.0
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "wape": float(np.abs(error).sum() / volume),
        "bias": float(error.sum() / volume),
    }


def forecast_vs_actual_plot(weeks: pd.Series, actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Total units per week over the evaluation window."""
    totals = (
        pd.DataFrame({"week": weeks.to_numpy(), "actual": actual, "forecast": predicted})
        .groupby("week")
        .sum()
    )
    figure, axis = _pyplot().subplots(figsize=(9, 4))
    totals.plot(ax=axis)
    axis.set(title="Forecast vs actual (all stores and categories)", xlabel="week", ylabel="units")
    figure.tight_layout()
    return figure


def residuals_plot(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    figure, axis = _pyplot().subplots(figsize=(6, 4))
    axis.hist(np.asarray(predicted) - np.asarray(actual), bins=40)
    axis.set(title="Residuals (forecast - actual)", xlabel="units", ylabel="rows")
    figure.tight_layout()
    return figure


def importance_plot(importances: pd.Series, of: str = "") -> Figure:
    """Permutation importance; `of` says what was measured when it is not the whole model."""
    figure, axis = _pyplot().subplots(figsize=(6, 4))
    importances.sort_values().plot.barh(ax=axis)
    axis.set(title=f"Permutation importance{of} (increase in MAE)", xlabel="MAE increase")
    figure.tight_layout()
    return figure
