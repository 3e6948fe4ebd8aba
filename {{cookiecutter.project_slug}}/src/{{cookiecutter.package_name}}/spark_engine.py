"""ENGINE=spark: the same per-scenario `fit` as the local engine, run by PySpark `groupBy().applyInPandas`.

Each scenario's rows reach `fit` with the columns and dtypes the local engine gives it (dates travel as
integers and every column is cast back inside the pandas UDF), so both engines compute the same data
fingerprints and metrics. Records come back pickled, one per scenario, keys and types exactly as `fit` made
them. The session is Spark Connect when SPARK_REMOTE is set, else a classic one on SPARK_MASTER (default
`local[*]`; under `spark-submit` its own master); it is stopped only if this module started it.

Executors run the driver's own code: the package is zipped and shipped with `addArtifacts(pyfile=True)`
(Connect and classic alike), so a cluster never runs an older copy. Its dependencies (pandas, numpy,
pyarrow, scikit-learn) must already be on the executors: docs/platform-team.md, "Per-scenario training on
Spark". PySpark is an optional extra (`pip install '.[spark]'`); nothing here imports it until a fit runs.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import pickle  # nosec B403 # records pickled by our own fit on our own executors, read back by this driver
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from {{ cookiecutter.package_name }}.contract import SERIES_COLUMNS
from {{ cookiecutter.package_name }}.inputs import InputError
from {{ cookiecutter.package_name }}.scenario_engines import Fit

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

GUIDE = 'docs/platform-team.md, "Per-scenario training on Spark"'
RECORD_SCHEMA = "record binary"  # one pickled record per scenario: no type is lost on the way back
SHIPPED_KEY = "spark.per_scenario_training.shipped"  # session conf: the package zips this session has
PARTITIONS_PER_CORE = 4  # several tasks per core even out scenarios of different sizes
# The JVM's INFO chatter is not this training's news; its warnings and errors still show.
LOG4J2_QUIET = """\
rootLogger.level = warn
logger.hadoop.name = org.apache.hadoop.util.NativeCodeLoader
logger.hadoop.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""
LOCAL_CONFIG = {
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",  # no web UI listening on every interface of a laptop or CI runner
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.connect.grpc.binding.address": "127.0.0.1",  # SPARK_REMOTE=local: its Connect server
}


class SparkUnavailable(InputError):
    """ENGINE=spark cannot run here (PySpark or Java missing); the message says what to install."""


def run_spark(frame: pd.DataFrame, fit: Fit) -> list[dict[str, Any]]:
    """One record per scenario (store x category), each from `fit` on that scenario's rows, run by Spark."""
    if frame.empty:
        return []
    dtypes = frame.dtypes.to_dict()

    def fit_group(rows: pd.DataFrame) -> pd.DataFrame:  # runs on the executors, once per scenario
        record = fit(restore_dtypes(rows, dtypes))
        return pd.DataFrame({"record": [pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)]})

    scenarios = frame.groupby(SERIES_COLUMNS).ngroups
    with spark_session() as spark:
        ship_package(spark)
        rows = spark.createDataFrame(spark_ready(frame))
        grouped = rows.repartition(partitions(spark, scenarios), *SERIES_COLUMNS).groupBy(*SERIES_COLUMNS)
        collected = grouped.applyInPandas(fit_group, RECORD_SCHEMA).collect()
    records = [pickle.loads(row["record"]) for row in collected]  # nosec B301 # pickled by fit_group above
    if len(records) != scenarios:  # never a silently missing (or invented) scenario
        raise RuntimeError(f"Spark returned {len(records)} scenario records for {scenarios} scenarios")
    return records


def spark_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its dates as integers (in their own unit): Spark's timestamps would shift them by
    the session's time zone, integers arrive as they left."""
    dates = [name for name, dtype in frame.dtypes.items() if pd.api.types.is_datetime64_any_dtype(dtype)]
    return frame.assign(**{name: _as_integers(frame[name]) for name in dates})


def _as_integers(dates: pd.Series) -> pd.Series:
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    return dates.astype("int64")


def restore_dtypes(rows: pd.DataFrame, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """The rows as the local engine hands them to `fit`: the original frame's columns, in order, with its
    dtypes (Arrow turns strings into objects and nullable integers into floats; dates come as integers)."""
    restored = {}
    for name, dtype in dtypes.items():
        column = rows[name]
        if isinstance(dtype, pd.DatetimeTZDtype):
            column = column.astype(f"datetime64[{dtype.unit}]").dt.tz_localize("UTC").dt.tz_convert(dtype.tz)
        elif column.dtype != dtype:
            column = column.astype(dtype)
        restored[name] = column
    return pd.DataFrame(restored)


def partitions(spark: SparkSession, scenarios: int) -> int:
    """Tasks to split the scenarios into: a few per core, never more than there are scenarios."""
    try:
        cores = spark.sparkContext.defaultParallelism
    except Exception:  # Spark Connect has no SparkContext: the server's shuffle width stands in for it
        cores = max(1, int(spark.conf.get("spark.sql.shuffle.partitions") or 1) // PARTITIONS_PER_CORE)
    return max(1, min(scenarios, cores * PARTITIONS_PER_CORE))


@contextmanager
def spark_session() -> Iterator[SparkSession]:
    """The caller's active session if there is one (left running), else a new one, stopped afterwards."""
    session_class = _pyspark_session_class()
    active = session_class.getActiveSession()
    if active is not None:
        yield active
        return
    with warnings.catch_warnings():  # SPARK_REMOTE=local: its server took the startup options already
        warnings.filterwarnings("ignore", message="Failed to set spark[.]", category=UserWarning)
        spark = session_builder(session_class, os.environ).getOrCreate()
    try:
        yield spark
    finally:
        spark.stop()


def check_ready(env: Mapping[str, str] = os.environ) -> None:
    """Refuse ENGINE=spark in one line before any work (data gate, fits) when PySpark, or the Java a local
    or classic session starts, is missing."""
    _pyspark_session_class()
    if _starts_a_jvm(env):
        _require_java(env)


def _starts_a_jvm(env: Mapping[str, str]) -> bool:
    """Only a remote Spark Connect server spares this process a JVM (SPARK_REMOTE=local starts one here)."""
    remote = env.get("SPARK_REMOTE", "")
    return not remote or remote.startswith("local")


def session_builder(session_class: type[SparkSession], env: Mapping[str, str]) -> SparkSession.Builder:
    """Spark Connect at SPARK_REMOTE; else classic at SPARK_MASTER, or `spark-submit`'s master, or local."""
    builder = session_class.builder.appName("per-scenario-training")
    remote = env.get("SPARK_REMOTE", "")
    if remote:
        builder = builder.remote(remote)
        master = remote if remote.startswith("local") else ""  # `local`: a Connect server in our own JVM
    else:
        master = env.get("SPARK_MASTER") or ("" if "PYSPARK_GATEWAY_PORT" in env else "local[*]")
        builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
        if master:
            builder = builder.master(master)
    if _starts_a_jvm(env):
        _require_java(env)
    if master.startswith("local"):
        builder = _on_this_machine(builder)
    return builder


def _on_this_machine(builder: SparkSession.Builder) -> SparkSession.Builder:
    """A session on this machine: Python workers are this interpreter, whatever `python3` is on PATH (make
    does not activate .venv); everything Spark serves listens on loopback only; its logs say only warnings."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    log_config = _scratch_folder() / "log4j2-quiet.properties"
    log_config.write_text(LOG4J2_QUIET)
    builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log_config}")
    for key, value in LOCAL_CONFIG.items():
        builder = builder.config(key, value)
    return builder


def ship_package(spark: SparkSession) -> None:
    """Send this package's code to the executors, once per session and code version (the zip is named by
    its content, so changed code never collides with an older copy)."""
    archive = package_zip(Path(__file__).resolve().parent, _scratch_folder())
    shipped = set((spark.conf.get(SHIPPED_KEY, "") or "").split(","))
    if archive.name not in shipped:
        spark.addArtifacts(str(archive), pyfile=True)
        spark.conf.set(SHIPPED_KEY, ",".join(sorted((shipped - {""}) | {archive.name})))


def package_zip(package: Path, folder: Path) -> Path:
    """The package's Python sources as a reproducible zip in `folder`: same code, same bytes, same name."""
    sources = sorted(path for path in package.rglob("*.py") if "__pycache__" not in path.parts)
    contents = {str(Path(package.name) / path.relative_to(package)): path.read_bytes() for path in sources}
    digest = hashlib.sha256()
    for name, data in contents.items():
        digest.update(name.encode() + b"\0" + data)
    archive = folder / f"{package.name}-{digest.hexdigest()[:16]}.zip"
    if not archive.exists():
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, data in contents.items():
                bundle.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return archive


@functools.cache
def _scratch_folder() -> Path:
    """Files Spark reads after we hand them over (executors fetch the zip when they join a session): in a
    folder only this process's user can write (no one swaps the code executors run), removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="spark-engine-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _pyspark_session_class() -> type[SparkSession]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            f"ENGINE=spark needs PySpark and Java 17: pip install '.[spark]' (see {GUIDE})"
        ) from None
    return SparkSession


def _require_java(env: Mapping[str, str]) -> None:
    """A local or classic session starts a JVM: refuse in one line when there is none to start."""
    java_home = env.get("JAVA_HOME", "")
    if (java_home and Path(java_home, "bin", "java").exists()) or shutil.which("java", path=env.get("PATH")):
        return
    raise SparkUnavailable(
        "ENGINE=spark needs Java 17 and found none (no `java` on PATH, JAVA_HOME unset): install a JRE"
        " (Debian: apt-get install openjdk-17-jre-headless) or set SPARK_REMOTE to a Spark Connect server"
        f" (see {GUIDE})"
    )
