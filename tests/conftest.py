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
    ) -> Workspace:
        settings = copy.deepcopy(SETTINGS)
        settings["billing"]["timezone"] = timezone
        if sync is not None:
            settings["sync"] = sync
        return write_workspace(
            tmp_path / name, settings, catalog or SMALL_CATALOG, customers or [customer("acme")]
        )

    return make


@pytest.fixture(scope="module")
def localstripe() -> Iterator[str]:
    """localstripe on loopback, one per test module (tests reset it when they need it empty)."""
    with running_localstripe() as url:
        yield url


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

    def make(**sync: Any) -> Workspace:
        settings = {
            "attempts": 8,
            "concurrency": 2,
            "max_wait_seconds": 1,
            **sync,
            "stripe": {"api_base": localstripe, "timeout_seconds": 1, "requests_per_second": 100},
        }
        workspace = make_workspace(
            customers=[
                customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320"),
                customer("team-a", billing_mode="postpaid", parent="fr-post"),
                customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
                customer("us-prov", billing_mode="provisioned", country="US"),
                customer("fr-small", billing_mode="postpaid"),
            ],
            sync=settings,
        )  # fmt: skip
        orgs = [("fr-post", 10), ("team-a", 3), ("de-pre", 20), ("us-prov", 8), ("fr-small", 5)]
        records = [record for org, hours in orgs for record in october_usage(org, hours)]
        ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
        rate_months(workspace, [OCTOBER])
        record_credit(workspace, "de-pre", "purchase", "1.00", date(2026, 10, 1), None, 100, "d1")
        record_credit(workspace, "us-prov", "purchase", "0.50", date(2026, 10, 1), None, 100, "u1")
        post(workspace, OCTOBER, date(2026, 11, 2))
        issue(workspace, OCTOBER, ISSUE_DAY)
        return workspace

    return make
