"""Drive the localstripe peer: start it, reset it, pay invoices, inspect it.

The demo (``beanbill demo``) and the tests both use it, so it lives in the package: an
installed wheel has no ``tests/``. localstripe itself (the ``demo`` extra) is imported only
by the launcher process (``python -m beanbill.stripe_peer.launcher PORT``), so importing
this module needs nothing beyond beanbill's own dependencies.

Two keys: the code under test uses ``API_KEY``; every helper here (the "driver": a test
playing the customer, the card network or Stripe's back office) uses ``DRIVER_KEY``, so the
peer's request log (``BEANBILL_STRIPE_PEER_REQUEST_LOG``) holds the code's requests only.

Everything goes through the real stripe SDK or localstripe's own (and the launcher's
documented, test-only ``/_beanbill/...``) endpoints; nothing here imitates Stripe.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import stripe

from beanbill.ports import free_port as free_port  # the demo and bench_sync ask here

STARTUP_SECONDS = 30
STOP_SECONDS = 10
API_KEY = "sk_test_beanbill"  # the code under test
DRIVER_KEY = "sk_test_peer_driver"  # the helpers below: never in the request log
API_VERSION = "2026-10-28.endive"  # stripe-python 16.1 pins it; events carry it by default
REQUEST_LOG_ENV = "BEANBILL_STRIPE_PEER_REQUEST_LOG"
LAUNCHER = "beanbill.stripe_peer.launcher"
DRIVER_AUTH = (DRIVER_KEY, "")


def localstripe_installed() -> bool:
    """Whether the peer can start: localstripe is optional (``pip install 'beanbill[demo]'``)."""
    return importlib.util.find_spec("localstripe") is not None


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
def running_localstripe(request_log: Path | None = None) -> Iterator[str]:
    """A fresh localstripe on loopback for the block's duration; yields its base URL.

    With ``request_log``, the peer appends one JSON line per ``/v1/`` request not made with
    ``DRIVER_KEY`` (method, path, raw query, raw body) to that file."""
    port = free_port()
    env = dict(os.environ)
    env.pop(REQUEST_LOG_ENV, None)
    if request_log is not None:
        env[REQUEST_LOG_ENV] = str(request_log)
    server = subprocess.Popen(
        [sys.executable, "-m", LAUNCHER, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_for_port(port, server, STARTUP_SECONDS)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=STOP_SECONDS)


def client(url: str) -> stripe.StripeClient:
    """The driver's stripe SDK pointed at the peer (``DRIVER_KEY``: kept out of the log)."""
    return stripe.StripeClient(DRIVER_KEY, base_addresses={"api": url})


def _post(url: str, path: str, data: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(f"{url}{path}", data=data, auth=DRIVER_AUTH)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def reset(url: str) -> None:
    """Wipe the peer's account (objects, idempotency keys, sent events, settings)."""
    httpx.delete(f"{url}/_config/data", auth=DRIVER_AUTH).raise_for_status()


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


def dispute(url: str, charge_id: str, inquiry: bool = False) -> str:
    """Open a dispute (or an inquiry) on a charge, as test card 4000000000000259 would."""
    data = {"charge": charge_id}
    if inquiry:
        data["inquiry"] = "true"
    return str(_post(url, "/_beanbill/disputes", data)["id"])


def close_dispute(url: str, dispute_id: str, won: bool) -> None:
    """The card network's decision: won (funds reinstated) or lost; an inquiry just closes."""
    _post(url, f"/_beanbill/disputes/{dispute_id}/close", {"status": "won" if won else "lost"})


def billing_fee(url: str, amount_minor: int) -> str:
    """Stripe books one of its own Billing fees on the balance; the balance transaction id."""
    return str(_post(url, "/_beanbill/billing_fee", {"amount": str(amount_minor)})["id"])


def configure(
    url: str, search_lag_seconds: float | None = None, api_version: str | None = None
) -> None:
    """Runtime settings: search lag (customers newer than it are not found by search) and
    the API version later events carry. ``reset`` restores 0 and ``API_VERSION``."""
    data: dict[str, str] = {}
    if search_lag_seconds is not None:
        data["search_lag_seconds"] = str(search_lag_seconds)
    if api_version is not None:
        data["api_version"] = api_version
    _post(url, "/_beanbill/config", data)


CARD = "4242424242424242"  # Stripe's test Visa


def card_payment(url: str, amount_minor: int, currency: str = "eur") -> str:
    """A card payment outside any invoice (prepaid credits bought at checkout); its charge."""
    api = client(url).v1
    method = api.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": CARD, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    intent = api.payment_intents.create(
        params={
            "amount": amount_minor,
            "currency": currency,
            "payment_method": str(method.id),
            "confirm": True,
        }
    )
    return str(intent.latest_charge)


def payout(url: str, amount_minor: int, currency: str = "eur") -> str:
    """A payout to the bank, created and then paid (the bank's confirmation); its id."""
    created = client(url).v1.payouts.create(params={"amount": amount_minor, "currency": currency})
    _post(url, f"/_beanbill/payouts/{created.id}/paid", {})
    return str(created.id)


def fail_next(url: str, path: str) -> None:
    """The next POST to ``path`` (an fnmatch pattern: ``/v1/invoices/*/finalize``) runs,
    then answers 500 (saved under its idempotency key)."""
    _post(url, "/_beanbill/fail_next", {"path": path})


def balance_minor(url: str, currency: str = "eur") -> int:
    """The account's Stripe balance in ``currency`` (available + pending), in minor units."""
    found = client(url).v1.balance.retrieve()
    available = sum(int(entry.amount) for entry in found.available if entry.currency == currency)
    pending = sum(int(entry.amount) for entry in found.pending if entry.currency == currency)
    return available + pending


def customer_balance(url: str, customer_id: str) -> int:
    """A customer's invoice balance (negative: a credit the next invoice consumes)."""
    return int(client(url).v1.customers.retrieve(customer_id).balance or 0)
