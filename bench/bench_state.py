"""Shared state: invoice numbers and inbox events per second, SQLite against PostgreSQL.

    .venv/bin/python bench/bench_state.py --numbers 2000 --events 5000 --processes 4

For each store (SQLite in a temporary folder; PostgreSQL in a throwaway cluster of
tests/peers/postgres.py, durability off like the tests', so this measures locking and
round trips, not the disk): ``--processes`` processes assign ``--numbers`` numbers of one
series between them (distinct keys), then store ``--events`` webhook events (each sent by
two of them, as two replicas would receive it) and then claim and close them in batches
of 50. Reported: operations/s for each phase, and that the series is gapless and each
event kept and closed once. One process alone is the floor the shared runs compare with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.ledger.invoicing.numbering import numbers_at  # noqa: E402
from beanbill.rating.config import StateSettings  # noqa: E402
from beanbill.sync.state import state_at  # noqa: E402
from tests.peers.postgres import PASSWORD, PASSWORD_ENV, start  # noqa: E402

WORKER = """
import sys
from datetime import date
from pathlib import Path
from beanbill.ledger.invoicing.numbering import numbers_at
from beanbill.rating.config import StateSettings
from beanbill.sync.state import state_at
folder, url, phase, index, count, processes = sys.argv[1:7]
settings = StateSettings(url=url or None, password_env=sys.argv[7])
index, count, processes = int(index), int(count), int(processes)
if phase == "numbers":
    numbers = numbers_at(Path(folder), settings)
    for n in range(index, count, processes):
        numbers.assign(f"INV-P{processes}", f"invoice:org-{n}:p{processes}", date(2026, 11, 1))
elif phase == "store":
    state = state_at(Path(folder), settings)
    for n in range(count):
        if n % processes in (index, (index + 1) % processes):  # each event by two
            state.store_event("stripe", f"evt_{n}", "payout.paid", {"n": n})
else:
    state = state_at(Path(folder), settings)
    for _ in range(count):  # bounded: at most one batch per event
        batch = state.unprocessed_events("stripe", 50)
        if not batch:
            break
        state.mark_processed("stripe", {e.event_id: "posted" for e in batch})
"""


def run_phase(
    folder: Path, settings: StateSettings, phase: str, count: int, processes: int
) -> float:
    """Seconds from the first start to the last end of ``processes`` workers."""
    started = time.perf_counter()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(folder),
                settings.url or "",
                phase,
                str(index),
                str(count),
                str(processes),
                settings.password_env,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for index in range(processes)
    ]
    for worker in workers:
        _, problem = worker.communicate(timeout=600)
        if worker.returncode != 0:
            raise SystemExit(problem.decode()[-2000:])
    return time.perf_counter() - started


def measure(name: str, settings: StateSettings, numbers: int, events: int, processes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        state_at(Path(folder), settings)  # the schema, before the race
        for shared in sorted({1, processes}):  # one process alone: the floor
            seconds = run_phase(Path(folder), settings, "numbers", numbers, shared)
            store = numbers_at(Path(folder), settings)
            values = [a.value for a in store.all() if a.series == f"INV-P{shared}"]
            gapless = values == list(range(1, numbers + 1))
            print(f"{name:10} numbers  {shared} process(es): {numbers / seconds:8.0f}/s "
                  f"(gapless: {gapless})")  # fmt: skip
        seconds = run_phase(Path(folder), settings, "store", events, processes)
        state = state_at(Path(folder), settings)
        kept = sum(state.inbox_counts("stripe").values())
        print(f"{name:10} store    {processes} process(es): {2 * events / seconds:8.0f}/s "
              f"(kept once: {kept == events})")  # fmt: skip
        seconds = run_phase(Path(folder), settings, "claim", events, processes)
        closed = state.inbox_counts("stripe").get("posted", 0)
        print(f"{name:10} claim    {processes} process(es): {events / seconds:8.0f}/s "
              f"(closed once: {closed == events})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numbers", type=int, default=2000)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=4)
    arguments = parser.parse_args()
    measure("sqlite", StateSettings(), arguments.numbers, arguments.events, arguments.processes)
    peer = start()
    os.environ[PASSWORD_ENV] = PASSWORD
    try:
        with peer.database() as url:
            settings = StateSettings(url=url, password_env=PASSWORD_ENV)
            measure("postgresql", settings, arguments.numbers, arguments.events,
                    arguments.processes)  # fmt: skip
    finally:
        peer.stop()


if __name__ == "__main__":
    main()
