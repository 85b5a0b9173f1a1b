"""Rating on Spark writes the same bytes as rating on DuckDB.

The rating tests of tests/test_rating.py and tests/test_rating_reference.py that rate a
workspace run here again, each rating done twice, on DuckDB and on local Spark: the rated
lines and totals files must be byte-identical (rows, order, Parquet types) and the
summaries equal, and an error on one backend must be the same error on the other. The
hypothesis comparison with the pure-Python reference runs on Spark too, on a smaller
budget, and checks Spark's Arrow result against DuckDB's.

One SparkSession (local[2], two shuffle partitions, 1 GB of driver memory) serves every
test here: a JVM takes seconds to start. Without Java or pyspark, which
``python -m tests.peers.spark`` installs, these tests skip and say why.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.support
import tests.test_rating as rating_tests
import tests.test_rating_reference as reference_tests
from beanbill.cli import main
from beanbill.examples import SETTINGS, write_toml
from beanbill.rating.config import EngineSettings
from beanbill.rating.errors import RatingError
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.progress import Progress, no_progress
from beanbill.rating.rate import DuckDBRating, RatedMonth, RatingBackend, rate_months
from beanbill.rating.spark import SparkRating, session_settings, spark_session
from beanbill.rating.workspace import SETTINGS_FILE, Workspace
from tests.peers.spark import problem
from tests.reference import Event, rate_reference
from tests.support import SMALL_CATALOG, customer, write_workspace

pytestmark = pytest.mark.slow

TEST_MASTER = "local[2]"
TEST_MEMORY_LIMIT = "1GB"
# The part of an overflow error that the backend words (DuckDB's or Spark's own message).
BACKEND_DETAIL = re.compile(r"(per organization, period and meter\)): .*", re.DOTALL)
FIXTURES_OF_RATING_CASES = {"make_workspace", "tmp_path"}
REFERENCE_ZONES = ["UTC", "Europe/Paris"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The one SparkSession of these tests (every Spark backend made meanwhile reuses it),
    stopped after this module, so that the rest of the suite runs without it."""
    reason = problem()
    if reason is not None:
        pytest.skip(f"Spark cannot run here: {reason}")
    engine = EngineSettings(
        backend="spark", spark_master=TEST_MASTER, memory_limit=TEST_MEMORY_LIMIT
    )
    session = spark_session(session_settings(engine, tmp_path_factory.mktemp("spark-state")))
    yield session
    session.stop()


def on_spark(workspace: Workspace) -> Workspace:
    """The same workspace with ``[engine] backend = "spark"`` on the test master."""
    engine = workspace.settings.engine.model_copy(
        update={"backend": "spark", "spark_master": TEST_MASTER}
    )
    return dataclasses.replace(
        workspace, settings=workspace.settings.model_copy(update={"engine": engine})
    )


def rated_files(workspace: Workspace) -> dict[str, bytes]:
    return {
        str(path.relative_to(workspace.rated_dir)): path.read_bytes()
        for path in sorted(workspace.rated_dir.rglob("*.parquet"))
    }


def without_backend_detail(error: BaseException) -> str:
    return BACKEND_DETAIL.sub(r"\1: ...", str(error))


def rate_on_both(
    workspace: Workspace, months: Sequence[Month], progress: Progress = no_progress
) -> list[RatedMonth]:
    """``rate_months`` on DuckDB, then on Spark from no rated output: same files, same
    summaries, or the same error (in the backend's own words past its explanation)."""
    try:
        expected = rate_months(workspace, months, progress)
    except RatingError as duckdb_error:
        with pytest.raises(RatingError) as spark_error:
            rate_months(on_spark(workspace), months, progress)
        assert without_backend_detail(spark_error.value) == without_backend_detail(duckdb_error)
        raise
    files = rated_files(workspace)
    shutil.rmtree(workspace.rated_dir)
    results = rate_months(on_spark(workspace), months, progress)
    assert rated_files(workspace).keys() == files.keys()
    for name, content in rated_files(workspace).items():
        assert content == files[name], f"{name}: Spark's file differs from DuckDB's"
    assert results == expected
    return results


def rating_cases() -> list[Callable[..., None]]:
    """Every test of the two rating modules that rates a workspace it builds (and so takes
    no fixture but ``make_workspace`` and ``tmp_path``): a new one runs on Spark too."""
    cases: list[Callable[..., None]] = []
    for module in (rating_tests, reference_tests):
        for name, function in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(function):
                parameters = set(inspect.signature(function).parameters)
                if parameters <= FIXTURES_OF_RATING_CASES:
                    cases.append(function)
    return cases


@pytest.mark.parametrize("case", rating_cases(), ids=lambda case: case.__name__[len("test_") :])
def test_rating_case_on_spark_writes_duckdbs_bytes(
    case: Callable[..., None],
    spark: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in (rating_tests, reference_tests, tests.support):
        monkeypatch.setattr(module, "rate_months", rate_on_both)
    parameters = inspect.signature(case).parameters
    case(**{name: request.getfixturevalue(name) for name in parameters})


# --- the reference comparison ----------------------------------------------------------------


class Fetcher:
    """What tests/test_rating_reference.py asks of a connection (``to_pyarrow``), answered by
    a rating backend's ``fetch`` (Arrow all the way, as rating reads it); keeps each table."""

    def __init__(self, backend: RatingBackend) -> None:
        self.backend = backend
        self.fetched: list[pa.Table] = []

    def to_pyarrow(self, table: ir.Table) -> pa.Table:
        result = self.backend.fetch(table)
        self.fetched.append(result)
        return result


@pytest.fixture(scope="module")
def spark_backend(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> SparkRating:
    root = tmp_path_factory.mktemp("spark-backend")
    workspace = write_workspace(root, SETTINGS, SMALL_CATALOG, [customer("acme")])
    return SparkRating(on_spark(workspace), spark)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    month=st.sampled_from(reference_tests.MONTHS),
    zone=st.sampled_from(REFERENCE_ZONES),
    data=st.data(),
)
def test_spark_matches_the_reference_and_duckdb(
    spark_backend: SparkRating, month: Month, zone: str, data: st.DataObject
) -> None:
    """tests/test_rating_reference.py's property, on Spark: exact to the atto, and the
    Arrow result (rows, order, types) equal to DuckDB's."""
    rows: list[Event] = data.draw(reference_tests.events(month))
    on_spark_result = Fetcher(spark_backend)
    on_duckdb = Fetcher(DuckDBRating(ibis.duckdb.connect()))
    engine = reference_tests.engine_rate(on_spark_result, rows, month, zone)
    reference_tests.engine_rate(on_duckdb, rows, month, zone)
    expected = rate_reference(
        rows,
        reference_tests.CATALOG,
        reference_tests.CUSTOMERS,
        ZoneInfo(zone),
        (month.year, month.month),
    )
    assert engine == expected
    assert on_spark_result.fetched[-1].equals(on_duckdb.fetched[-1])


@pytest.mark.parametrize(
    "case",
    [
        reference_tests.test_reference_sees_tier_boundaries,
        reference_tests.test_a_volume_total_of_exactly_up_to_is_priced_by_that_tier,
    ],
    ids=lambda case: case.__name__[len("test_") :],
)
def test_hand_checked_band_cases_on_spark(
    case: Callable[[Any], None], spark_backend: SparkRating
) -> None:
    case(Fetcher(spark_backend))


# --- choosing the backend ----------------------------------------------------------------------


def test_the_setting_chooses_spark_for_the_rate_command(
    spark: Any,
    make_workspace: Callable[..., Workspace],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[engine] backend = "spark"`` in beanbill.toml, read by the real loader, makes
    ``beanbill rate`` run on Spark (the session already running here serves it)."""
    workspace = make_workspace()
    usage = tests.support.write_jsonl(
        tmp_path / "u.jsonl",
        [rating_tests.interval("a", "acme", "2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z")],
    )
    ingested = CliRunner().invoke(main, ["ingest", "-w", str(workspace.root), str(usage)])
    assert ingested.exit_code == 0, ingested.output
    settings_file = workspace.root / SETTINGS_FILE
    written = tomllib.loads(settings_file.read_text())
    written["engine"] = {"backend": "spark", "spark_master": TEST_MASTER}
    write_toml(settings_file, written)
    written_on_spark: list[Path] = []
    spark_write = SparkRating.write

    def spy(backend: SparkRating, table: ir.Table, path: Path) -> None:
        written_on_spark.append(path)
        spark_write(backend, table, path)

    monkeypatch.setattr(SparkRating, "write", spy)
    result = CliRunner().invoke(main, ["rate", "-w", str(workspace.root), "--period", "2026-11"])
    assert result.exit_code == 0, result.output
    assert [path.name for path in written_on_spark] == [f".lines.parquet.tmp-{os.getpid()}"]
    lines = rating_tests.lines_of(Workspace.load(workspace.root), "2026-11")
    assert [(row["day"], row["line_seconds"]) for row in lines] == [
        (date(2026, 11, 1), 50_400),
        (date(2026, 11, 2), 36_000),
    ]


def test_a_workspace_path_with_pattern_characters_is_read_literally(
    spark: Any, make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Hadoop reads ``[``, ``{`` and ``*`` in a path as a pattern; the usage store's files
    are named exactly."""
    workspace = make_workspace(name="ws [1] {a,b} *")
    usage = tests.support.write_jsonl(
        tmp_path / "u.jsonl",
        [rating_tests.interval("a", "acme", "2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z")],
    )
    ingest(workspace, [usage])
    [rated] = rate_on_both(workspace, [Month(2026, 11)])
    assert rated.line_count == 1
