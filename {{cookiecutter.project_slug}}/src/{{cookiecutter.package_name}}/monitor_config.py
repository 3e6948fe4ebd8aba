"""What monitoring watches and when it calls a breach: config/monitor.toml, read once, checked on read.

Standard library only: `make forecast` reads the horizon from here without paying for monitoring's imports.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.inputs import InputError

MONITOR_FILE = Path("config/monitor.toml")


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds, windows and watched features (config/monitor.toml)."""

    horizon_weeks: int
    window_weeks: int
    reference_weeks: int
    features: tuple[str, ...]
    max_drifted_features: int
    max_wape_decay: float
    drift_method: str
    drift_threshold: float

    @classmethod
    def from_toml(cls, path: Path = MONITOR_FILE) -> MonitorConfig:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise InputError(f"{path}: cannot be read ({error}); restore it from the template") from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path = MONITOR_FILE) -> MonitorConfig:
        features = raw.get("features")
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise InputError(f'{path}: features must be a non-empty list of column names, e.g. ["price"]')
        return cls(
            horizon_weeks=_count(raw, "horizon_weeks", path, minimum=1),
            window_weeks=_count(raw, "window_weeks", path, minimum=1),
            reference_weeks=_count(raw, "reference_weeks", path, minimum=1),
            features=tuple(features),
            max_drifted_features=_count(raw, "max_drifted_features", path, minimum=0),
            max_wape_decay=_share(raw, "max_wape_decay", path),
            drift_method=_name(raw, "drift_method", path),
            drift_threshold=_share(raw, "drift_threshold", path),
        )


def _count(raw: dict[str, Any], key: str, path: Path, minimum: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{path}: {key} must be a whole number of at least {minimum}, got {value!r}")
    return value


def _share(raw: dict[str, Any], key: str, path: Path) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InputError(f"{path}: {key} must be a number of at least 0, got {value!r}")
    return float(value)


def _name(raw: dict[str, Any], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(
            f'{path}: {key} must name an Evidently drift method, e.g. "wasserstein", got {value!r}'
        )
    return value.strip()
