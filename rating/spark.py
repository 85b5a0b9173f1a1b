"""Rating on Spark: the engine's Ibis expressions, unchanged, on PySpark.

``[engine] backend = "spark"`` runs ``rating.engine``'s expressions on a SparkSession whose
master is ``[engine] spark_master`` (``local[*]`` on one machine, a cluster URL in
production), through Ibis's pyspark backend. Nothing here says what a rule is: this module
only reads the usage store, keeps intermediate results and fetches them, like
``rate.DuckDBRating`` does for the embedded DuckDB.

Why the rated files are the same bytes as DuckDB's:

- the rules are the same expressions, on exact types only (int64, DECIMAL(38, 0)), with
  Spark's ANSI mode on so that an overflow raises (as in DuckDB) instead of wrapping or
  turning into NULL;
- the result is ordered by the engine's unique line order and collected as Arrow, cast to
  the expression's own schema;
- the file is written by the same writer as DuckDB's (``rate.DuckDBRating.write``), on
  the driver: a single Parquet file, not a folder of Spark part files; the totals are
  computed from it there, as on the DuckDB backend (``rate.rate_month`` says why).

On a cluster, the executors read the usage store by its path: the workspace must be on a
file system every node mounts at the same place. The rated lines of a month come back to
the driver (``spark.driver.maxResultSize`` is set to the driver's memory).

pyspark and a Java runtime are an optional install (``pip install 'beanbill[spark]'`` and
a JRE 17 or later); this module imports pyspark only when a Spark backend is made, so the
rest of beanbill never needs it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from beanbill.rating.config import EngineSettings
from beanbill.rating.errors import RatingError
from beanbill.rating.rate import PARQUET_ROW_GROUP_ROWS, DuckDBRating
from beanbill.rating.workspace import Workspace

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

APPLICATION_NAME = "beanbill-rating"
SPILL_FOLDER = "spark-spill"
WAREHOUSE_FOLDER = "spark-warehouse"
LOCAL_MASTER = re.compile(r"^local(\[(\*|\d+)\])?$")
MEMORY_LIMIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(MB|GB|MiB|GiB)$")
BYTES_PER_UNIT = {"MB": 10**6, "GB": 10**9, "MiB": 2**20, "GiB": 2**30}
# Settings of every query, set again on a session made by someone else (a test's, say).
QUERY_SETTINGS = {
    # Overflow raises, as in DuckDB: without ANSI, Spark wraps int64 sums and turns an
    # out-of-range decimal into NULL.
    "spark.sql.ansi.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # Memory tables (catalog, days, periods) go to Spark through Arrow, not row by row.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
# PySpark's loggers that print a failed query's context as JSON on stderr.
QUERY_CONTEXT_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
# Characters Hadoop reads as a pattern in a path; a usage file's path is meant literally.
GLOB_CHARACTERS = re.compile(r"([\\{}\[\]*?])")


def missing_requirement() -> str | None:
    """Why Spark cannot run here (pyspark or Java missing), or None when it can."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'beanbill[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").exists()) and not shutil.which("java"):
        return "no Java runtime (java on PATH or JAVA_HOME; Debian: openjdk-17-jre-headless)"
    return None


def local_threads(master: str) -> int | None:
    """The worker threads of a ``local`` master (None for a cluster)."""
    match = LOCAL_MASTER.fullmatch(master)
    if match is None:
        return None
    count = match.group(2)
    if count is None:
        return 1
    return (os.cpu_count() or 1) if count == "*" else int(count)


def memory_mebibytes(memory_limit: str) -> int:
    """``engine.memory_limit`` (DuckDB's notation: 4GB, 1.5GiB, 512MB) in MiB, for the JVM."""
    match = MEMORY_LIMIT.fullmatch(memory_limit.strip())
    if match is None:
        raise RatingError(f"engine.memory_limit {memory_limit!r}: expected e.g. 4GB or 512MiB")
    return max(1, int(float(match.group(1)) * BYTES_PER_UNIT[match.group(2)]) // 2**20)


def session_settings(engine: EngineSettings, state_dir: Path) -> dict[str, str]:
    """Everything this process's SparkSession is started with.

    The driver's memory is the workspace's ``memory_limit`` (in local mode the driver does
    all the work); shuffles use one partition per local thread, since a month of a few
    million lines gains nothing from Spark's default 200 on one machine.
    """
    memory = f"{memory_mebibytes(engine.memory_limit)}m"
    settings = {
        "spark.master": engine.spark_master,
        "spark.app.name": APPLICATION_NAME,
        "spark.driver.memory": memory,
        "spark.driver.maxResultSize": memory,
        "spark.local.dir": str(state_dir / SPILL_FOLDER),
        "spark.sql.warehouse.dir": str(state_dir / WAREHOUSE_FOLDER),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        **QUERY_SETTINGS,
    }
    threads = local_threads(engine.spark_master)
    if threads is not None:
        # One machine: nothing listens beyond the loopback interface.
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
        settings["spark.sql.shuffle.partitions"] = str(threads)
        settings["spark.default.parallelism"] = str(threads)
    return settings


def quiet(session: SparkSession) -> None:
    """Spark's own logs off: a failed query reaches the user once, as the error it raises
    (the CLI prints one line), not also as Java and JSON logs on stderr."""
    from pyspark.logger import PySparkLogger

    session.sparkContext.setLogLevel("FATAL")
    for name in QUERY_CONTEXT_LOGGERS:
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def spark_session(settings: dict[str, str]) -> SparkSession:
    """This process's SparkSession: started once with ``settings`` (slow: a JVM), then
    reused; a session already running keeps how it was started."""
    from pyspark.sql import SparkSession

    builder: Any = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    session: SparkSession = builder.getOrCreate()
    quiet(session)
    for key, value in QUERY_SETTINGS.items():
        session.conf.set(key, value)
    return session


class SparkRating:
    """The rating backend on Spark (see the module's docstring)."""

    def __init__(self, workspace: Workspace, session: SparkSession | None = None) -> None:
        problem = missing_requirement()
        if problem is not None:
            raise RatingError(f'engine.backend = "spark": {problem}')
        if session is None:
            state_dir = workspace.state_dir
            session = spark_session(session_settings(workspace.settings.engine, state_dir))
        else:
            for key, value in QUERY_SETTINGS.items():
                session.conf.set(key, value)
        self._session = session
        self._connection = ibis.pyspark.connect(session)
        # Rated output is written where it is read: on this machine, by DuckDB's writer.
        self._local = DuckDBRating(ibis.duckdb.connect(**workspace.duckdb_config()))
        self._scratch: dict[str, DataFrame] = {}

    @property
    def connection(self) -> ibis.BaseBackend:
        return self._connection

    @property
    def overflow_errors(self) -> tuple[type[Exception], ...]:
        from pyspark.errors import ArithmeticException

        return (ArithmeticException,)

    def read_parquet(self, files: Sequence[Path]) -> ir.Table:
        paths = [GLOB_CHARACTERS.sub(r"\\\1", str(path)) for path in files]
        name = f"usage_{uuid.uuid4().hex}"
        self._session.read.parquet(*paths).createOrReplaceTempView(name)
        return self._connection.table(name)

    def _dataframe(self, table: ir.Table) -> DataFrame:
        """``table`` as a Spark DataFrame, analyzed (so it no longer needs the temporary
        view that registered its memory tables)."""
        name = f"expression_{uuid.uuid4().hex}"
        self._connection.create_view(name, table, overwrite=True)
        try:
            return self._session.table(name)
        finally:
            self._session.catalog.dropTempView(name)

    def create_scratch(self, name: str, table: ir.Table) -> ir.Table:
        """Cached when first computed (in memory, spilling to ``spark.local.dir``)."""
        frame = self._dataframe(table).cache()
        frame.createOrReplaceTempView(name)
        self._scratch[name] = frame
        return self._connection.table(name)

    def drop_scratch(self, name: str) -> None:
        frame = self._scratch.pop(name, None)
        if frame is not None:
            self._session.catalog.dropTempView(name)
            frame.unpersist()

    def fetch(self, table: ir.Table) -> pa.Table:
        """Collected through Arrow (never pandas: no float on the way), cast to the
        expression's types (Spark may answer a string as a large string)."""
        return self._dataframe(table).toArrow().cast(table.schema().to_pyarrow())

    def write(self, table: ir.Table, path: Path) -> None:
        """Collected to the driver in the expression's order, written by DuckDB.

        DuckDB closes a row group at the end of the batch that fills it, and Spark's
        batches have sizes of their own: handed over in batches of exactly a row group,
        the rows make the row groups a query in DuckDB makes, so the same bytes."""
        rows = self.fetch(table)
        batches = [
            batch
            for offset in range(0, rows.num_rows, PARQUET_ROW_GROUP_ROWS)
            for batch in rows.slice(offset, PARQUET_ROW_GROUP_ROWS).combine_chunks().to_batches()
        ]
        self._local.write(ibis.memtable(pa.Table.from_batches(batches, rows.schema)), path)

    @property
    def local(self) -> DuckDBRating:
        return self._local
