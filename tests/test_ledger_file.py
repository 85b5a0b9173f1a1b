"""The main ledger file: Beancount's own loader accepts it with zero errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from beancount import loader

from beanbill.examples import SETTINGS, example_ledger_text
from ledger.main_file import LedgerTextError, beancount_string, main_ledger_text
from rating.config import Catalog, Settings, parse_model

ROOT = Path(__file__).resolve().parent.parent


def test_repository_ledger_is_the_example_workspace_ledger_and_loads_cleanly() -> None:
    path = ROOT / "ledger.beancount"
    assert path.read_text() == example_ledger_text()
    entries, errors, options = loader.load_file(str(path))
    assert errors == []
    assert options["operating_currency"] == ["EUR"]
    opened = {entry.account for entry in entries if type(entry).__name__ == "Open"}
    assert {"Income:Usage:Compute", "Income:Usage:Network", "Income:Usage:Storage",
            "Income:Addons", "Income:Services", "Liabilities:VAT:Output"} <= opened  # fmt: skip


@pytest.mark.parametrize(
    "name", ['Evil" \n2026-01-01 open Assets:Stolen', "Back\\slash", "Bidi\u202eName"]
)
def test_hostile_seller_names_cannot_reach_the_ledger(name: str) -> None:
    with pytest.raises(LedgerTextError):
        beancount_string(name)


def test_a_seller_name_with_quotes_is_refused_before_writing() -> None:
    settings = parse_model(
        Settings, {**SETTINGS, "seller": {**SETTINGS["seller"], "legal_name": 'A "B" C'}}, "s"
    )
    with pytest.raises(LedgerTextError):
        main_ledger_text(settings, Catalog())
