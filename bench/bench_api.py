"""Customer API: events in over loopback against a file-ingest floor, and the open period's
usage drill-down latency for an organization with a million events.

    .venv/bin/python bench/bench_api.py --events 100000 --big-events 1000000

1. **Events in**: the same events, in 1,000-event batches, are posted to ``POST /v1/events``
   of a real server (uvicorn on 127.0.0.1) by one keep-alive client, then by 8 at once
   (batches arriving together are ingested together: group commit), and, as the floor,
   written to one JSON Lines file and ingested into a fresh workspace (``rating.ingest``),
   in the same run. Sustained events/s of each; the goal is the API at ≥ 50 % of the floor.
2. **Drill-down**: an organization with ``--big-events`` interval events in the open month
   (beside 999 others with as many in all) is rated provisionally (``rate_open``: what is
   precomputed, timed); then ``GET /v1/organizations/{org}/usage?month=`` and its forecast
   are requested ``--requests`` times over loopback; p50/p99 latency; the goal is p99
   < 200 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.api.app import create_app  # noqa: E402
from beanbill.api.context import ApiSettings  # noqa: E402
from beanbill.api.keys import KeyStore  # noqa: E402
from beanbill.api.rate_limit import RateLimit  # noqa: E402
from beanbill.examples import SETTINGS  # noqa: E402
from beanbill.rating.ingest import ingest  # noqa: E402
from beanbill.rating.provisional import rate_open  # noqa: E402
from beanbill.rating.usage_store import stored_parts  # noqa: E402
from beanbill.rating.workspace import Workspace  # noqa: E402
from beanbill.serving import listen, serve_in_workers, settle_heap  # noqa: E402
from tests.support import SMALL_CATALOG, customer, write_workspace  # noqa: E402

BATCH = 1_000
# Concurrent senders: one, the webhook benchmark's 8, then more until the rate stops growing.
SENDERS = (1, 8, 16, 32)
ORGANIZATIONS = 1_000
BIG = "org-big"
TODAY = date(2026, 11, 30)  # the open month: November 2026
MONTH_START_EPOCH = 1_793_491_200  # 2026-11-01T00:00:00Z
DAYS = 29  # complete days before TODAY
BIG_RESOURCES = 100
MAX_EVENTS = 10_000_000
# Sent once before timing, to the server and to the floor's process alike: the first
# request or ingest of a process loads code (~0.3 s) that a sustained rate does not include.
WARM_UP_EVENT = {"id": "warm", "org": "org-none", "resource": "r", "meter": "cpu",
                 "start": "2026-11-02T00:00:00Z", "end": "2026-11-02T00:01:00Z"}  # fmt: skip
UNLIMITED = ApiSettings(rate_limit=RateLimit(per_second=1e9, burst=1_000_000_000))


def workspace(root: Path, organizations: list[str]) -> Workspace:
    shutil.rmtree(root, ignore_errors=True)
    customers = [customer(org) for org in organizations]
    return write_workspace(root, SETTINGS, SMALL_CATALOG, customers)


def events_in_memory(count: int) -> list[dict[str, Any]]:
    """Interval (cpu) and counter (egress) events of 100 organizations in November."""
    events: list[dict[str, Any]] = []
    for index in range(count):
        org = f"org-{index % 100:05d}"
        start = MONTH_START_EPOCH + (index * 7919) % (DAYS * 86_400)
        if index % 4 == 3:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
            events.append(
                {"id": f"e{index}", "org": org, "resource": f"{org}/lb", "meter": "egress",
                 "at": at, "quantity": str(1 + index % 50)}
            )  # fmt: skip
        else:
            end = start + 60 + (index * 104729) % 7200
            events.append(
                {"id": f"e{index}", "org": org, "resource": f"{org}/vm-{index % 7}",
                 "meter": "cpu", "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                 "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
                 "quantity": str(1 + index % 8)}
            )  # fmt: skip
    return events


class Server:
    """The app on 127.0.0.1 (an ephemeral port) in a thread, as ``beanbill serve`` runs it."""

    def __init__(self, app: Any) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def admin_key(workspace: Workspace, organizations: list[str]) -> str:
    return KeyStore(workspace.state_dir).create(None, organizations, "bench").secret_key


def bench_events(folder: Path, count: int, workers: int) -> dict[str, Any]:
    organizations = [f"org-{index:05d}" for index in range(100)]
    events = events_in_memory(count)
    floor_workspace = workspace(folder / "floor", organizations)
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    warm = folder / "warm.jsonl"  # one event of an unknown organization: rejected
    warm.write_text(json.dumps(WARM_UP_EVENT) + "\n")
    ingest(floor_workspace, [warm])  # the process warmed, as the server is
    started = time.perf_counter()
    summary = ingest(floor_workspace, [path])
    floor_seconds = time.perf_counter() - started
    assert summary.accepted == count, summary
    result: dict[str, Any] = {
        "events": count,
        "server_workers": workers,
        "floor_seconds": round(floor_seconds, 3),
        "floor_events_per_second": round(count / floor_seconds),
    }
    for senders in SENDERS:
        api_workspace = workspace(folder / f"api-{senders}", organizations)
        seconds, batch_seconds, groups = post_events(
            api_workspace, organizations, events, senders, workers
        )
        api_rate = count / seconds
        result[f"senders_{senders}"] = {
            "api_seconds": round(seconds, 3),
            "api_events_per_second": round(api_rate),
            "api_share_of_floor": round(api_rate * floor_seconds / count, 3),
            "batch_p50_ms": round(statistics.median(batch_seconds) * 1000, 1),
            "batch_p99_ms": round(_percentile(batch_seconds, 0.99) * 1000, 1),
            "ingests": groups,
        }
    return result


class ServerProcess:
    """The app served by uvicorn in a process of its own, as ``beanbill serve`` runs it: the
    senders (this process) do not share its interpreter, as real clients would not."""

    def __init__(self, root: Path, workers: int = 1) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.command = [sys.executable, __file__, "--serve", str(root), "--port", str(self.port),
                        "--workers", str(workers)]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command)
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=5).raise_for_status()
                return base
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=60)


ROOT_ENVIRONMENT = "BEANBILL_BENCH_API_ROOT"


def worker_app() -> Any:
    """The app of one server worker (uvicorn's factory: each worker process builds its own)."""
    app = create_app(Workspace.load(Path(os.environ[ROOT_ENVIRONMENT])), UNLIMITED,
                     today=lambda: TODAY)  # fmt: skip
    settle_heap()  # as `beanbill serve` does once its app is built
    return app


def serve(root: Path, port: int, workers: int) -> None:
    """The ``--serve`` mode: the API of the workspace at ``root`` on 127.0.0.1:``port``, in
    ``workers`` processes (one, as ``beanbill serve`` runs, unless asked)."""
    os.environ[ROOT_ENVIRONMENT] = str(root)
    if workers == 1:
        uvicorn.run(worker_app(), host="127.0.0.1", port=port, log_level="warning",
                    access_log=False)  # fmt: skip
        return
    sys.path.insert(0, str(Path(__file__).parent))  # the workers import this module
    serve_in_workers("bench_api:worker_app", listen("127.0.0.1", port), workers)


def post_events(
    api_workspace: Workspace,
    organizations: list[str],
    events: list[Any],
    senders: int,
    workers: int = 1,
) -> tuple[float, list[float], int]:
    """Post ``events`` in 1,000-event batches from ``senders`` concurrent keep-alive
    clients (each its share of the batches, in order, bodies encoded beforehand, as a load
    generator does) to a server process; seconds, each batch's latency and the ingests the
    group commit ran (one stored part file each: all events are of one month)."""
    key = admin_key(api_workspace, organizations)
    batches = [events[first : first + BATCH] for first in range(0, len(events), BATCH)]
    bodies = [json.dumps({"events": batch}).encode() for batch in batches]
    batch_seconds: list[float] = []
    accepted = [0]
    lock = threading.Lock()
    with ServerProcess(api_workspace.root, workers) as base:
        warm = httpx.post(
            f"{base}/v1/events",
            headers={"Authorization": f"Bearer {key}"},
            json={"events": [WARM_UP_EVENT]},
            timeout=120,
        )
        assert warm.status_code == 200 and warm.json()["rejected"] == 1, warm.text

        def send(share: list[bytes]) -> None:
            # The standard library's http.client, not httpx: the senders share the
            # server's two cores, and httpx spends several times more CPU a request (a
            # load generator is not on the server's machine; the lighter the client, the
            # more the figures measure the server). One keep-alive connection a sender.
            address = urlsplit(base)
            connection = http.client.HTTPConnection(address.hostname or "", address.port,
                                                    timeout=120)  # fmt: skip
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            try:
                for body in share:
                    sent = time.perf_counter()
                    connection.request("POST", "/v1/events", body=body, headers=headers)
                    response = connection.getresponse()
                    answer = response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status} {answer[:500]!r}")
                    with lock:
                        batch_seconds.append(time.perf_counter() - sent)
                        accepted[0] += int(json.loads(answer)["accepted"])
            finally:
                connection.close()

        started = time.perf_counter()
        threads = [
            threading.Thread(target=send, args=(bodies[index::senders],))
            for index in range(senders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    assert accepted[0] == len(events), accepted
    return seconds, batch_seconds, ingests_of(api_workspace)


def ingests_of(api_workspace: Workspace) -> int:
    """How many ingests stored events: each writes its own batch id on its rows (merged
    parts keep them)."""
    parts = [str(path) for path in stored_parts(api_workspace.usage_dir)]
    [(count,)] = duckdb.sql(
        f"SELECT count(DISTINCT batch) FROM read_parquet({parts}, hive_partitioning = false)"
    ).fetchall()
    return int(count)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def big_events(path: Path, big: int) -> None:
    """``big`` interval events of one organization (100 resources) and as many of 999
    others, made by DuckDB (deterministic), as Parquet."""
    query = f"""
        WITH base AS (
            SELECT i, CAST(hash(i, 1) % {DAYS} AS BIGINT) AS day,
                   CAST(hash(i, 2) % 86000 AS BIGINT) AS offset_s,
                   CAST(1 + hash(i, 3) % 3600 AS BIGINT) AS duration
            FROM range({2 * big}) t(i)
        )
        SELECT 'ev-' || i AS id,
               CASE WHEN i < {big} THEN '{BIG}'
                    ELSE printf('org-%05d', i % {ORGANIZATIONS - 1}) END AS org,
               CASE WHEN i < {big} THEN printf('{BIG}/vm-%03d', i % {BIG_RESOURCES})
                    ELSE printf('org-%05d/vm', i % {ORGANIZATIONS - 1}) END AS resource,
               'cpu' AS meter,
               strftime(make_timestamp(({MONTH_START_EPOCH} + day * 86400 + offset_s)
                                       * 1000000), '%Y-%m-%dT%H:%M:%SZ') AS start,
               strftime(make_timestamp(({MONTH_START_EPOCH} + day * 86400 + offset_s
                                        + duration) * 1000000), '%Y-%m-%dT%H:%M:%SZ') AS "end",
               CAST(1 + i % 8 AS VARCHAR) AS quantity
        FROM base
    """
    connection = duckdb.connect()
    connection.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet)")


def bench_drill_down(folder: Path, big: int, requests: int) -> dict[str, Any]:
    organizations = [BIG, *(f"org-{index:05d}" for index in range(ORGANIZATIONS - 1))]
    loaded = workspace(folder / "big", organizations)
    path = folder / "big.parquet"
    big_events(path, big)
    started = time.perf_counter()
    summary = ingest(loaded, [path])
    ingest_seconds = time.perf_counter() - started
    assert summary.accepted == 2 * big, summary
    started = time.perf_counter()
    [rated] = rate_open(loaded, TODAY)
    rate_seconds = time.perf_counter() - started
    key = admin_key(loaded, organizations)
    app = create_app(loaded, UNLIMITED, today=lambda: TODAY)
    settle_heap()  # as `beanbill serve` does once its app is built
    figures: dict[str, Any] = {
        "big_events": big,
        "all_events": 2 * big,
        "ingest_seconds": round(ingest_seconds, 3),
        "rate_open_seconds": round(rate_seconds, 3),
        "provisional_lines": rated.line_count,
        "provisional_file_bytes": rated.lines_path.stat().st_size,
    }
    with Server(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        headers = {"Authorization": f"Bearer {key}"}
        for name, target, parameters in (
            ("usage", f"/v1/organizations/{BIG}/usage", {"month": "2026-11"}),
            ("forecast", f"/v1/organizations/{BIG}/forecast", {}),
        ):
            client.get(target, headers=headers, params=parameters).raise_for_status()  # warm
            seconds = []
            size = 0
            for _ in range(requests):
                sent = time.perf_counter()
                response = client.get(target, headers=headers, params=parameters)
                seconds.append(time.perf_counter() - sent)
                response.raise_for_status()
                size = len(response.content)
            figures[f"{name}_p50_ms"] = round(statistics.median(seconds) * 1000, 1)
            figures[f"{name}_p99_ms"] = round(_percentile(seconds, 0.99) * 1000, 1)
            figures[f"{name}_response_bytes"] = size
        usage = client.get(
            f"/v1/organizations/{BIG}/usage", headers=headers, params={"month": "2026-11"}
        ).json()
        figures["usage_resource_days"] = sum(
            len(resource["days"])
            for period in usage["periods"]
            for family in period["families"]
            for meter in family["meters"]
            for resource in meter["resources"]
        )
    return figures


def bench_long_run(folder: Path, batches: int) -> dict[str, Any]:
    """One sender posting ``batches`` batches of 1,000 new events, one after the other (each
    its own ingest and stored part): whether a batch costs the same at the end as at the
    start, the store's parts being compacted as they pile up."""
    organizations = [f"org-{index:05d}" for index in range(100)]
    api_workspace = workspace(folder / "long", organizations)
    key = admin_key(api_workspace, organizations)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    seconds: list[float] = []
    with (
        ServerProcess(api_workspace.root) as base,
        httpx.Client(base_url=base, timeout=120) as client,
    ):
        for number in range(batches):
            batch = [{**event, "id": f"b{number}-{event['id']}"} for event in FIRST_BATCH]
            body = json.dumps({"events": batch}).encode()
            sent = time.perf_counter()
            response = client.post("/v1/events", headers=headers, content=body)
            seconds.append(time.perf_counter() - sent)
            if response.status_code != 200 or response.json()["accepted"] != BATCH:
                raise RuntimeError(f"{response.status_code} {response.text[:500]}")
    tenth = max(1, batches // 10)
    parts = list(api_workspace.usage_dir.glob("month=*/part-*.parquet"))
    return {
        "batches": batches,
        "first_tenth_p50_ms": round(statistics.median(seconds[:tenth]) * 1000, 1),
        "last_tenth_p50_ms": round(statistics.median(seconds[-tenth:]) * 1000, 1),
        "last_tenth_p99_ms": round(_percentile(seconds[-tenth:], 0.99) * 1000, 1),
        "parts_at_the_end": len(parts),
        "ingests": ingests_of(api_workspace),
    }


FIRST_BATCH = events_in_memory(BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events posted in batches")
    parser.add_argument("--big-events", type=int, default=1_000_000, help="the big org's events")
    parser.add_argument("--requests", type=int, default=200, help="drill-down requests timed")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/beanbill-bench-api"))
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--long-batches", type=int, default=0,
                        help="then one sender posts this many batches (compaction)")  # fmt: skip
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.serve, arguments.port, arguments.workers)
        return
    for name in ("events", "big_events"):
        if not BATCH <= getattr(arguments, name) <= MAX_EVENTS:
            parser.error(f"--{name.replace('_', '-')} must be between {BATCH} and {MAX_EVENTS}")
    if not 10 <= arguments.requests <= 10_000:
        parser.error("--requests must be between 10 and 10,000")
    arguments.folder.mkdir(parents=True, exist_ok=True)
    print(
        json.dumps(
            {"events_in": bench_events(arguments.folder, arguments.events, arguments.workers)}
        ),
        flush=True,
    )
    drill_down = bench_drill_down(arguments.folder, arguments.big_events, arguments.requests)
    print(json.dumps({"drill_down": drill_down}), flush=True)
    if arguments.long_batches:
        long_run = bench_long_run(arguments.folder, arguments.long_batches)
        print(json.dumps({"long_run": long_run}), flush=True)


if __name__ == "__main__":
    main()
