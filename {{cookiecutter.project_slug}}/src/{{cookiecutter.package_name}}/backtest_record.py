"""The back-test's record: the policy that decides, each window's scores, the verdict, and its plot.

`backtest.py` fills a `BacktestRecord` and logs it as JSON beside the version's `backtest_*` tags;
`evidence.py` reads it back to show a reviewer what decided the gate. Whoever can write to the registry can
write this file, so it is parsed as untrusted input and the plot escapes every value it draws. Standard
library only: reading or drawing a record never pays for pandas or matplotlib.
"""

from __future__ import annotations

import html
import json
import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }} import inputs, registry

POLICY_FILE = Path("config/backtest.toml")
ARTIFACT_DIR = "backtest"  # on the version's run
METRICS = ("wape", "mae", "bias")
# Policy keys renamed by a template release: old key -> (new key, release). Records already in a registry
# keep the old key and are read through it; config/backtest.toml must say the new one (copier renames it).
RENAMED_POLICY_KEYS = {"max_regression": ("max_wape_regression", "1.1.0")}


@dataclass(frozen=True)
class Policy:
    """When a back-tested candidate may go on (config/backtest.toml)."""

    windows: int
    window_weeks: int
    wape_floor: float
    max_wape_regression: float
    max_failed_backtest_scenarios: int = (
        0  # per-scenario versions: scenarios that may fail before the version does
    )
    scenario_wape_floor: float | None = None  # per scenario (one noisy series); None: `wape_floor`

    @classmethod
    def from_toml(cls, path: Path = POLICY_FILE) -> Policy:
        """The team's policy; an old key is refused, not guessed at, so the file is fixed once and for all."""
        raw = tomllib.loads(path.read_text())
        for old, (new, release) in RENAMED_POLICY_KEYS.items():
            if old in raw:
                raise inputs.InputError(
                    f"{path}: {old} was renamed {new} in template {release}: rename the key"
                    " (copier update does it for you)"
                )
        try:
            return cls.from_dict(raw)
        except KeyError as error:
            raise inputs.InputError(
                f"{path}: {error.args[0]} is missing: add it (see the template's)"
            ) from None
        except (TypeError, ValueError, OverflowError) as error:
            raise inputs.InputError(f"{path}: {error}: fix the value") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Policy:
        """From the TOML file or a record written by any template release (renamed keys read as new)."""
        raw = _with_current_keys(raw)
        return cls(
            int(raw["windows"]),
            int(raw["window_weeks"]),
            _number(raw["wape_floor"]),
            _number(raw["max_wape_regression"]),
            _count(
                raw.get("max_failed_backtest_scenarios", 0)
            ),  # records from before per-scenario releases lack them
            None if raw.get("scenario_wape_floor") is None else _number(raw["scenario_wape_floor"]),
        )

    @property
    def scenario_floor(self) -> float:
        """The bar one scenario's model must meet to be served."""
        return self.wape_floor if self.scenario_wape_floor is None else self.scenario_wape_floor

    def describe(self) -> str:
        return (
            f"mean WAPE at most {self.wape_floor:g} (the floor) and at most {self.max_wape_regression:g}"
            f" worse than the champion's, over {self.windows} windows of {self.window_weeks} weeks"
            " (newest last)"
        )


@dataclass(frozen=True)
class WindowScore:
    """One replayed window: its first week, and candidate and champion metrics (wape, mae, bias)."""

    window: int
    start: str
    candidate: dict[str, float]
    champion: dict[str, float] | None


WORST_SCENARIOS = 5  # the record keeps these many; the whole table is its own artefact


@dataclass(frozen=True)
class ScenarioVerdict:
    """One scenario of a per-scenario version against production: mean WAPE of each over the windows (None
    where one has no model for it) and the outcome, with why."""

    scenario: str
    outcome: str  # one of registry.SCENARIO_OUTCOMES
    wape: float | None
    champion_wape: float | None
    reason: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScenarioVerdict:
        if raw["outcome"] not in registry.SCENARIO_OUTCOMES:
            raise ValueError(f"unknown scenario outcome {raw['outcome']!r}")
        return cls(
            str(raw["scenario"]),
            str(raw["outcome"]),
            None if raw["wape"] is None else _number(raw["wape"]),
            None if raw["champion_wape"] is None else _number(raw["champion_wape"]),
            str(raw["reason"]),
        )


@dataclass(frozen=True)
class ScenarioSummary:
    """What the back-test of a per-scenario version found per scenario: counts, and the worst of them."""

    counts: dict[str, int]  # outcome -> scenarios
    worst: list[ScenarioVerdict]  # failed first, then by WAPE, at most WORST_SCENARIOS

    @classmethod
    def of(cls, verdicts: list[ScenarioVerdict]) -> ScenarioSummary:
        counts = {
            outcome: sum(v.outcome == outcome for v in verdicts) for outcome in registry.SCENARIO_OUTCOMES
        }
        ranked = sorted(verdicts, key=lambda v: (v.outcome != "failed", -(v.wape or 0.0), v.scenario))
        return cls(counts, [v for v in ranked if v.outcome != "untrained"][:WORST_SCENARIOS])

    def describe(self) -> str:
        """'12 scenarios: 8 improved, 0 new, 4 kept, 0 failed, 0 untrained'."""
        shown = ", ".join(
            f"{self.counts.get(outcome, 0)} {outcome}" for outcome in registry.SCENARIO_OUTCOMES
        )
        return f"{sum(self.counts.values())} scenarios: {shown}"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScenarioSummary:
        counts = {outcome: _count(raw["counts"][outcome]) for outcome in registry.SCENARIO_OUTCOMES}
        return cls(counts, [ScenarioVerdict.from_dict(row) for row in raw["worst"][:WORST_SCENARIOS]])


@dataclass(frozen=True)
class BacktestRecord:
    """What a back-test decided and on what; `at` is also the version's `backtest_at` tag, pairing the two."""

    version: str
    champion_version: str | None
    policy: Policy
    windows: list[WindowScore]
    passed: bool
    reason: str
    candidate_wape: float
    champion_wape: float | None
    at: str
    scenarios: ScenarioSummary | None = None  # per-scenario versions only

    @staticmethod
    def file_stem(version: str) -> str:
        """Names the report, plot and record of a version's back-test, in reports/ and on its run."""
        return f"backtest-v{version}"

    @classmethod
    def artifact_path(cls, version: str) -> str:
        return f"{ARTIFACT_DIR}/{cls.file_stem(version)}.json"

    @classmethod
    def scenarios_artifact(cls, version: str) -> str:
        """Every scenario's verdict, beside the record (which keeps only the worst)."""
        return f"{ARTIFACT_DIR}/{cls.file_stem(version)}-scenarios.json"

    @property
    def verdict(self) -> str:
        return "PASSED" if self.passed else "FAILED"

    def champion_text(self) -> str:
        """'version 1: mean WAPE 0.0960 vs candidate 0.0950', or that there was none."""
        if self.champion_version is None:
            return f"none: first release (candidate mean WAPE {self.candidate_wape:.4f})"
        champion = "unknown" if self.champion_wape is None else f"{self.champion_wape:.4f}"
        return f"version {self.champion_version}: mean WAPE {champion} vs candidate {self.candidate_wape:.4f}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BacktestRecord:
        """Parse and check a record; ValueError on anything malformed."""
        try:
            raw = json.loads(text)
            champion, champion_wape = raw["champion_version"], raw["champion_wape"]
            return cls(
                version=registry.parse_version(str(raw["version"])),
                champion_version=None if champion is None else registry.parse_version(str(champion)),
                policy=Policy.from_dict(raw["policy"]),
                windows=[_window_score(window) for window in raw["windows"]],
                passed=raw["passed"] is True,
                reason=str(raw["reason"]),
                candidate_wape=_number(raw["candidate_wape"]),
                champion_wape=None if champion_wape is None else _number(champion_wape),
                at=str(raw["at"]),
                scenarios=None
                if raw.get("scenarios") is None
                else ScenarioSummary.from_dict(raw["scenarios"]),
            )
        except (KeyError, TypeError, AttributeError, OverflowError, registry.RegistryError) as error:
            raise ValueError(f"malformed back-test record: {error!r}") from error


def _with_current_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """Old records stay evidence for old versions: a renamed key counts as the new one, which wins if both."""
    renamed = {new: raw[old] for old, (new, _) in RENAMED_POLICY_KEYS.items() if old in raw}
    return {**renamed, **raw}


def _count(value: Any) -> int:
    """A whole number of scenarios, from a record anyone with registry write access could have written."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _number(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _scores(raw: dict[str, Any]) -> dict[str, float]:
    return {metric: _number(raw[metric]) for metric in METRICS}


def _window_score(raw: dict[str, Any]) -> WindowScore:
    champion = None if raw["champion"] is None else _scores(raw["champion"])
    return WindowScore(int(raw["window"]), str(raw["start"]), _scores(raw["candidate"]), champion)


# ---- the plot: hand-written SVG, so drawing needs no plotting library -----------------------------------

WIDTH, HEIGHT = 760, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 600, 64, 300  # the plotting area; the legend sits right of it
CANDIDATE, CHAMPION, FLOOR = "#1f5fbf", "#7a7a7a", "#c0392b"
# The champion is a wide translucent band under the candidate's narrow line: both show where they meet.
CANDIDATE_LINE = f'stroke="{CANDIDATE}" stroke-width="2.5"'
CHAMPION_LINE = f'stroke="{CHAMPION}" stroke-width="9" stroke-opacity="0.35" stroke-linejoin="round"'
FLOOR_LINE = f'stroke="{FLOOR}" stroke-width="2" stroke-dasharray="8 5"'


def _tick_step(highest: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten: about four gridlines up to `highest`."""
    rough = highest / 4
    power = 10 ** math.floor(math.log10(rough))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= rough)


def _text(x: float, y: float, text: str, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" {extra}>{html.escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, style: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" {style}/>'


def window_plot(record: BacktestRecord) -> str:
    """WAPE per window, candidate and champion, with the floor, the version and the verdict drawn in.

    Presentation attributes only, no CSS: the plot renders the same under a strict Content-Security-Policy.
    """
    candidate = [w.candidate["wape"] for w in record.windows]
    champion = [(i, w.champion["wape"]) for i, w in enumerate(record.windows) if w.champion is not None]
    floor = record.policy.wape_floor
    highest = max([*candidate, *(value for _, value in champion), floor]) * 1.1 or 1.0
    step = _tick_step(highest)
    ticks = [step * i for i in range(math.ceil(highest / step) + 1)]

    def x(index: int) -> float:
        return LEFT + (RIGHT - LEFT) * (index + 0.5) / max(len(candidate), 1)

    def y(value: float) -> float:
        return BOTTOM - (BOTTOM - TOP) * value / ticks[-1]

    title = f"Version {record.version}: back-test {record.verdict}"
    middle = (TOP + BOTTOM) / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}"'
        f' height="{HEIGHT}" role="img" aria-label="{html.escape(title)}" font-family="sans-serif"'
        ' font-size="12">',
        f"<title>{html.escape(title)}</title>",
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        _text(
            LEFT,
            24,
            title,
            f'font-size="16" font-weight="bold" fill="{CANDIDATE if record.passed else FLOOR}"',
        ),
        _text(LEFT, 44, f"Champion: {record.champion_text()}"),
        _text(18, middle, "WAPE", f'text-anchor="middle" transform="rotate(-90 18 {middle})"'),
        _text(
            (LEFT + RIGHT) / 2,
            BOTTOM + 52,
            "window and its first week, oldest to newest",
            'text-anchor="middle"',
        ),
    ]
    for tick in ticks:
        parts += [
            _line(LEFT, y(tick), RIGHT, y(tick), 'stroke="#e3e3e3"'),
            _text(LEFT - 8, y(tick) + 4, f"{tick:g}", 'text-anchor="end"'),
        ]
    for i, window in enumerate(record.windows):
        parts += [
            _text(x(i), BOTTOM + 18, str(window.window), 'text-anchor="middle"'),
            _text(x(i), BOTTOM + 32, window.start, 'text-anchor="middle" font-size="10" fill="#777777"'),
        ]
    parts.append(
        _line(LEFT, y(floor), RIGHT, y(floor), FLOOR_LINE)
    )  # named in the legend, clear of the points
    if champion:
        points = " ".join(f"{x(i):.1f},{y(value):.1f}" for i, value in champion)
        parts.append(f'<polyline points="{points}" fill="none" {CHAMPION_LINE}/>')
        parts += [
            f'<rect x="{x(i) - 6:.1f}" y="{y(value) - 6:.1f}" width="12" height="12" fill="none"'
            f' stroke="{CHAMPION}" stroke-width="2"/>'
            for i, value in champion
        ]
    points = " ".join(f"{x(i):.1f},{y(value):.1f}" for i, value in enumerate(candidate))
    parts.append(f'<polyline points="{points}" fill="none" {CANDIDATE_LINE}/>')
    parts += [
        f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="4" fill="{CANDIDATE}"/>'
        for i, value in enumerate(candidate)
    ]
    legend = [(f"candidate v{record.version}", CANDIDATE_LINE), (f"floor {floor:g}", FLOOR_LINE)]
    if champion:
        legend.insert(1, (f"champion v{record.champion_version}", CHAMPION_LINE))
    for row, (label, style) in enumerate(legend):
        top = TOP + 10 + 22 * row
        parts += [_line(RIGHT + 20, top, RIGHT + 48, top, style), _text(RIGHT + 56, top + 4, label)]
    return "\n".join([*parts, "</svg>"]) + "\n"
