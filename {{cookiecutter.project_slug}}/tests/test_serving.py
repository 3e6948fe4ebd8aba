"""The scoring service's request contract: MLflow's `dataframe_split` in, one prediction per row out.

What a client sends is checked per request, so one bad request is refused alone (400, naming the row or
column) and never poisons the batch it would have joined. The server itself runs in the template's tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package_name }}.contract import TARGET
from {{ cookiecutter.package_name }}.features import build_pipeline
from {{ cookiecutter.package_name }}.serve import dataframe_split
from {{ cookiecutter.package_name }}.serving import INPUTS, frame_of, load_model, rows_from_split


@pytest.fixture(scope="module")
def fitted(sales: pd.DataFrame):
    pipeline = build_pipeline({"max_iter": 20}, seed=7)
    return pipeline.fit(sales.drop(columns=TARGET), sales[TARGET])


def test_rows_sent_in_any_column_order_score_like_the_frame_in_process(sales, fitted):
    rows = sales.drop(columns=TARGET).tail(30)
    shuffled = rows[list(reversed(INPUTS))]
    served = fitted.predict(frame_of(rows_from_split(dataframe_split(shuffled))))
    assert served == pytest.approx(fitted.predict(rows), rel=1e-12)


def test_rows_of_several_requests_batched_together_score_as_each_alone(sales, fitted):
    rows = sales.drop(columns=TARGET).tail(6)
    requests = [rows_from_split(dataframe_split(rows.iloc[[index]])) for index in range(len(rows))]
    batched = fitted.predict(frame_of(np.concatenate(requests)))
    alone = [fitted.predict(frame_of(request))[0] for request in requests]
    assert batched == pytest.approx(alone, rel=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(columns=p["columns"][:-1]), "columns must be exactly"),
        (lambda p: p.update(columns=[*p["columns"], "units_sold"]), "columns must be exactly"),
        (lambda p: p["data"][0].__setitem__(0, 7), "row 0: expected a string, got 7"),
        (lambda p: p["data"][0].__setitem__(3, "1.5"), "row 0: expected a number, got '1.5'"),
        (lambda p: p["data"][0].__setitem__(5, True), "row 0: expected a number, got True"),
        (lambda p: p["data"][0].__setitem__(2, "last week"), "row 0: Invalid isoformat string"),
        (lambda p: p["data"][0].pop(), "row 0 must be a list of 7 values"),
        (lambda p: p.pop("data"), "MLflow dataframe_split"),
        (lambda p: p.update(data=[]), "data holds no rows"),
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong(sales, change, message):
    payload = dataframe_split(sales.drop(columns=TARGET).tail(1))
    change(payload)
    with pytest.raises(ValueError, match=message):
        rows_from_split(payload)


def test_the_service_loads_an_exported_mlflow_model_without_mlflow(tmp_path: Path, sales, fitted):
    import mlflow.sklearn

    mlflow.sklearn.save_model(fitted, str(tmp_path / "3"), serialization_format="cloudpickle")
    rows = sales.drop(columns=TARGET).tail(5)
    assert load_model(tmp_path / "3").predict(rows) == pytest.approx(fitted.predict(rows), rel=1e-12)


@pytest.mark.parametrize("versions", ["", "../../etc", "3,", "3 ,x"])
def test_the_service_refuses_to_start_on_versions_that_are_not_version_numbers(
    versions, tmp_path, monkeypatch
):
    from {{ cookiecutter.package_name }} import serving
    from {{ cookiecutter.package_name }}.registry import RegistryError

    monkeypatch.setattr(serving, "VERSIONS", [v.strip() for v in versions.split(",")])
    monkeypatch.setattr(serving, "MODEL_DIR", tmp_path)
    with pytest.raises(RegistryError, match="MODEL_VERSIONS"):
        serving._Scoring()
