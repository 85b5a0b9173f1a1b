"""The Stripe test peer: localstripe runs here, on loopback, and the real stripe SDK talks to it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def localstripe() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.localstripe_launcher", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_stripe_sdk_creates_and_finds_a_customer_on_localstripe(localstripe: str) -> None:
    client = stripe.StripeClient("sk_test_beanbill", base_addresses={"api": localstripe})
    created = client.v1.customers.create(
        params={
            "name": "Acme SAS",
            "email": "billing@acme.example",
            "metadata": {"beanbill_org": "org-0001"},
        }
    )
    assert created.id.startswith("cus_")
    found = client.v1.customers.retrieve(created.id)
    assert found.metadata["beanbill_org"] == "org-0001"
    item = client.v1.invoice_items.create(
        params={
            "customer": created.id,
            "amount": 1234,
            "currency": "eur",
            "description": "vCPU",
        }
    )
    assert item.amount == 1234


def test_localstripe_listens_on_loopback_only(localstripe: str) -> None:
    port = int(localstripe.rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.settimeout(1)
        outside = probe.connect_ex((socket.gethostbyname(socket.gethostname()), port))
    assert outside != 0 or socket.gethostbyname(socket.gethostname()).startswith("127.")
