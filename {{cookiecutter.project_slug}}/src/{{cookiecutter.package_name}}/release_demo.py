"""The whole local release flow in one command, with the gates doing their job.

data -> data gate -> train v1 -> back-test -> staging -> production -> train v2 from a deliberately worse
config -> back-test fails -> promotion refused -> train v3 -> back-test -> staging -> production ->
rollback to v1. Every step calls the same entry function as its `make` target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from {{ cookiecutter.package_name }} import gitops, registry
from {{ cookiecutter.package_name }}.backtest import run_backtest
from {{ cookiecutter.package_name }}.data import generate_data
from {{ cookiecutter.package_name }}.fitting import TrainConfig
from {{ cookiecutter.package_name }}.promote import promote, rollback
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.train import DEFAULT_CONFIG, train
from {{ cookiecutter.package_name }}.validation import validate_data

WORSE_CONFIG = Path("config/train-worse.toml")
# Demo reviewers: in CI the approval gate supplies the real identity.
STAGING_APPROVER = "alice.reviewer"
PRODUCTION_APPROVER = "bob.release-manager"


@dataclass(frozen=True)
class Outcome:
    step: str
    expected_ok: bool
    exit_code: int
    seconds: float

    @property
    def as_expected(self) -> bool:
        return (self.exit_code == 0) == self.expected_ok


def summary_table(outcomes: list[Outcome], production: str) -> str:
    lines = [f"{'step':<44} {'expected':<9} {'result':<9} {'seconds':>7}  ok", "-" * 78]
    for o in outcomes:
        expected = "pass" if o.expected_ok else "refuse"
        result = "pass" if o.exit_code == 0 else "refused"
        lines.append(
            f"{o.step:<44} {expected:<9} {result:<9} {o.seconds:>7.1f}  {'yes' if o.as_expected else 'NO'}"
        )
    lines.append("-" * 78)
    lines.append(f"production now runs version {production}; see `git log --oneline deploy/`")
    return "\n".join(lines)


def run_release_demo(settings: Settings) -> int:
    """Entry point of `make release-demo`: exit 0 only when every gate behaved as expected."""
    gitops.initialise_repository(Path.cwd())
    client = registry.connect(settings)
    outcomes: list[Outcome] = []

    def step(name: str, action: Callable[[], int], expected_ok: bool = True) -> None:
        print(f"\n=== {name}")
        started = time.monotonic()
        outcomes.append(Outcome(name, expected_ok, action(), time.monotonic() - started))

    def newest() -> str:
        latest = registry.latest_version(client, settings.model_name)
        return str(latest.version) if latest else "none"

    def train_step(config: Path = DEFAULT_CONFIG, purpose: str = "") -> str:
        """Train, then name the step by the version it registered: a second demo run trains v4, not v1."""
        step(f"train {purpose}".strip(), lambda: train(settings, config))
        version = newest()
        if outcomes[-1].exit_code == 0:
            outcomes[-1] = replace(outcomes[-1], step=f"train v{version} {purpose}".strip())
        return version

    step("generate data", lambda: generate_data(settings))
    min_weeks = TrainConfig.from_toml(DEFAULT_CONFIG).min_series_weeks
    step("data gate", lambda: validate_data(settings, min_weeks))
    first = train_step()
    step(f"back-test v{first} (no champion yet)", lambda: run_backtest(settings, first))
    step(f"promote v{first} to staging", lambda: promote(settings, first, "staging", STAGING_APPROVER))
    step(
        f"promote v{first} to production", lambda: promote(settings, first, "production", PRODUCTION_APPROVER)
    )
    worse = train_step(WORSE_CONFIG, "from a deliberately worse config")
    step(f"back-test v{worse} vs champion v{first}", lambda: run_backtest(settings, worse), expected_ok=False)
    step(f"promote v{worse} to staging", lambda: promote(settings, worse, "staging", STAGING_APPROVER), False)
    third = train_step()
    step(f"back-test v{third} vs champion v{first}", lambda: run_backtest(settings, third))
    step(f"promote v{third} to staging", lambda: promote(settings, third, "staging", STAGING_APPROVER))
    step(
        f"promote v{third} to production", lambda: promote(settings, third, "production", PRODUCTION_APPROVER)
    )
    step("roll production back", lambda: rollback(settings, "production", PRODUCTION_APPROVER))

    production = registry.running_in(client, settings.model_name, "production")
    print("\n" + summary_table(outcomes, production or "nothing"))
    return 0 if all(o.as_expected for o in outcomes) else 1
