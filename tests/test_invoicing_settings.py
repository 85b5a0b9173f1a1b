"""Hostile settings for invoicing: bank details, minimum amount, OSS rates, credit-note reasons.

Each is refused with the field that is wrong, before any number is spent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from beanbill.examples import SETTINGS
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.corrections import checked_reason
from beanbill.rating.config import InvoicingSettings, Seller, parse_model
from beanbill.rating.errors import ConfigError
from beanbill.rating.workspace import Workspace


def seller(**changes: Any) -> Seller:
    fields = {**copy.deepcopy(SETTINGS["seller"]), **changes}
    return parse_model(Seller, fields, "settings.toml")


def test_bank_details_are_checked_offline_and_kept_compact() -> None:
    checked = seller(iban="fr76 3000 6000 0112 3456 7890 189", bic="BNPAFRPP")
    assert checked.iban == "FR7630006000011234567890189"
    with pytest.raises(ConfigError, match=r"iban: .*IBAN 'FR7630006000011234567890188'"):
        seller(iban="FR7630006000011234567890188")  # one check digit off
    with pytest.raises(ConfigError, match="BIC"):
        seller(iban="FR7630006000011234567890189", bic="BNP!FRPP")
    with pytest.raises(ConfigError, match="without the IBAN"):
        seller(iban=None, bic="BNPAFRPP")
    with pytest.raises(ConfigError, match="IBAN"):
        seller(iban="FR76\u202e3000600001123456789018")  # a bidi override in a bank account


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("minimum_amount", "-1", "must be a finite number >= 0"),
        ("minimum_amount", "NaN", "finite number"),
        ("minimum_amount", "1e400", "above the largest"),
        ("credits_vat", "at_sale", "at_purchase"),
        ("oss_rates", {"US": "8"}, "EU countries only"),
        ("oss_rates", {"DE": "101"}, "less than or equal to 100"),
        ("oss_rates", {"de": "19"}, "ISO 3166"),
    ],
)
def test_invoicing_settings_refuse_what_would_bill_wrong(field: str, value: Any, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_model(InvoicingSettings, {field: value}, "settings.toml")


def test_a_workspace_refuses_a_bad_minimum_naming_file_and_field(
    make_workspace: Callable[..., Workspace],
) -> None:
    with pytest.raises(ConfigError, match=r"(?s)beanbill\.toml.*invoicing\.minimum_amount"):
        make_workspace(invoicing={"minimum_amount": "-0.01"})


@pytest.mark.parametrize(
    "reason",
    ["", "   ", "two\nlines", "a\x00nul", "bidi \u202e override", "x" * 301, "\ufffe"],
)
def test_a_credit_note_reason_is_one_line_of_printable_text(reason: str) -> None:
    with pytest.raises(InvoicingError):
        checked_reason(reason)


def test_a_reason_is_kept_as_written_less_surrounding_blanks() -> None:
    text = 'Wrong VAT id <b> & "quotes" - été'
    assert checked_reason(f"  {text} ") == text
