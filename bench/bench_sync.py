"""Sync: pushing invoices to Stripe (localstripe) under its rate limit, and receiving webhooks.

    .venv/bin/python bench/bench_sync.py --invoices 1000 --events 3000

Push: ``--invoices`` invoices (5 lines and VAT each, one customer per two invoices) go
through the real connector and sync engine to localstripe, behind a proxy that answers 429
beyond 25 requests/s like Stripe's test mode. Reported: invoices/s, API calls per invoice,
and utilization = achieved requests/s ÷ 25 (the floor is the limit itself: at 100 % the
push would take calls ÷ 25 seconds). An unthrottled push of a tenth as many measures what
localstripe and the engine do without a limit.

Webhooks: ``beanbill serve`` (a subprocess) receives ``--events`` signed ``payout.paid``
events from 8 concurrent senders (threads of two client processes, the bodies signed
beforehand); each is stored durably before its 200 and posted to
the ledger by the writer. Reported: events/s, p50/p99 latency, and how long the writer
took after the last answer to have posted everything. The floor is the same server's
``GET /health`` under the same load (a ratio, since machines are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from beanbill.connectors.stripe import STRIPE_API_VERSION, StripeConnector  # noqa: E402
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party  # noqa: E402
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment  # noqa: E402
from beanbill.rating.config import StripeSettings  # noqa: E402
from beanbill.stripe_peer import API_KEY, free_port, running_localstripe  # noqa: E402
from beanbill.sync.push import push_all  # noqa: E402
from beanbill.sync.retry import RetryPolicy  # noqa: E402
from beanbill.sync.state import SqliteSyncState  # noqa: E402
from tests.peers import postgres as postgres_peer  # noqa: E402
from tests.peers.fault_proxy import Fault, fault_proxy  # noqa: E402
from tests.peers.postgres import PASSWORD, PASSWORD_ENV  # noqa: E402
from tests.support import BEANBILL, stripe_signature  # noqa: E402

LIMIT_PER_SECOND = 25
SECRET = "whsec_bench"
SENDERS = 8
CLIENT_PROCESSES = 2  # the senders' processes (4 threads each)


def documents(count: int) -> list[InvoiceDocument]:
    vat = VatTreatment(VatCategory.STANDARD, Decimal(20), None, None)
    seller = Party("Seller SAS", ("1 rue de la Paix", "Paris"), "FR")
    result = []
    for index in range(count):
        buyer = Party(f"Customer {index // 2}", ("1 Main Street",), "FR", email="b@example.com")
        lines = tuple(
            InvoiceLine(str(n), f"Meter {n}", Decimal(n), "HUR", Decimal("0.5"), Decimal(1),
                        50 * n + index, vat)
            for n in range(1, 6)
        )  # fmt: skip
        result.append(
            InvoiceDocument(
                f"INV-B-{index:06d}", DocumentType.INVOICE, date(2026, 11, 5), date(2026, 12, 5),
                date(2026, 10, 1), date(2026, 10, 31), "EUR", seller, buyer, lines,
                buyer_reference=f"org-{index // 2:05d}",
            )
        )  # fmt: skip
    return result


class Window:
    """Stripe-like limit: more than ``limit`` requests in the last second get a 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.refused = 0

    def __call__(self, number: int, method: str, path: str) -> Fault:
        with self.lock:
            now = time.monotonic()
            self.times = [t for t in self.times if now - t < 1.0]
            if len(self.times) >= self.limit:
                self.refused += 1
                return Fault.RATE_LIMITED
            self.times.append(now)
            return Fault.NONE


def push_bench(url: str, count: int, per_second: int, label: str, limited: bool) -> list[str]:
    window = Window(LIMIT_PER_SECOND if limited else 10**9)
    with tempfile.TemporaryDirectory() as folder, fault_proxy(url, window) as proxy:
        settings = StripeSettings(api_base=proxy.url, requests_per_second=per_second)  # type: ignore[attr-defined]
        connector = StripeConnector(settings, API_KEY, None, 30, "UTC", "bench")
        run = "L" if limited else "U"  # each run its own numbers: Stripe wants them unique
        docs = [replace(d, number=f"{d.number}-{run}") for d in documents(count)]
        state = SqliteSyncState(Path(folder))
        started = time.perf_counter()
        summary = push_all(docs, [connector], state, RetryPolicy(attempts=8), 4)
        seconds = time.perf_counter() - started
    calls = proxy.count
    if summary.dead or len(summary.synced) != count:
        raise SystemExit(f"push failed: {summary.dead[:3]}")
    rate = calls / seconds
    utilization = f"{100 * rate / LIMIT_PER_SECOND:.0f} %" if limited else "-"
    return [
        label, f"{count:,}", f"{seconds:.1f}", f"{count / seconds:.2f}", f"{calls / count:.1f}",
        f"{rate:.1f}", f"{window.refused:,}", utilization,
    ]  # fmt: skip


def workspace_for_serve(folder: Path, state_url: str | None = None) -> Path:
    root = folder / "ws"
    subprocess.run([BEANBILL, "init", str(root)], check=True,
                   capture_output=True)  # fmt: skip
    with (root / "beanbill.toml").open("a") as settings:
        settings.write('\n[sync.stripe]\napi_base = "http://127.0.0.1:9"\n')
        if state_url is not None:
            settings.write(f'\n[state]\nurl = "{state_url}"\npassword_env = "{PASSWORD_ENV}"\n')
    return root


@contextlib.contextmanager
def durable_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL (tests/peers/postgres.py) made durable for the measure: the
    test cluster runs without fsync, which a benchmark of durability must not."""
    peer = postgres_peer.start()
    try:
        with peer.admin() as connection:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                connection.execute(f"ALTER SYSTEM SET {setting} = on")
            connection.execute("SELECT pg_reload_conf()")
        with peer.database() as url:
            yield url
    finally:
        peer.stop()


def event(index: int) -> bytes:
    payout = {"id": f"po_bench{index:07d}", "object": "payout", "amount": 100 + index,
              "currency": "eur", "created": 1_790_000_000, "arrival_date": 1_790_000_000,
              "status": "paid"}  # fmt: skip
    body = {"id": f"evt_bench{index:07d}", "type": "payout.paid",
            "api_version": STRIPE_API_VERSION, "data": {"object": payout}}  # fmt: skip
    return json.dumps(body).encode()


def _send_share(url: str, share: list[tuple[bytes, dict[str, str]] | None]) -> list[float]:
    """One sender: its requests in order on one keep-alive connection; each one's seconds.

    The standard library's ``http.client``, not httpx: the senders share the server's two
    cores, and httpx spends ~3x more CPU a request (Stripe's senders are not on our
    machine; the lighter the client, the more the figures measure the server)."""
    latencies = []
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for request in share:
            started = time.perf_counter()
            if request is None:
                connection.request("GET", "/health")
            else:
                body, headers = request
                connection.request("POST", "/webhooks/stripe", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"answered {answer.status}")
            latencies.append(time.perf_counter() - started)
    finally:
        connection.close()
    return latencies


def _client_process(
    url: str, shares: list[list[Any]], start: Any, results: Any
) -> None:  # pragma: no cover - runs in a client process
    start.wait()
    with ThreadPoolExecutor(len(shares)) as pool:
        results.put([s for latencies in pool.map(lambda share: _send_share(url, share), shares)
                     for s in latencies])  # fmt: skip


def load(url: str, bodies: list[bytes | None]) -> tuple[float, list[float]]:
    """Send every body (None: GET /health) from SENDERS senders, threads of
    CLIENT_PROCESSES processes (one Python process cannot send 1,000 requests/s: the floor
    would measure the client); each body signed beforehand, as a load generator prepares
    its requests. Wall time (from the start signal to the last answer) and latencies."""
    requests = [None if body is None else (body, stripe_signature(body, SECRET)) for body in bodies]
    shares = [requests[index::SENDERS] for index in range(SENDERS)]
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    clients = [
        context.Process(
            target=_client_process, args=(url, shares[index::CLIENT_PROCESSES], start, results)
        )
        for index in range(CLIENT_PROCESSES)
    ]
    for client in clients:
        client.start()
    time.sleep(0.5)  # the processes are up and waiting
    started = time.perf_counter()
    start.set()
    latencies = [s for _ in clients for s in results.get(timeout=600)]
    seconds = time.perf_counter() - started
    for client in clients:
        client.join(timeout=30)
        if client.exitcode != 0:
            raise RuntimeError(f"a client process failed: exit code {client.exitcode}")
    if len(latencies) != len(bodies):
        raise RuntimeError(f"{len(latencies)} answers for {len(bodies)} requests")
    return seconds, latencies


def posted_payouts(root: Path) -> int:
    folder = root / "books"
    return sum(p.read_text().count("stripe-payout:") for p in folder.glob("*/payments.beancount"))


def webhook_bench(count: int, state_url: str | None = None, workers: int = 1) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as folder:
        root = workspace_for_serve(Path(folder), state_url)
        port = free_port()
        environment = {**os.environ, "STRIPE_SECRET_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": SECRET,
                       PASSWORD_ENV: PASSWORD}  # fmt: skip
        server = subprocess.Popen(
            [BEANBILL, "serve", "-w", str(root), "--port", str(port), "--workers", str(workers)],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/health").raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            # The server rates the open periods once at start: measured after it.
            while httpx.get(f"{url}/health").json().get("provisional_ratings", 1) < 1:
                time.sleep(0.2)
            floor_seconds, floor_latencies = load(url, [None] * count)
            seconds, latencies = load(url, [event(i) for i in range(count)])
            answered = time.perf_counter()
            while posted_payouts(root) < count:
                time.sleep(0.05)
            behind = time.perf_counter() - answered
        finally:
            server.terminate()
            server.wait(timeout=30)
    rows = []
    for label, wall, lat in (("GET /health (floor)", floor_seconds, floor_latencies),
                             ("signed webhook → inbox", seconds, latencies)):  # fmt: skip
        ordered = sorted(lat)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        rows.append([label, f"{count:,}", f"{count / wall:,.0f}",
                     f"{statistics.median(ordered) * 1000:.1f}", f"{p99 * 1000:.1f}"])  # fmt: skip
    rows.append(["writer: posted all after last 200", "", "", "", f"{behind * 1000:.0f}"])
    rows.append(["ratio webhook / floor (events/s)", "", f"{floor_seconds / seconds:.2f}", "", ""])
    return rows


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--webhooks-only", action="store_true", help="skip the push part")
    parser.add_argument("--workers", type=int, default=1, help="`beanbill serve --workers`")
    args = parser.parse_args()
    if args.webhooks_only:
        header = ["webhooks", "events", "events/s", "p50 ms", "p99 ms"]
        print("SQLite (WAL, synchronous=FULL):")
        table(header, webhook_bench(args.events, workers=args.workers))
        print("\nPostgreSQL (fsync on, synchronous_commit on):")
        with durable_postgres() as state_url:
            table(header, webhook_bench(args.events, state_url, args.workers))
        return
    with running_localstripe() as url:
        rows = [
            push_bench(
                url, max(args.invoices // 10, 10), 100, "no limit (100 req/s pacing)", False
            ),
            push_bench(url, args.invoices, 24, "25 req/s limit", True),
        ]
    table(["push", "invoices", "s", "invoices/s", "calls/invoice", "req/s", "429s",
           "utilization"], rows)  # fmt: skip
    print()
    table(["webhooks", "events", "events/s", "p50 ms", "p99 ms"], webhook_bench(args.events))


if __name__ == "__main__":
    main()
