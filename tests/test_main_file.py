"""The main ledger file: Beancount's own loader accepts it with zero errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from beancount import loader

from beanbill.examples import SETTINGS, example_ledger_text
from beanbill.ledger.main_file import main_ledger_text
from beanbill.ledger.text import LedgerTextError, quoted
from beanbill.rating.config import Catalog, Settings, parse_model

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


@pytest.mark.parametrize("name", ["Evil\n2026-01-01 open Assets:Stolen", "Bidi\u202eName"])
def test_control_and_direction_characters_are_refused(name: str) -> None:
    with pytest.raises(LedgerTextError):
        quoted(name)


def test_a_seller_name_with_quotes_and_backslashes_stays_inside_its_string(tmp_path: Path) -> None:
    name = 'A "B" \\ C" ; 2026-01-01 open Assets:Stolen EUR'
    settings = parse_model(
        Settings, {**SETTINGS, "seller": {**SETTINGS["seller"], "legal_name": name}}, "s"
    )
    path = tmp_path / "main.beancount"
    path.write_text(main_ledger_text(settings, Catalog()))
    entries, errors, options = loader.load_file(str(path))
    assert errors == []
    assert options["title"] == f"{name} - billing ledger"
    assert not any(getattr(entry, "account", "") == "Assets:Stolen" for entry in entries)
