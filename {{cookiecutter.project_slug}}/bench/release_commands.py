"""Benchmark: wall seconds of the release commands a pipeline and a reviewer run many times per release.

Run: `make bench-release` (or `python -m bench.release_commands [repeats]`, default 3). Runs the release demo
in a temp copy of the project (its own git repository, store and data); then, per round, trains and back-tests
a new version and times each command as a fresh process, as CI starts it: a promotion, a refused promotion, a
rollback, lineage and evidence. Prints the median of the rounds per command, and last:
`release promote_s=A promote_refused_s=B rollback_s=C lineage_s=D evidence_s=E`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess  # nosec B404 # this project's own CLI, fixed argument lists, no shell
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package_name }}"
REVIEWER = "carol.reviewer"  # neither the demo's trainer nor its approvers' names matter to these gates


def cli(folder: Path, command: str, **values: str) -> tuple[float, int, str]:
    """Run one CLI command in a fresh interpreter; its wall seconds, exit code and last error line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **values}
    started = time.perf_counter()
    completed = subprocess.run(  # nosec B603 # this interpreter running this package, no shell
        [sys.executable, "-m", PACKAGE, command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = completed.stderr.strip().splitlines()
    return time.perf_counter() - started, completed.returncode, errors[-1] if errors else ""


def commands(version: str) -> dict[str, tuple[str, dict[str, str]]]:
    """What each round times, for its newly trained version: each promotion and rollback moves a real pin."""
    return {
        "promote": ("promote", {"VERSION": version, "ENV": "staging", "APPROVER": REVIEWER}),
        "promote_refused": ("promote", {"VERSION": "2", "ENV": "staging", "APPROVER": REVIEWER}),
        "rollback": ("rollback", {"ENV": "staging", "APPROVER": REVIEWER}),
        "lineage": ("lineage", {"VERSION": version}),
        "evidence": ("evidence", {"VERSION": version}),
    }


def main(repeats: int = 3) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-release-") as temp:
        folder = Path(temp)
        for part in ("config", "deploy"):
            shutil.copytree(ROOT / part, folder / part)
        shutil.copy(ROOT / ".gitignore", folder)  # the store and data stay out of the commits it makes
        print("Running the release demo in a temp copy (about a minute)...", flush=True)
        seconds, code, error = cli(folder, "release-demo")
        if code != 0:
            print(f"bench-release: the release demo failed (exit {code}): {error}", file=sys.stderr)
            return 1
        print(f"release demo              {seconds:.1f} s", flush=True)
        timings: dict[str, list[float]] = {}
        for round_number in range(repeats):
            version = str(4 + round_number)  # the demo registered v1-v3; a version is promoted once
            for step in ("train", "backtest"):  # not timed: a fresh version to release
                _, code, error = cli(folder, step, VERSION=version)
                if code != 0:
                    print(f"bench-release: {step} of v{version} failed: {error}", file=sys.stderr)
                    return 1
            for name, (command, values) in commands(version).items():
                seconds, code, error = cli(folder, command, **values)
                expected = 1 if name == "promote_refused" else 0
                if code != expected:
                    print(
                        f"bench-release: {name} exited {code}, expected {expected}: {error}", file=sys.stderr
                    )
                    return 1
                timings.setdefault(name, []).append(seconds)
                print(f"{name:<25} {seconds:.2f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print("release " + " ".join(f"{name}_s={value:.2f}" for name, value in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(arg) for arg in sys.argv[1:2])))
