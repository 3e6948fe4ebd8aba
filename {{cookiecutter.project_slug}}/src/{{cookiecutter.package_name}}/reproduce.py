"""Reproduce a version: retrain from its recorded snapshot and params, compare with what was registered."""

from __future__ import annotations

import math

import numpy as np

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.data import TARGET
from {{ cookiecutter.package_name }}.fitting import TrainConfig, fit_and_evaluate
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
    result = fit_and_evaluate(frame, config)

    registered = mlflow.sklearn.load_model(registry.model_uri(settings.model_name, version))
    registered_predictions = registered.predict(result.test.drop(columns=TARGET))
    predictions_match = bool(np.allclose(registered_predictions, result.predictions, rtol=0, atol=TOLERANCE))
    rows = [
        (
            name,
            run.data.metrics.get(name, math.nan),
            value,
            math.isclose(run.data.metrics.get(name, math.nan), value, abs_tol=TOLERANCE),
        )
        for name, value in result.metrics.items()
    ]
    snapshot_id = model_version.tags["data_fingerprint"][:12]
    print(f"Reproducing {settings.model_name} version {version} from data snapshot {snapshot_id}")
    print(f"  {'metric':<8} {'registered':>14} {'reproduced':>14}  match")
    for name, recorded, reproduced, same in rows:
        print(f"  {name:<8} {recorded:>14.6f} {reproduced:>14.6f}  {'yes' if same else 'NO'}")
    print(f"  predictions on {len(result.test)} held-out rows match: {'yes' if predictions_match else 'NO'}")
    reproduced_ok = predictions_match and all(same for *_, same in rows)
    print(
        "Reproduced." if reproduced_ok else "NOT reproduced: the registered version differs from a retrain."
    )
    return 0 if reproduced_ok else 1
