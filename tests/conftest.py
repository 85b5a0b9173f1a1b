"""Shared fixtures: real workspaces on disk, real DuckDB, real Ibis, a real Stripe peer; no mocks.

The builders they use are in tests/support.py (the benchmarks use them too).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from beanbill.examples import SETTINGS
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import post, record_credit
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from beanbill.stripe_peer import API_KEY, reset, running_localstripe
from tests.peers.tryton import PASSWORD, PASSWORD_ENV, TrytonPeer, running_tryton
from tests.stripe_contract_check import log_problems
from tests.support import (
    SMALL_CATALOG,
    Issued,
    customer,
    october_usage,
    write_jsonl,
    write_workspace,
)

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Workspace]:
    """Write a workspace from dicts (TOML on disk) and load it through the real loader."""

    def make(
        catalog: dict[str, Any] | None = None,
        customers: list[dict[str, Any]] | None = None,
        timezone: str = "UTC",
        name: str = "ws",
        sync: dict[str, Any] | None = None,
        ledger: dict[str, Any] | None = None,
        invoicing: dict[str, Any] | None = None,
    ) -> Workspace:
        settings = copy.deepcopy(SETTINGS)
        settings["billing"]["timezone"] = timezone
        if sync is not None:
            settings["sync"] = sync
        if ledger is not None:
            settings["ledger"] = ledger
        if invoicing is not None:
            settings["invoicing"] = {**settings.get("invoicing", {}), **invoicing}
        return write_workspace(
            tmp_path / name, settings, catalog or SMALL_CATALOG, customers or [customer("acme")]
        )

    return make


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """localstripe on loopback, one per test module (tests reset it when they need it empty).

    The peer logs every request beanbill made (the test driver's own are not logged); at
    the end of the module each is checked against the stripe SDK's parameter types for the
    pinned API version: a parameter Stripe does not have fails the suite.
    """
    log = tmp_path_factory.mktemp("stripe-requests") / "requests.jsonl"
    with running_localstripe(request_log=log) as url:
        yield url
    problems = log_problems(log)
    assert problems == [], "requests Stripe would refuse:\n" + "\n".join(problems)


@pytest.fixture
def tryton(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrytonPeer]:
    """A real trytond 8.0 on loopback serving a fresh copy of the set-up template database
    (tests/peers/tryton.py installs and builds it on first use), its password in the env."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with running_tryton(tmp_path / "tryton") as peer:
        yield peer


@pytest.fixture
def issued(
    make_workspace: Callable[..., Workspace],
    tmp_path: Path,
    localstripe: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Issued:
    """A workspace with October invoiced (postpaid, prepaid, provisioned, central)."""
    reset(localstripe)
    monkeypatch.setenv("STRIPE_SECRET_KEY", API_KEY)

    def make(
        stripe: dict[str, Any] | None = None,
        name: str = "ws",
        invoicing: dict[str, Any] | None = None,
        **sync: Any,
    ) -> Workspace:
        peer = {"api_base": localstripe, "timeout_seconds": 1, "requests_per_second": 100}
        settings = {
            "attempts": 8,
            "concurrency": 2,
            "max_wait_seconds": 1,
            **sync,
            "stripe": {**peer, **(stripe or {})},
        }
        workspace = make_workspace(
            name=name,
            # credit bought by transfer, VAT at consumption unless a test says otherwise:
            # these workspaces are about consumption invoices (prepayment invoices:
            # tests/test_credits_vat.py)
            invoicing={"credits_vat": "at_consumption", **(invoicing or {})},
            customers=[
                customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320"),
                customer("team-a", billing_mode="postpaid", parent="fr-post"),
                customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
                customer("us-prov", billing_mode="provisioned", country="US"),
                customer("fr-small", billing_mode="postpaid"),
            ],
            sync=settings,
            # Credits are bought by bank transfer here, so that the Stripe balance holds
            # exactly what Stripe moved and reconciliation can compare the two.
            ledger={"credit_purchase_account": "Assets:Bank:Operating"},
        )  # fmt: skip
        orgs = [("fr-post", 10), ("team-a", 3), ("de-pre", 20), ("us-prov", 8), ("fr-small", 5)]
        records = [record for org, hours in orgs for record in october_usage(org, hours)]
        ingest(workspace, [write_jsonl(tmp_path / f"{name}.jsonl", records)])
        rate_months(workspace, [OCTOBER])
        record_credit(workspace, "de-pre", "purchase", "1.00", date(2026, 10, 1), None, 100, "d1")
        record_credit(workspace, "us-prov", "purchase", "0.50", date(2026, 10, 1), None, 100, "u1")
        post(workspace, OCTOBER, date(2026, 11, 2))
        issue(workspace, OCTOBER, ISSUE_DAY)
        return workspace

    return make
