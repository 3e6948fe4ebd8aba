"""The whole local release flow in one command, with the gates doing their job.

data -> data gate -> train v1 -> back-test -> staging -> production -> train v2 from a deliberately worse
config -> back-test fails -> promotion refused -> train v3 -> back-test -> staging -> production ->
rollback to v1. Every step calls the same entry function as its `make` target.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 # git only, fixed argument lists, no shell
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from {{ cookiecutter.package_name }} import gitops, registry
from {{ cookiecutter.package_name }}.backtest import run_backtest
from {{ cookiecutter.package_name }}.data import generate_data
from {{ cookiecutter.package_name }}.promote import promote, rollback
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.train import DEFAULT_CONFIG, TrainConfig, train
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


def ensure_git_repo(root: Path) -> None:
    """Production only takes versions trained from a commit: give a fresh render its first one."""
    if gitops.is_git_repo(root):
        return
    git = shutil.which("git") or "git"
    identity = ["-c", "user.name=release-demo", "-c", "user.email=release-demo@localhost"]
    for args in (
        ["init", "--quiet"],
        ["add", "--all"],
        [*identity, "commit", "--quiet", "-m", "Initial commit"],
    ):
        subprocess.run([git, "-C", str(root), *args], check=True)  # nosec B603 # fixed git arguments
    print(f"Initialised a git repository in {root} so promotions can commit their manifest pins.")


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
    ensure_git_repo(Path.cwd())
    client = registry.connect(settings)
    outcomes: list[Outcome] = []

    def step(name: str, action: Callable[[], int], expected_ok: bool = True) -> None:
        print(f"\n=== {name}")
        started = time.monotonic()
        outcomes.append(Outcome(name, expected_ok, action(), time.monotonic() - started))

    def newest() -> str:
        latest = registry.latest_version(client, settings.model_name)
        return str(latest.version) if latest else "none"

    step("generate data", lambda: generate_data(settings))
    min_weeks = TrainConfig.from_toml(DEFAULT_CONFIG).min_series_weeks
    step("data gate", lambda: validate_data(settings, min_weeks))
    step("train v1", lambda: train(settings))
    first = newest()
    step(f"back-test v{first} (no champion yet)", lambda: run_backtest(settings, first))
    step(f"promote v{first} to staging", lambda: promote(settings, first, "staging", STAGING_APPROVER))
    step(
        f"promote v{first} to production", lambda: promote(settings, first, "production", PRODUCTION_APPROVER)
    )
    step("train v2 from a deliberately worse config", lambda: train(settings, WORSE_CONFIG))
    worse = newest()
    step(f"back-test v{worse} vs champion v{first}", lambda: run_backtest(settings, worse), expected_ok=False)
    step(f"promote v{worse} to staging", lambda: promote(settings, worse, "staging", STAGING_APPROVER), False)
    step("train v3", lambda: train(settings))
    third = newest()
    step(f"back-test v{third} vs champion v{first}", lambda: run_backtest(settings, third))
    step(f"promote v{third} to staging", lambda: promote(settings, third, "staging", STAGING_APPROVER))
    step(
        f"promote v{third} to production", lambda: promote(settings, third, "production", PRODUCTION_APPROVER)
    )
    step("roll production back", lambda: rollback(settings, "production", PRODUCTION_APPROVER))

    production = registry.alias_holder(client, settings.model_name, "production")
    print("\n" + summary_table(outcomes, str(production.version) if production else "nothing"))
    return 0 if all(o.as_expected for o in outcomes) else 1
