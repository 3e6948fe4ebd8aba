"""Reproduce a version: retrain from its recorded snapshot and params, compare with what was registered."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pandas as pd

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.data import TARGET
from {{ cookiecutter.package_name }}.evaluate import forecast_metrics
from {{ cookiecutter.package_name }}.fitting import TrainConfig, TrainingResult, fit_and_evaluate
from {{ cookiecutter.package_name }}.scenario_models import scenario_names
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.snapshot import snapshot_of_version
from {{ cookiecutter.package_name }}.train import CONFIG_ARTIFACT

TOLERANCE = 1e-9


def reproduce(settings: Settings, version: str) -> int:
    """Entry point of `reproduce`: exit 0 only when metrics and predictions both match."""
    import mlflow

    client = registry.connect(settings)
    model_version = registry.get_version(client, settings.model_name, version)
    run = client.get_run(model_version.run_id)
    frame = snapshot_of_version(model_version)
    config = TrainConfig.from_dict(
        mlflow.artifacts.load_dict(f"runs:/{model_version.run_id}/{CONFIG_ARTIFACT}")
    )
    table = registry.scenario_table(version, model_version.run_id, model_version.tags)
    if table is not None and not _own_scenarios(table, model_version.run_id):
        return _nothing_of_its_own(version)  # before refitting every scenario for nothing
    result = fit_and_evaluate(frame, config)
    test, fresh = result.test, result.predictions
    registered = mlflow.sklearn.load_model(registry.model_uri(settings.model_name, version))
    carried = np.zeros(len(test), dtype=bool)
    if table is not None:
        test, fresh, carried = _as_composed(result, table, model_version.run_id)
    own = ~carried  # rows whose scenario's model this version's own run fitted
    if not own.any():
        return _nothing_of_its_own(version)
    registered_predictions = registered.predict(test.drop(columns=TARGET))
    predictions_match = bool(np.allclose(registered_predictions[own], fresh[own], rtol=0, atol=TOLERANCE))
    reproduced = forecast_metrics(test[TARGET], np.where(carried, registered_predictions, fresh))
    rows = [
        (
            name,
            run.data.metrics.get(name, math.nan),
            value,
            math.isclose(run.data.metrics.get(name, math.nan), value, abs_tol=TOLERANCE),
        )
        for name, value in reproduced.items()
    ]
    snapshot_id = model_version.tags["data_fingerprint"][:12]
    print(f"Reproducing {settings.model_name} version {version} from data snapshot {snapshot_id}")
    print(f"  {'metric':<8} {'registered':>14} {'reproduced':>14}  match")
    for name, recorded, reproduced, same in rows:
        print(f"  {name:<8} {recorded:>14.6f} {reproduced:>14.6f}  {'yes' if same else 'NO'}")
    print(f"  predictions on {int(own.sum())} held-out rows match: {'yes' if predictions_match else 'NO'}")
    if carried.any():
        print(
            f"  {int(carried.sum())} held-out rows are of scenarios whose production model this version kept:"
            " their models came from earlier runs (`make lineage SCENARIO=...` names each); reproduce those"
        )
    reproduced_ok = predictions_match and all(same for *_, same in rows)
    print(
        "Reproduced." if reproduced_ok else "NOT reproduced: the registered version differs from a retrain."
    )
    return 0 if reproduced_ok else 1


def _nothing_of_its_own(version: str) -> int:
    print(
        f"Nothing to reproduce in version {version}: every scenario it serves kept production's model,"
        " fitted by earlier runs; reproduce the versions `make lineage SCENARIO=...` names for them",
        file=sys.stderr,
    )
    return 1


def _own_scenarios(table: list[dict[str, Any]], run_id: str) -> set[str]:
    """The scenarios a per-scenario version serves with a model its own run fitted."""
    served = registry.served_scenarios(table) or set()
    return {row["scenario"] for row in table if row.get("run_id") == run_id and row["scenario"] in served}


def _as_composed(
    result: TrainingResult, table: list[dict[str, Any]], run_id: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A per-scenario version serves its own run's fits and models kept from production: the hold-out
    rows of the scenarios it serves, the refit's forecasts for them, and which rows' models came from
    other runs."""
    served = registry.served_scenarios(table) or set()
    own = _own_scenarios(table, run_id)
    names = scenario_names(result.test)
    keep = names.isin(served).to_numpy()
    carried = ~names[keep].isin(own).to_numpy()
    return result.test[keep].reset_index(drop=True), result.predictions[keep], carried
