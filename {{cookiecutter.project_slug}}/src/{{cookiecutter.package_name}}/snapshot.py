"""Data fingerprint and snapshot: the exact training input, addressed by its content hash.

A version records the fingerprint and the snapshot's location, so it can be traced and rebuilt even after
the source data changes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

SNAPSHOT_ARTIFACT_DIR = "data"  # the snapshot travels with the run, so any machine can read it back


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 over column names, dtypes and row contents; independent of file format and row index."""
    digest = hashlib.sha256()
    digest.update("|".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def save_snapshot(frame: pd.DataFrame, snapshot_dir: Path, data_fingerprint: str) -> Path:
    """Write the frame once under its fingerprint; an existing snapshot is the same data and is kept."""
    path = snapshot_dir / f"{data_fingerprint}.parquet"
    if not path.exists():
        snapshot_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        frame.to_parquet(partial, index=False)
        partial.replace(path)
    return path


def load_snapshot(path: Path, data_fingerprint: str) -> pd.DataFrame:
    """Read a snapshot back and prove it is the data the fingerprint names."""
    frame = pd.read_parquet(path)
    if fingerprint(frame) != data_fingerprint:
        raise ValueError(
            f"snapshot {path} does not match fingerprint {data_fingerprint[:12]}: it was altered"
        )
    return frame


def snapshot_of_version(model_version: Any) -> pd.DataFrame:
    """The training data of a registry version: the local snapshot, or the copy logged with its run."""
    import mlflow

    path = Path(model_version.tags["data_snapshot"])
    if not path.exists():
        artifact = f"{SNAPSHOT_ARTIFACT_DIR}/{path.name}"
        path = Path(mlflow.artifacts.download_artifacts(run_id=model_version.run_id, artifact_path=artifact))
    return load_snapshot(path, model_version.tags["data_fingerprint"])
