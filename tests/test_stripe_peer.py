"""The Stripe test peer: localstripe runs here, on loopback, and the real stripe SDK talks to it."""

from __future__ import annotations

import socket

import stripe


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
