"""Drive the localstripe peer: start it, reset it, pay invoices, inspect it.

The demo (``beanbill demo``) and the tests both use it, so it lives in the package: an
installed wheel has no ``tests/``. localstripe itself (the ``demo`` extra) is imported only
by the launcher process (``python -m beanbill.stripe_peer.launcher PORT``), so importing
this module needs nothing beyond beanbill's own dependencies.

Everything goes through the real stripe SDK or localstripe's own (and the launcher's
documented) endpoints; nothing here imitates Stripe.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import stripe

STARTUP_SECONDS = 30
STOP_SECONDS = 10
API_KEY = "sk_test_beanbill"
LAUNCHER = "beanbill.stripe_peer.launcher"


def localstripe_installed() -> bool:
    """Whether the peer can start: localstripe is optional (``pip install 'beanbill[demo]'``)."""
    return importlib.util.find_spec("localstripe") is not None


def free_port() -> int:
    """A loopback port free now, so parallel runs never share a peer or a webhook server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> None:
    """Return once ``process`` accepts connections; kill it if it died or took too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)


@contextmanager
def running_localstripe() -> Iterator[str]:
    """A fresh localstripe on loopback for the block's duration; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", LAUNCHER, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, server, STARTUP_SECONDS)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=STOP_SECONDS)


def client(url: str) -> stripe.StripeClient:
    """The real stripe SDK pointed at the peer, so the peer is driven the way Stripe is."""
    return stripe.StripeClient(API_KEY, base_addresses={"api": url})


def reset(url: str) -> None:
    """Wipe the peer's account (objects, idempotency keys, sent events) between tests."""
    httpx.delete(f"{url}/_config/data", auth=(API_KEY, "")).raise_for_status()


def register_webhook(url: str, target: str, secret: str) -> None:
    """Have the peer sign and deliver its events to ``target``, as a Stripe endpoint would."""
    response = httpx.post(
        f"{url}/_config/webhooks/beanbill", data={"url": target, "secret": secret}
    )
    response.raise_for_status()


def pay(url: str, invoice_id: str, card: str = "4242424242424242") -> stripe.Invoice:
    """Pay like a customer would: a card set as the default, then the invoice paid."""
    api = client(url).v1
    invoice = api.invoices.retrieve(invoice_id)
    method = api.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    customer = str(invoice.customer)
    api.payment_methods.attach(str(method.id), params={"customer": customer})
    api.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": str(method.id)}}
    )
    return api.invoices.pay(invoice_id)


def beanbill_invoices(url: str) -> list[stripe.Invoice]:
    """The peer's invoices that beanbill pushed (they carry ``beanbill_number``)."""
    return [
        invoice
        for invoice in client(url).v1.invoices.list(params={"limit": 100}).auto_paging_iter()
        if invoice.metadata and "beanbill_number" in invoice.metadata.to_dict()
    ]


def dispute(url: str, charge_id: str) -> str:
    """Open a dispute on a charge (the launcher's test-only endpoint), as a test card would."""
    response = httpx.post(
        f"{url}/_beanbill/disputes", data={"charge": charge_id}, auth=(API_KEY, "")
    )
    response.raise_for_status()
    return str(response.json()["id"])
