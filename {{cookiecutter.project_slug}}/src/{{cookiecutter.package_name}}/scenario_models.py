"""Many scenario models that act as one: what a per-scenario training registers and the server loads.

A scenario is one store x category series, named `STORE:CATEGORY` (e.g. `S01:dairy`). `ScenarioModels`
holds each scenario's fitted pipeline pickled, and routes every row to its own scenario's model: a version
is ONE registry entry however many scenarios it has. Models are unpickled on first use and kept in a
bounded cache (SCENARIO_CACHE_SIZE, default 256), so a server holding 2,000 scenarios keeps in memory only
the ones it is asked for. A row for a scenario this version has no model for is refused, never answered
with another scenario's forecast.

Kept free of MLflow, scikit-learn and the training code: the serving image unpickles it.
"""

from __future__ import annotations

import os
import pickle  # nosec B403 # our own training's pipelines, from our own registry
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }}.contract import SCENARIO_SEPARATOR

DEFAULT_CACHE_SIZE = 256


class UnknownScenario(ValueError):
    """Rows name a scenario this version has no model for; the message names them."""


def scenario_names(frame: pd.DataFrame) -> pd.Series:
    """`STORE:CATEGORY` per row: the name a scenario goes by in lineage, reports and errors."""
    return frame["store_id"].astype(str) + SCENARIO_SEPARATOR + frame["category"].astype(str)


def cache_size(env: Mapping[str, str] = os.environ) -> int:
    """How many unpickled scenario models a process keeps (SCENARIO_CACHE_SIZE, at least 1)."""
    value = env.get("SCENARIO_CACHE_SIZE", "")
    return max(1, int(value)) if value.isdigit() else DEFAULT_CACHE_SIZE


class ScenarioModels:
    """Every scenario's pipeline as one scikit-learn style model: `predict` routes rows by scenario."""

    def __init__(self, pickled: Mapping[str, bytes]) -> None:
        self._pickled = dict(pickled)
        self._loaded: OrderedDict[int, Any] = OrderedDict()  # id of the stored pickle -> its model

    @property
    def scenarios(self) -> list[str]:
        return sorted(self._pickled)

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names among `names` this version has no model for, sorted."""
        return sorted(set(names) - self._pickled.keys())

    def pickled(self, scenario: str) -> bytes:
        """One scenario's pipeline as stored: what a release carries over from its champion."""
        return self._pickled[scenario]

    def model(self, scenario: str) -> Any:
        """One scenario's pipeline, unpickled on first use; beyond the cache the least recently used goes.

        Scenarios that share one stored pipeline (a global champion kept for many of them) share one entry.
        """
        key = id(self._pickled[scenario])
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        model = pickle.loads(self._pickled[scenario])  # nosec B301 # pickled by our own training
        self._loaded[key] = model
        while len(self._loaded) > cache_size():
            self._loaded.popitem(last=False)
        return model

    @property
    def loaded(self) -> int:
        """Scenario models unpickled in this process right now (bounded by the cache)."""
        return len(self._loaded)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """One forecast per row, in order, each from its own scenario's model."""
        names = scenario_names(frame)
        unknown = self.unknown(names.unique())
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise UnknownScenario(
                f"no model for scenario {shown}: this version has {len(self._pickled)} scenarios"
                " (STORE:CATEGORY); `make lineage` lists them"
            )
        predictions = np.empty(len(frame), dtype=float)
        for name, rows in names.groupby(names, sort=False).indices.items():
            predictions[rows] = self.model(name).predict(frame.iloc[rows])
        return predictions

    def __getstate__(self) -> dict[str, Any]:
        return {"pickled": self._pickled}  # the cache is per process, never pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pickled = state["pickled"]
        self._loaded = OrderedDict()
