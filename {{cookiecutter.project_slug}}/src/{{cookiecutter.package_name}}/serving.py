"""The scoring service: BentoML with adaptive batching, serving one or more exported registry versions.

One service everywhere a model answers requests: `make serve`, the back-test (candidate and champion in one
process), the image and the cluster. Concurrent requests are merged into one `predict` call (a batch of 32
rows costs about what one row costs), so throughput grows with load instead of queueing.

Contract (MLflow's scoring format, so any MLflow client works unchanged):
  POST /invocations       {"dataframe_split": {"columns": [...], "data": [[...], ...]}}  scored by the default
  POST /v<N>/invocations  the same, scored by version N (when this process serves several)
  -> 200 {"predictions": [float, ...]}, one per row, in order; 400 naming the bad column, row or value.
  GET /readyz (200 once every model is loaded), /livez, /metrics (Prometheus: latency, batch sizes).
Environment: MODEL_DIR (a folder with one exported MLflow model per version, named by its number),
MODEL_VERSIONS ("3" or "3,2": the first is the default; defaults to MODEL_VERSION), BATCH_MAX_ROWS (rows per
batch) and BATCH_MAX_LATENCY_MS (a request waiting longer is refused with 503: a deadline, not a wait).
Run: `bentoml serve {{ cookiecutter.package_name }}.serving:Scoring` (serve.py does it for you).
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import pandas as pd
from bentoml.validators import ContentType, DataframeSchema
from pydantic import BeforeValidator

from {{ cookiecutter.package_name }}.contract import (
    COLUMN_TYPES,
    COLUMNS,
    DATETIME_TYPES,
    FLOAT_TYPES,
    INTEGER_TYPES,
    TARGET,
    scenario_name,
)
from {{ cookiecutter.package_name }}.registry import parse_version
from {{ cookiecutter.package_name }}.scenario_models import ScenarioModels

INPUTS = [column for column in COLUMNS if column != TARGET]  # what a request sends for each row
MODEL_DIR = Path(os.environ.get("MODEL_DIR", "/opt/models"))
SERVED = os.environ.get("MODEL_VERSIONS") or os.environ.get("MODEL_VERSION", "")
VERSIONS = [version.strip() for version in SERVED.split(",")]
BATCH_MAX_ROWS = int(os.environ.get("BATCH_MAX_ROWS", "1024"))  # a back-test window fits in one batch
BATCH_MAX_LATENCY_MS = int(os.environ.get("BATCH_MAX_LATENCY_MS", "10000"))
SCENARIO_AT = (INPUTS.index("store_id"), INPUTS.index("category"))
KNOWN_SCENARIOS: dict[str, frozenset[str]] = {}  # per-scenario versions only, filled as each model loads


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _check_for(column: str) -> Any:
    """The per-value check of a column, from its type in the data contract."""
    if COLUMN_TYPES[column] is DATETIME_TYPES:
        return lambda value: datetime.fromisoformat(_text(value))
    if COLUMN_TYPES[column] in (FLOAT_TYPES, INTEGER_TYPES):
        return _number
    return _text


CHECKS = {column: _check_for(column) for column in INPUTS}
DTYPES = {column: types[0] for column, types in COLUMN_TYPES.items() if column in INPUTS}


def rows_from_split(payload: Any) -> np.ndarray:
    """MLflow's `dataframe_split` -> rows in INPUTS order, checked per request so a bad request fails alone.

    Plain Python per request, pandas once per batch. An object array rather than a DataFrame, because
    BentoML 1.4 cannot batch DataFrame inputs.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ValueError('expected {"columns": [...], "data": [[...], ...]} (MLflow dataframe_split)')
    if not payload["data"]:
        raise ValueError("data holds no rows: send at least one")
    columns = payload.get("columns")
    if not isinstance(columns, list) or sorted(map(str, columns)) != sorted(INPUTS):
        raise ValueError(f"columns must be exactly {INPUTS}, got {columns}")
    order = [columns.index(name) for name in INPUTS]
    rows = np.empty((len(payload["data"]), len(INPUTS)), dtype=object)
    for index, row in enumerate(payload["data"]):
        if not isinstance(row, list) or len(row) != len(INPUTS):
            raise ValueError(f"row {index} must be a list of {len(INPUTS)} values")
        try:
            rows[index] = [CHECKS[name](row[at]) for name, at in zip(INPUTS, order, strict=True)]
        except ValueError as error:
            raise ValueError(f"row {index}: {error}") from None
    return rows


def rows_for_version(version: str, payload: Any) -> np.ndarray:
    """`rows_from_split`, then, for a per-scenario version, refuse rows naming a scenario it has no model for:
    checked per request, so one such row fails its own request and never a batch it would have joined."""
    rows = rows_from_split(payload)
    known = KNOWN_SCENARIOS.get(version)
    if known is not None:
        names = {scenario_name(row[SCENARIO_AT[0]], row[SCENARIO_AT[1]]) for row in rows}
        unknown = sorted(names - known)
        if unknown:
            raise ValueError(
                f"no model for scenario {', '.join(unknown[:5])} in version {version}: it serves"
                f" {len(known)} scenarios (STORE:CATEGORY), never another scenario's forecast"
            )
    return rows


def frame_of(rows: np.ndarray) -> pd.DataFrame:
    """Checked rows (of one or many requests) as the frame the model was trained on, column types included."""
    return pd.DataFrame(rows, columns=INPUTS).astype(DTYPES)


def load_model(folder: Path) -> Any:
    """An exported MLflow scikit-learn model, unpickled directly: the server never imports MLflow."""
    import cloudpickle
    import yaml

    flavour = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
    if flavour.get("serialization_format") not in ("cloudpickle", "pickle"):
        raise ValueError(f"{folder}: serialization {flavour.get('serialization_format')!r} is not supported")
    with (folder / flavour["pickled_model"]).open("rb") as pickled:
        return cloudpickle.load(pickled)  # nosec B301 # our own registry's model, exported by serve.py/image.py


# {"predictions": [...]}; the content type is stated so BentoML does not rebuild a JSON schema per response
Predictions = Annotated[pd.DataFrame, DataframeSchema(orient="columns"), ContentType("application/json")]


class _Scoring:
    """Loads every listed version once at start-up (/readyz answers after that), then scores batches."""

    def __init__(self) -> None:
        for version in VERSIONS:
            parse_version(version, "MODEL_VERSIONS")  # digits only: a version names a folder under MODEL_DIR
        missing = [v for v in VERSIONS if not (MODEL_DIR / v / "MLmodel").is_file()]
        if missing:
            raise RuntimeError(f"no exported model for version(s) {missing} under {MODEL_DIR}")
        self.models = {version: load_model(MODEL_DIR / version) for version in VERSIONS}
        for version, model in self.models.items():
            if isinstance(model, ScenarioModels):
                KNOWN_SCENARIOS[version] = frozenset(model.scenarios)

    def predict(self, version: str, rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"predictions": self.models[version].predict(frame_of(rows))})


def _endpoint(version: str, route: str) -> Any:
    """One batchable endpoint per version: a batch never mixes versions."""

    def invocations(self: _Scoring, dataframe_split: np.ndarray) -> Predictions:
        return self.predict(version, dataframe_split)

    # Each version checks its own requests (its scenarios), so its input type is made here.
    invocations.__annotations__["dataframe_split"] = Annotated[
        np.ndarray, BeforeValidator(partial(rows_for_version, version))
    ]

    return bentoml.api(
        invocations,
        route=route,
        batchable=True,
        max_batch_size=BATCH_MAX_ROWS,
        max_latency_ms=BATCH_MAX_LATENCY_MS,
    )


Scoring = bentoml.service(
    type(
        "Scoring",
        (_Scoring,),
        {
            "invocations": _endpoint(VERSIONS[0], "/invocations"),
            **{f"invocations_v{v}": _endpoint(v, f"/v{v}/invocations") for v in VERSIONS if v},
        },
    ),
    name="scoring",
    workers=1,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},  # an access line per request costs more CPU than the prediction
    tracing={"excluded_urls": "invocations"},  # no tracing span per scoring request: ~25% more requests/s
)
