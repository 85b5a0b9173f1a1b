"""Billing rules a finance team can defend: currencies' minor units, refused codes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from beancount import loader
from pydantic import ValidationError

from beanbill.examples import SETTINGS
from beanbill.ledger.entries import format_minor, minor_digits
from beanbill.ledger.post import balance, post
from beanbill.rating.config import BillingSettings
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import SMALL_CATALOG, customer, october_usage, write_jsonl, write_workspace


def hourly_catalog(price: str) -> dict[str, Any]:
    """The tests' small catalog with its vCPU priced per vCPU-hour, as providers publish."""
    catalog = copy.deepcopy(SMALL_CATALOG)
    catalog["meter"][0]["per"] = "hour"
    catalog["meter"][0]["price"][0]["price"] = price
    return catalog


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
    prices = hourly_catalog("250")  # 250 CLP per vCPU-hour, exactly
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


def test_a_week_across_two_months_is_posted_in_each_month(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Week 44 of 2026 runs Mon Oct 26 – Sun Nov 1. October's usage is posted when October
    ends (dated Oct 31), November's when the week ends (dated Nov 1); one invoice."""
    from beanbill.ledger.books import load_books
    from beanbill.ledger.invoicing.documents import load_document
    from beanbill.ledger.invoicing.issue import issue

    workspace = make_workspace(
        catalog=hourly_catalog("0.025"), customers=[customer("wk", period="weekly")]
    )
    usage = [
        {"id": "oct", "org": "wk", "resource": "wk/app", "meter": "cpu",
         "start": "2026-10-30T00:00:00Z", "end": "2026-10-30T10:00:00Z", "quantity": "2"},
        {"id": "nov", "org": "wk", "resource": "wk/app", "meter": "cpu",
         "start": "2026-11-01T00:00:00Z", "end": "2026-11-01T05:00:00Z", "quantity": "2"},
    ]  # fmt: skip
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", usage)])
    rate_months(workspace, [Month(2026, 10)])

    def usage_entries() -> dict[str, tuple[date, int]]:
        books = load_books(workspace.ledger_path, "EUR")
        found = {}
        for txn_id in sorted(books.txn_ids()):
            if txn_id.startswith("usage:"):
                entry = books.transaction(txn_id)
                unbilled = [p.amount_minor for p in entry.postings if "Unbilled" in p.account]
                found[txn_id] = (entry.date, sum(unbilled))
        return found

    post(workspace, Month(2026, 10), date(2026, 11, 1))  # October has ended, the week not
    assert usage_entries() == {"usage:wk:2026-W44": (date(2026, 10, 31), 50)}  # 20 vCPU-h
    assert issue(workspace, Month(2026, 11), date(2026, 11, 1)).issued == ()  # not yet
    post(workspace, Month(2026, 10), date(2026, 11, 2))
    assert usage_entries() == {
        "usage:wk:2026-W44": (date(2026, 10, 31), 50),
        "usage:wk:2026-W44:2026-11-01": (date(2026, 11, 1), 25),  # 10 vCPU-h
    }
    [number] = issue(workspace, Month(2026, 11), date(2026, 11, 3)).issued
    document = load_document(workspace.invoices_dir / f"{number}.json")
    assert document.net_minor == 75 and len(document.lines) == 2
    assert "2026-10-26 – 2026-10-31" in document.lines[0].description
    assert balance(workspace, "wk").unbilled_minor == 0
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def test_check_refuses_a_currency_code_iso_4217_does_not_have(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from beanbill.cli import main
    from beanbill.exits import EXIT_ERROR

    settings = copy.deepcopy(SETTINGS)
    settings["billing"]["currency"] = "EUX"
    write_workspace(tmp_path / "ws", copy.deepcopy(SETTINGS), SMALL_CATALOG, [customer("a")])
    (tmp_path / "ws" / "beanbill.toml").write_text(tomli_w.dumps(settings))
    result = CliRunner().invoke(main, ["check", "-w", str(tmp_path / "ws")])
    assert result.exit_code == EXIT_ERROR
    assert "'EUX' is not an ISO 4217 currency code" in result.output
    assert "Traceback" not in result.output


def test_a_week_with_no_usage_in_its_second_month_is_still_invoiced(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Week 44 used only on Oct 30: there is no November part; the invoice follows the
    October part once the week has ended."""
    from beanbill.ledger.invoicing.issue import issue

    workspace = make_workspace(
        catalog=hourly_catalog("0.025"), customers=[customer("wk", period="weekly")]
    )
    usage = [
        {
            "id": "oct",
            "org": "wk",
            "resource": "wk/app",
            "meter": "cpu",
            "start": "2026-10-30T00:00:00Z",
            "end": "2026-10-30T10:00:00Z",
            "quantity": "2",
        }
    ]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", usage)])  # fmt: skip
    rate_months(workspace, [Month(2026, 10)])
    post(workspace, Month(2026, 10), date(2026, 11, 2))
    [number] = issue(workspace, Month(2026, 11), date(2026, 11, 3)).issued
    assert number and balance(workspace, "wk").unbilled_minor == 0


@pytest.mark.parametrize(
    ("subscription", "why"),
    [
        ({"start": datetime(2026, 10, 31, 14)}, "timezone"),  # a naive time: which zone?
        ({"start": date(2026, 10, 31), "end": date(2026, 10, 30)}, "ends before it starts"),
        ({"start": "2026-10-31T14:00:00Z", "end": "2026-10-31T14:00:00Z"}, "ends before"),
        ({"start": "yesterday"}, "start"),
    ],
)
def test_add_on_subscriptions_that_mean_nothing_are_refused(
    subscription: dict[str, object], why: str
) -> None:
    from beanbill.rating.config import AddonSubscription, ConfigError, parse_model

    with pytest.raises(ConfigError, match=why):
        parse_model(AddonSubscription, {"addon": "backup", **subscription}, "customers.toml")


@pytest.mark.parametrize(
    ("meter", "why"),
    [
        ({"kind": "counter", "minimum_seconds": 60}, "interval meters only"),
        ({"kind": "interval", "minimum_seconds": 86_401}, "less than or equal to 86400"),
        ({"kind": "interval", "minimum_seconds": -1}, "greater than or equal to 0"),
        ({"kind": "interval", "minimum_seconds": 1.5}, "integer"),
    ],
)
def test_minimum_seconds_is_bounded_and_for_intervals(meter: dict[str, object], why: str) -> None:
    from beanbill.rating.config import ConfigError, Meter, parse_model

    base = {"id": "m", "name": "M", "unit": "GB", "family": "Storage",
            "price": [{"effective": date(2026, 1, 1), "price": "0.01"}]}  # fmt: skip
    with pytest.raises(ConfigError, match=why):
        parse_model(Meter, {**base, **meter}, "catalog.toml")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"per": "million"},
            "meter[0] (cpu): Value error, per = 'million' is not a basis of interval",
        ),
        ({"per": "fortnight"}, "meter[0] (cpu).per: Input should be 'second', 'minute'"),
        (
            {"unit_code": "GBM"},
            "meter[0] (cpu).unit_code: Value error, unit_code 'GBM' is not a UN/ECE",
        ),
        ({"unit_code": "C62"}, "unit_code 'C62' does not fit interval meters"),
    ],
)
def test_check_says_which_meter_has_a_basis_or_unit_code_that_does_not_fit(
    tmp_path: Path, change: dict[str, str], why: str
) -> None:
    """`beanbill check` names the file, the meter and the field, without a traceback."""
    from click.testing import CliRunner

    from beanbill.cli import main
    from beanbill.exits import EXIT_ERROR
    from beanbill.rating.workspace import CATALOG_FILE

    catalog = hourly_catalog("0.025")
    write_workspace(tmp_path / "ws", copy.deepcopy(SETTINGS), catalog, [customer("a")])
    catalog["meter"][0] |= change
    (tmp_path / "ws" / CATALOG_FILE).write_text(tomli_w.dumps(catalog))
    result = CliRunner().invoke(main, ["check", "-w", str(tmp_path / "ws")])
    assert result.exit_code == EXIT_ERROR
    assert "catalog.toml" in result.output and why in result.output
    assert "Traceback" not in result.output


def test_a_price_per_hour_bills_each_second_and_posts_the_rounded_sum(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """0.025 per vCPU-hour for 2.5 vCPU × 91 s a day: 0.0015798611… a day, rounded once to
    the atto per rated row; the only rounding that reaches money is the posting's."""
    from fractions import Fraction

    import duckdb

    workspace = make_workspace(catalog=hourly_catalog("0.025"))
    usage = [{"id": f"s{day}", "org": "acme", "resource": "app", "meter": "cpu",
              "start": f"2026-10-{day:02d}T08:00:00Z", "end": f"2026-10-{day:02d}T08:01:31Z",
              "quantity": "2.5"} for day in range(1, 32)]  # fmt: skip
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", usage)])
    rate_months(workspace, [Month(2026, 10)])
    lines = workspace.rated_dir / "month=2026-10" / "lines.parquet"
    amounts = duckdb.sql(f"SELECT DISTINCT amount_atto FROM '{lines}'").fetchall()
    exact = Fraction("2.5") * 91 * Fraction("0.025") / 3600
    assert amounts == [(round(exact * 10**18),)] == [(1_579_861_111_111_111,)]
    post(workspace, Month(2026, 10), date(2026, 11, 2))
    assert balance(workspace, "acme").unbilled_minor == 5  # 31 rows: 0.04897… → 0.05
