"""Release commands start fast: their modules import no data, modelling or plotting library.

CI and reviewers run `promote`, `rollback`, `lineage`, `versions`, `evidence`, `candidate` and `approver` many
times per release; each heavy import costs seconds on a busy agent. MLflow itself is imported only when a
command first talks to the registry (`registry.connect`). The back-test, which also runs in the serving image,
needs pandas for its history but no modelling, plotting or data-validation library.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

MODELLING = ("sklearn", "scipy", "matplotlib", "great_expectations", "bentoml")
HEAVY = ("mlflow", "pandas", "numpy", "sqlalchemy", *MODELLING)
LIGHT_MODULES = ("cli", "promote", "lineage", "evidence", "registry", "ci", "gitops", "inputs", "serve")


def heavy_imports_of(module: str, heavy: tuple[str, ...]) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after importing one of the package's modules."""
    probe = (
        f"import sys, {{ cookiecutter.package_name }}.{module}; "
        f"print(' '.join(sorted(name for name in {heavy!r} if name in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_a_release_command_module_imports_nothing_heavy(module):
    assert heavy_imports_of(module, HEAVY) == []


def test_the_back_test_imports_no_modelling_plotting_or_validation_library():
    assert heavy_imports_of("backtest", MODELLING) == []
