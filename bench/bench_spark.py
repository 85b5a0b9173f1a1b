"""Rating on local Spark against rating on DuckDB, in the same run, on the same usage store.

    .venv/bin/python bench/bench_spark.py --size 10000000

Data: bench/bench_rating.py's (the same generator and catalog; generated into
``bench/data/`` once), ingested once into ``bench/data/ws-spark-<size>``. Each step runs
in a fresh process that reports its wall time and the peak RSS of its process tree
(Spark's JVM included):

- **duckdb**: ``rate_months`` on the embedded DuckDB (the default backend);
- **spark**: ``rate_months`` on Spark, ``local[*]``, the workspace's default
  ``memory_limit`` as the driver's memory; starting the JVM is timed apart;
- the two runs' rated files are compared byte for byte;
- **profile**: each backend again, stage by stage, every stage computed to the end before
  the next (kept, then counted): read (the usage store), split (midnight split and
  aggregation to usage lines), price (versions, bands, amounts, order), write (the lines
  file, on this machine), totals (from the lines file, on this machine's DuckDB for both
  backends). Forcing each stage costs extra, so the stages add up to more than the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_rating import generate, make_workspace  # noqa: E402

MONTH = (2026, 11)
SAMPLE_SECONDS = 0.2
STAGES = ("read", "split", "price", "write", "totals")


class PeakMemory:
    """The largest RSS of this process and its children (Spark's JVM), sampled."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exception: object) -> None:
        self._stop.set()
        self._thread.join()


def step(name: str, *arguments: str) -> dict[str, Any]:
    """Run one measured step in a fresh interpreter; it prints its figures as JSON."""
    command = [sys.executable, __file__, "--step", name, *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"step {name} {' '.join(arguments)} failed:\n{result.stderr[-5000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def on_backend(root: Path, backend: str, memory_limit: str) -> Any:
    """The workspace, loaded, with ``[engine] backend`` and ``memory_limit`` set."""
    from beanbill.rating.workspace import Workspace

    workspace = Workspace.load(root)
    update = {"backend": backend, "memory_limit": memory_limit}
    engine = workspace.settings.engine.model_copy(update=update)
    settings = workspace.settings.model_copy(update={"engine": engine})
    return dataclasses.replace(workspace, settings=settings)


def rate_step(root: Path, backend: str, memory_limit: str) -> dict[str, Any]:
    from beanbill.rating.periods import Month
    from beanbill.rating.rate import rate_months, rating_backend

    workspace = on_backend(root, backend, memory_limit)
    figures: dict[str, Any] = {}
    with PeakMemory() as memory:
        started = time.perf_counter()
        rating_backend(workspace)  # Spark: starts the JVM, which the rating then reuses
        figures["start_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        [result] = rate_months(workspace, [Month(*MONTH)])
        figures["seconds"] = time.perf_counter() - started
    figures |= {"lines": result.line_count, "amount": str(result.amount)}
    figures["peak_rss_mb"] = memory.peak_bytes / 2**20
    return figures


@contextmanager
def stopwatch(figures: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    figures[name] = time.perf_counter() - started


def profile_step(root: Path, backend_name: str, memory_limit: str) -> dict[str, Any]:
    """The stages of ``rate.rate_month``, each computed to the end (see the docstring)."""
    import ibis.expr.types as ir

    from beanbill.rating.engine import (
        month_input,
        rate,
        source_months,
        split_lines,
        totals,
        usage_files,
    )
    from beanbill.rating.periods import Month
    from beanbill.rating.rate import load_events, rating_backend

    workspace = on_backend(root, backend_name, memory_limit)
    backend = rating_backend(workspace)
    billing = workspace.settings.billing
    rating_input = month_input(Month(*MONTH), billing.timezone, workspace.catalog,
                               workspace.customers)  # fmt: skip
    files = usage_files(
        workspace.usage_dir, source_months(rating_input, billing.max_event_duration_days)
    )
    folder = workspace.root / "profile"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}

    def kept(name: str, table: ir.Table) -> ir.Table:
        table = backend.create_scratch(name, table)
        [row] = backend.fetch(table.aggregate(rows=table.count())).to_pylist()
        rows[name] = int(row["rows"])
        return table

    with stopwatch(seconds, "read"):
        events = kept("events", load_events(backend, files))
    with stopwatch(seconds, "split"):
        usage_lines = kept("usage_lines", split_lines(events, rating_input))
    with stopwatch(seconds, "price"):
        # rate() as rating runs it, its usage lines being the ones just kept
        rated = kept("rated_lines", rate(events, rating_input, lambda _: usage_lines))
    with stopwatch(seconds, "write"):
        backend.write(rated, folder / "lines.parquet")
    with stopwatch(seconds, "totals"):
        local = backend.local
        lines = local.connection.read_parquet(str(folder / "lines.parquet"))
        local.write(totals(lines), folder / "totals.parquet")
    for name in reversed(rows):
        backend.drop_scratch(name)
    shutil.rmtree(folder)
    return {**seconds, "rows": rows}


def run_step(name: str, arguments: list[str]) -> None:
    root, backend, memory_limit = Path(arguments[0]), arguments[1], arguments[2]
    steps: dict[str, Callable[[Path, str, str], dict[str, Any]]] = {
        "rate": rate_step,
        "profile": profile_step,
    }
    print(json.dumps(steps[name](root, backend, memory_limit)))


def digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("*.parquet"))
    }


def prepared_workspace(size: int, data: Path) -> Path:
    """bench_rating's workspace, ingested once (the Parquet events: the faster ingest)."""
    from beanbill.rating.ingest import ingest
    from beanbill.rating.workspace import Workspace

    _, parquet = generate(size, data)
    root = data / f"ws-spark-{size}"
    if not (root / "usage").is_dir():
        make_workspace(root)
        ingest(Workspace.load(root), [parquet])
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    parser.add_argument(
        "--spark-memory",
        default="4GB",
        help="engine.memory_limit on Spark: the driver's heap, which collects the month's "
        "rated lines to write them (DuckDB keeps the workspace default, 4GB)",
    )
    parser.add_argument("--step")
    arguments, rest = parser.parse_known_args()
    if arguments.step:
        run_step(arguments.step, rest)
        return
    root = prepared_workspace(arguments.size, arguments.data)
    rated = root / "rated" / f"month={MONTH[0]}-{MONTH[1]:02d}"
    results: dict[str, dict[str, Any]] = {}
    files: dict[str, dict[str, str]] = {}
    memory = {"duckdb": "4GB", "spark": arguments.spark_memory}
    for backend in ("duckdb", "spark"):
        shutil.rmtree(rated, ignore_errors=True)
        results[backend] = step("rate", str(root), backend, memory[backend])
        files[backend] = digests(rated)
    identical = files["duckdb"] == files["spark"]
    size = arguments.size
    print(f"events: {size:,}; rated lines: {results['duckdb']['lines']:,}; "
          f"Spark's memory_limit: {arguments.spark_memory}")  # fmt: skip
    print("\n| backend | start s | rating s | events/s | peak RSS MB |\n|---|---:|---:|---:|---:|")
    for backend, figures in results.items():
        print(
            f"| {backend} | {figures['start_seconds']:.1f} | {figures['seconds']:.1f} | "
            f"{size / figures['seconds'] / 1e6:.2f}M | {figures['peak_rss_mb']:.0f} |"
        )
    ratio = results["spark"]["seconds"] / results["duckdb"]["seconds"]
    print(f"\nSpark / DuckDB: {ratio:.2f}× (rating, without the JVM's start)")
    print(f"rated files byte-identical: {identical} ({', '.join(sorted(files['duckdb']))})")
    profiles = {
        backend: step("profile", str(root), backend, memory[backend])
        for backend in ("duckdb", "spark")
    }
    print("\n| stage | DuckDB s | Spark s | Spark / DuckDB |\n|---|---:|---:|---:|")
    for stage in STAGES:
        duckdb_seconds, spark_seconds = profiles["duckdb"][stage], profiles["spark"][stage]
        print(
            f"| {stage} | {duckdb_seconds:.1f} | {spark_seconds:.1f} | "
            f"{spark_seconds / duckdb_seconds:.2f}× |"
        )
    print(f"\nrows per stage: {profiles['spark']['rows']}")


if __name__ == "__main__":
    main()
