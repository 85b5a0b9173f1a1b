"""Ingest and rating throughput against a plain-DuckDB floor measured in the same run.

    .venv/bin/python bench/bench_rating.py --sizes 1000000 10000000

For each size: generate interval events (10k organizations × 20 resources, ~40 % crossing
midnight, 1 % exact duplicates) as JSON Lines and Parquet; ingest each into a fresh
workspace; rate the month; and run the floor — plain DuckDB dedupe + group by
org/day/meter/resource on the same stored files, without splitting or pricing. Every step
runs in its own subprocess, which reports its wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.examples import SETTINGS  # noqa: E402

ORGANIZATIONS = 10_000
RESOURCES_PER_ORGANIZATION = 20
MONTH_START_EPOCH = 1_793_491_200  # 2026-11-01T00:00:00Z
DAYS = 30
CPU_PRICES: list[dict[str, Any]] = [
    {
        "effective": date(2026, 1, 1),
        "free": "3600",
        "tiers": [
            {"up_to": "2592000", "price": "0.0000069444"},
            {"price": "0.0000050001"},
        ],
    },
    {"effective": date(2026, 11, 15), "price": "0.0000063889"},
]
MEMORY_PRICES: list[dict[str, Any]] = [{"effective": date(2026, 1, 1), "price": "0.0000009722"}]


def generate(size: int, folder: Path) -> tuple[Path, Path]:
    """Events as JSONL and Parquet, made by DuckDB (deterministic: hashes of the row number)."""
    folder.mkdir(parents=True, exist_ok=True)
    jsonl, parquet = folder / f"events-{size}.jsonl", folder / f"events-{size}.parquet"
    if jsonl.exists() and parquet.exists():
        return jsonl, parquet
    unique = size - size // 100
    query = f"""
        WITH base AS (
            SELECT i, hash(i, 1) % 10 < 4 AS crosses, CAST(hash(i, 2) % {DAYS} AS BIGINT) AS day,
                   CAST(1 + hash(i, 3) % 14400 AS BIGINT) AS a,
                   CAST(1 + hash(i, 4) % 14400 AS BIGINT) AS b,
                   CAST(hash(i, 5) % 43200 AS BIGINT) AS c,
                   CAST(1 + hash(i, 6) % 43199 AS BIGINT) AS d
            FROM range({unique}) t(i)
        ), shaped AS (
            SELECT i,
                   {MONTH_START_EPOCH} + day * 86400
                       + CASE WHEN crosses THEN 86400 - a ELSE c END AS start_s,
                   CASE WHEN crosses THEN a + b ELSE d END AS duration
            FROM base
        ), events AS (
            SELECT 'ev-' || i AS id,
                   printf('org-%05d', i % {ORGANIZATIONS}) AS org,
                   printf('org-%05d/res-%02d', i % {ORGANIZATIONS},
                          (i // {ORGANIZATIONS}) % {RESOURCES_PER_ORGANIZATION}) AS resource,
                   CASE WHEN i % 2 = 0 THEN 'cpu' ELSE 'memory' END AS meter,
                   strftime(make_timestamp(start_s * 1000000), '%Y-%m-%dT%H:%M:%SZ') AS start,
                   strftime(make_timestamp((start_s + duration) * 1000000),
                            '%Y-%m-%dT%H:%M:%SZ') AS "end",
                   CAST(1 + i % 8 AS VARCHAR) AS quantity
            FROM shaped
        )
        SELECT * FROM events
        UNION ALL
        SELECT * FROM events WHERE CAST(substr(id, 4) AS BIGINT) % 99 = 0 LIMIT {size}
    """
    connection = duckdb.connect()
    connection.execute(f"CREATE TABLE events AS {query}")
    connection.execute(f"COPY events TO '{jsonl}' (FORMAT json)")
    connection.execute(f"COPY events TO '{parquet}' (FORMAT parquet)")
    return jsonl, parquet


def make_workspace(root: Path) -> Path:
    # Imported here, not at the top: every measured step re-imports this file, and the
    # builders' imports (the whole pipeline) would add to the steps' peak RSS.
    from tests.support import example_meter, write_configuration_files

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    customers = [
        {
            "id": f"org-{index:05d}",
            "name": f"Organization {index}",
            "address": ["1 Main Street"],
            "country": "FR",
            "email": f"billing@org{index}.example",
            "billing_period": ("monthly", "monthly", "monthly", "weekly", "daily")[index % 5],
        }
        for index in range(ORGANIZATIONS)
    ]
    catalog = {"meter": [example_meter("cpu", CPU_PRICES), example_meter("memory", MEMORY_PRICES)]}
    write_configuration_files(root, SETTINGS, catalog, customers)
    return root


def step(name: str, *arguments: str) -> dict[str, Any]:
    """Run one measured step in a fresh interpreter; it prints its own figures as JSON."""
    command = [sys.executable, __file__, "--step", name, *arguments]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def run_step(name: str, arguments: list[str]) -> None:
    from beanbill.rating.ingest import ingest
    from beanbill.rating.periods import Month
    from beanbill.rating.rate import rate_months
    from beanbill.rating.workspace import Workspace

    started = time.perf_counter()
    figures: dict[str, Any] = {}
    if name == "ingest":
        workspace = Workspace.load(Path(arguments[0]))
        started = time.perf_counter()
        summary = ingest(workspace, [Path(arguments[1])])
        figures = {"read": summary.read, "accepted": summary.accepted}
    elif name == "rate":
        workspace = Workspace.load(Path(arguments[0]))
        started = time.perf_counter()
        [result] = rate_months(workspace, [Month(2026, 11)])
        figures = {"lines": result.line_count, "amount": str(result.amount)}
    elif name == "floor":
        files = sorted(str(p) for p in Path(arguments[0]).glob("usage/month=*/*.parquet"))
        started = time.perf_counter()
        rows = duckdb.execute(f"""
            SELECT count(*) FROM (
                SELECT org, start_s // 86400 AS day, meter, resource, sum(quantity_micro)
                FROM (SELECT id, any_value(org) AS org, any_value(start_s) AS start_s,
                             any_value(meter) AS meter, any_value(resource) AS resource,
                             any_value(quantity_micro) AS quantity_micro
                      FROM read_parquet({files}) GROUP BY id)
                GROUP BY ALL)""").fetchone()
        figures = {"groups": rows[0] if rows else 0}
    figures["seconds"] = time.perf_counter() - started
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def bench(size: int, data: Path) -> list[tuple[str, str, str, str]]:
    jsonl, parquet = generate(size, data)
    rows: list[tuple[str, str, str, str]] = []
    for label, source in (("ingest JSONL", jsonl), ("ingest Parquet", parquet)):
        workspace = make_workspace(data / f"ws-{label.split()[1].lower()}")
        figures = step("ingest", str(workspace), str(source))
        rate = size / figures["seconds"]
        rows.append(
            (
                label,
                f"{figures['seconds']:.1f}",
                f"{rate / 1e6:.2f}M",
                f"{figures['peak_rss_mb']:.0f}",
            )
        )
    workspace = data / "ws-parquet"
    rating = step("rate", str(workspace))
    floor = step("floor", str(workspace))
    for label, figures in (("rating", rating), ("floor (dedupe + group by)", floor)):
        seconds = figures["seconds"]
        throughput = f"{size / seconds / 1e6:.2f}M"
        rows.append((label, f"{seconds:.1f}", throughput, f"{figures['peak_rss_mb']:.0f}"))
    rows.append(("rating / floor", f"{rating['seconds'] / floor['seconds']:.2f}×", "", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    parser.add_argument("--step")
    arguments, rest = parser.parse_known_args()
    if arguments.step:
        run_step(arguments.step, rest)
        return
    print("| events | step | seconds | rows/s | peak RSS MB |\n|---:|---|---:|---:|---:|")
    for size in arguments.sizes:
        for label, seconds, rate, rss in bench(size, arguments.data):
            print(f"| {size:,} | {label} | {seconds} | {rate} | {rss} |", flush=True)


if __name__ == "__main__":
    main()
