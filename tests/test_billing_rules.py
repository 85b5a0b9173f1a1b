"""Billing rules a finance team can defend: currencies' minor units, refused codes."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pytest
from beancount import loader
from pydantic import ValidationError

from beanbill.examples import SETTINGS
from beanbill.ledger.entries import format_minor, minor_digits
from beanbill.ledger.post import balance, post
from beanbill.rating.config import BillingSettings
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from tests.support import SMALL_CATALOG, customer, october_usage, write_jsonl, write_workspace


@pytest.mark.parametrize(
    ("currency", "digits", "shown"),
    [("EUR", 2, "123.45"), ("JPY", 0, "12345"), ("CLP", 0, "12345"), ("KWD", 3, "12.345")],
)
def test_minor_units_come_from_iso_4217(currency: str, digits: int, shown: str) -> None:
    assert minor_digits(currency) == digits
    assert format_minor(12345, currency) == shown


@pytest.mark.parametrize("code", ["ABC", "XXX", "XTS", "XAU", "CLF", "eur", "EURO"])
def test_codes_that_are_no_currency_to_invoice_in_are_refused(code: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        BillingSettings(currency=code)


def test_a_workspace_in_chilean_pesos_posts_whole_pesos(tmp_path: Path) -> None:
    """CLP has no minor unit (ISO 4217): amounts are whole pesos, never cents of one."""
    settings = copy.deepcopy(SETTINGS)
    settings["billing"]["currency"] = "CLP"
    prices = copy.deepcopy(SMALL_CATALOG)
    prices["meter"][0]["price"][0]["price"] = "0.0694444444"  # 250 CLP per vCPU-hour
    workspace = write_workspace(
        tmp_path / "ws", settings, prices, [customer("acme", currency="CLP")]
    )
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", october_usage("acme", 10))])
    rate_months(workspace, [Month(2026, 10)])
    post(workspace, Month(2026, 10), date(2026, 11, 2))
    text = "".join(p.read_text() for p in (workspace.root / "books").rglob("*.beancount"))
    assert " CLP" in text and not [
        line for line in text.splitlines() if " CLP" in line and "." in line.split()[-2]
    ]
    # 2 vCPU × 10 h × 250 CLP + 150.5 GB beyond the free 100 × 0.01 (1.505 → 2 pesos)
    assert balance(workspace, "acme").unbilled_minor == 5_000 + 2
    assert loader.load_file(str(workspace.ledger_path))[1] == []
