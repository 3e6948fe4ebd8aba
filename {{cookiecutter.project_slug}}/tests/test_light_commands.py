"""Release commands start fast: their modules import no data, modelling, plotting or monitoring library.

CI and reviewers run `promote`, `rollback`, `lineage`, `versions`, `evidence`, `candidate` and `approver` many
times per release; each heavy import costs seconds on a busy agent. MLflow itself is imported only when a
command first talks to the registry (`registry.connect`). The back-test, which also runs in the serving image,
needs pandas for its history but no modelling, plotting or data-validation library. Evidently is the
`monitor` extra: only `make monitor` loads it, when it runs, so serving (whose image does not carry it) and
training never depend on it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

MODELLING = ("sklearn", "scipy", "matplotlib", "great_expectations", "bentoml")
MONITORING = ("evidently",)
HEAVY = ("mlflow", "pandas", "numpy", "sqlalchemy", *MODELLING, *MONITORING)
LIGHT_MODULES = (
    "cli", "promote", "lineage", "evidence", "registry", "ci", "gitops", "inputs", "serve", "promotion_gate",
    "gate_server", "registry_events", "registry_permissions", "adopt_releases",
)  # fmt: skip
# What the serving image (scoring, back-test, forecast CronJob) and `make train` import (`serve` is light).
SERVING_AND_TRAINING = ("serving", "backtest", "forecast", "train", "validation", "features", "reproduce")


def heavy_imports_of(heavy: tuple[str, ...], *modules: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after importing some of the package's modules."""
    imports = ", ".join(f"{{ cookiecutter.package_name }}.{module}" for module in modules)
    probe = (
        f"import sys, {imports}; print(' '.join(sorted(name for name in {heavy!r} if name in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_a_release_command_module_imports_nothing_heavy(module):
    assert heavy_imports_of(HEAVY, module) == []


def test_the_back_test_imports_no_modelling_plotting_or_validation_library():
    assert heavy_imports_of(MODELLING, "backtest") == []


def test_serving_and_training_never_import_evidently():
    assert heavy_imports_of(MONITORING, *SERVING_AND_TRAINING) == []


def test_monitoring_imports_evidently_and_mlflow_only_when_it_runs():
    assert heavy_imports_of(("mlflow", *MODELLING, *MONITORING), "monitoring") == []
