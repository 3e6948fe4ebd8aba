"""Release commands start fast: their modules import no data, modelling or plotting library.

CI and reviewers run `promote`, `rollback`, `lineage`, `versions`, `evidence`, `candidate` and `approver` many
times per release; each heavy import costs seconds on a busy agent. MLflow itself is imported only when a
command first talks to the registry (`registry.connect`).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("mlflow", "pandas", "numpy", "scipy", "sklearn", "matplotlib", "great_expectations", "sqlalchemy")
LIGHT_MODULES = ("cli", "promote", "lineage", "evidence", "registry", "ci", "gitops", "inputs")


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_a_release_command_module_imports_nothing_heavy(module):
    # when the module is imported in a fresh interpreter
    probe = (
        f"import sys, {{ cookiecutter.package_name }}.{module}; "
        f"print(' '.join(sorted(name for name in {HEAVY!r} if name in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # then none of the heavy libraries came with it
    assert result.stdout.strip() == ""
