"""The Credits, Revenue and Sync pages of the Fava billing extension, figure by figure.

On the books ``test_fava_billing.build_books`` makes (beanbill's own posting and
invoicing, two grants, a sync state), each figure is checked against what beanquery
computes on its own from the same ledger, or against the sync state as written. The
pages themselves are then served by Fava's own application (no browser: that is
tests/test_fava_billing_browser.py), including for a customer whose name is hostile.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from beancount import loader
from beanquery.query import run_query
from fava.application import create_app

from beanbill.connectors.stripe import TARGET as STRIPE
from beanbill.fava_billing.chart import layout, nice_step
from beanbill.fava_billing.sync_view import find_workspace, read_sync
from beanbill.ledger.books import Books as LedgerBooks
from beanbill.ledger.fava_billing.billing import documents_to_push, invoices, to_minor
from beanbill.ledger.fava_billing.credits import (
    LotState,
    credit_totals,
    customer_credits,
    expiring,
    lots,
    unbilled,
)
from beanbill.ledger.fava_billing.periods import (
    month_of,
    months_before,
    months_between,
    parse_month,
    within_days,
)
from beanbill.ledger.fava_billing.revenue import RevenueTable, column_of, income_months, revenue
from beanbill.sync.attention import (
    attention,
    by_document,
    inbox_by_kind,
    pending_documents,
    problem_events,
)
from beanbill.sync.state import (
    STATE_FILE,
    PushStatus,
    SqliteSyncState,
    open_sync_state,
    sync_mark,
)
from tests.test_fava_billing import (
    DEAD_REASON,
    EXPIRED_GRANT,
    EXPIRING_GRANT,
    QUARANTINE_REASON,
    TARGET,
    Books,
    build_books,
    load,
)

DATES = (date(2026, 10, 15), date(2026, 11, 22), date(2027, 1, 15), date(2027, 3, 5))
SLUG = "nimbus-cloud-sas-billing-ledger"
TABS = ("invoices", "receivables", "credits", "revenue", "sync")


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Books]:
    yield build_books(tmp_path_factory.mktemp("pages") / "demo")


@pytest.fixture(scope="module")
def ledger(books: Books) -> tuple[list[Any], dict[str, Any]]:
    return load(books.workspace)


def query(ledger: tuple[list[Any], dict[str, Any]], text: str) -> list[tuple[Any, ...]]:
    entries, options = ledger
    _, rows = run_query(entries, options, text)
    return [tuple(row) for row in rows]


def cents(number: Decimal | None) -> int:
    return to_minor(number or Decimal(0), "EUR")


# --- credits -------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", DATES)
def test_credit_balances_equal_the_credit_accounts_to_the_cent(
    ledger: tuple[list[Any], dict[str, Any]], as_of: date
) -> None:
    entries, _ = ledger
    expected = {
        str(org): -cents(held)
        for org, held in query(
            ledger,
            "SELECT open_meta(account, 'org-id') AS org, sum(number) AS held "
            f"WHERE account ~ '^Liabilities:Credits:' AND date <= {as_of} GROUP BY org",
        )
    }
    rows = customer_credits(entries, as_of)
    assert {row.org: row.balance_minor for row in rows} == expected
    [(total,)] = query(
        ledger,
        f"SELECT sum(number) WHERE account ~ '^Liabilities:Credits:' AND date <= {as_of}",
    )
    assert credit_totals(rows)["EUR"][2] == -cents(total)
    for row in rows:  # what lots hold and what is outside them make the balance
        assert row.held_minor + row.outside_lots_minor == row.balance_minor


@pytest.mark.parametrize("as_of", DATES)
def test_each_lot_left_is_what_beanquery_and_the_ledgers_own_reader_say(
    books: Books, ledger: tuple[list[Any], dict[str, Any]], as_of: date
) -> None:
    entries, _ = ledger
    rows = {row.lot_id: row for row in lots(entries, as_of)}
    dated = [entry for entry in entries if entry.date <= as_of]
    reader = LedgerBooks(dated, "EUR")  # beanbill balance's reading of the same ledger
    assert {lot: row.amount_minor for lot, row in rows.items()} == {
        lot: found.amount_minor for lot, found in reader.lots().items()
    }
    assert {lot: row.remaining_minor for lot, row in rows.items()} == reader.lot_remaining(set())
    for lot_id, row in rows.items():
        [(left,)] = query(
            ledger,
            "SELECT sum(number) WHERE account ~ '^Liabilities:Credits:' "
            f"AND (entry_meta('credit-lot') = '{lot_id}' OR meta('credit-lot') = '{lot_id}') "
            f"AND date <= {as_of}",
        )
        assert row.remaining_minor == -cents(left), lot_id


def test_a_grant_that_ends_before_it_is_used_expires_whole(
    books: Books, ledger: tuple[list[Any], dict[str, Any]]
) -> None:
    entries, _ = ledger
    amount = to_minor(Decimal(EXPIRED_GRANT[1]), "EUR")
    during = {row.lot_id: row for row in lots(entries, EXPIRED_GRANT[3])}[books.expired_lot]
    assert (during.state, during.remaining_minor) == (LotState.EXPIRING, amount)
    after = {row.lot_id: row for row in lots(entries, date(2027, 3, 5))}[books.expired_lot]
    assert (after.org, after.kind, after.expires) == (EXPIRED_GRANT[0], "grant", EXPIRED_GRANT[3])
    assert (after.state, after.expired_minor) == (LotState.EXPIRED, amount)
    assert after.remaining_minor == 0


def test_what_expires_in_the_next_thirty_days_is_listed_with_what_is_left(
    books: Books, ledger: tuple[list[Any], dict[str, Any]]
) -> None:
    entries, _ = ledger
    last_day = EXPIRING_GRANT[3]
    soon = expiring(lots(entries, date(2027, 1, 15)))
    assert [row.lot_id for row in soon] == [books.expiring_lot]
    [row] = soon
    assert 0 < row.remaining_minor < row.amount_minor == to_minor(Decimal(EXPIRING_GRANT[1]), "EUR")
    assert row.used_minor == row.amount_minor - row.remaining_minor
    credits = {c.org: c for c in customer_credits(entries, date(2027, 1, 15))}
    assert credits[EXPIRING_GRANT[0]].expiring_minor == row.remaining_minor
    # 31 days before its last day it is not yet expiring; the day after, it has expired.
    early = {r.lot_id: r for r in lots(entries, date(2026, 12, 31))}[books.expiring_lot]
    assert early.state is LotState.ACTIVE and expiring([early]) == []
    late = {r.lot_id: r for r in lots(entries, date(2027, 2, 1))}[books.expiring_lot]
    assert late.state is LotState.EXPIRED and late.remaining_minor == row.remaining_minor
    assert within_days(last_day, date(2027, 1, 2), 30) and not within_days(last_day, last_day, 0)


@pytest.mark.parametrize("as_of", DATES)
def test_unbilled_per_customer_equals_the_unbilled_accounts(
    ledger: tuple[list[Any], dict[str, Any]], as_of: date
) -> None:
    entries, _ = ledger
    expected = {
        (str(org), "EUR"): cents(amount)
        for org, amount in query(
            ledger,
            "SELECT open_meta(account, 'org-id') AS org, sum(number) AS unbilled "
            f"WHERE account ~ '^Assets:Unbilled:' AND date <= {as_of} GROUP BY org",
        )
        if amount
    }
    assert unbilled(entries, as_of) == expected
    credits = customer_credits(entries, as_of)
    assert all(row.unbilled_minor == expected.get((row.org, "EUR"), 0) for row in credits)


# --- revenue -------------------------------------------------------------------------------


def beanquery_revenue(
    ledger: tuple[list[Any], dict[str, Any]], as_of: date, org: str | None = None
) -> dict[str, dict[str, int]]:
    """month → column → revenue (positive), as beanquery groups the income postings."""
    where = f" AND entry_meta('org') = '{org}'" if org else ""
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for year, month, account, amount in query(
        ledger,
        "SELECT year(date) AS y, month(date) AS m, account, sum(number) AS amount "
        f"WHERE account ~ '^Income:' AND date <= {as_of}{where} GROUP BY y, m, account",
    ):
        found[f"{year:04d}-{month:02d}"][column_of(str(account))] = -cents(amount)
    return dict(found)


@pytest.mark.parametrize("org", [None, "org-0001", "org-0005"])
def test_revenue_per_family_and_month_is_beanquerys(
    ledger: tuple[list[Any], dict[str, Any]], org: str | None
) -> None:
    entries, _ = ledger
    as_of = date(2027, 3, 5)
    months = months_between("2026-09", "2027-03")
    [table] = revenue(entries, as_of, months, org)
    expected = beanquery_revenue(ledger, as_of, org)
    assert {m: c for m, c in table.cells.items() if any(c.values())} == expected
    [(total,)] = query(
        ledger,
        f"SELECT sum(number) WHERE account ~ '^Income:' AND date <= {as_of}"
        + (f" AND entry_meta('org') = '{org}'" if org else ""),
    )
    assert table.total_minor == -cents(total)
    assert table.total_minor > 0 or org == EXPIRING_GRANT[0]  # granted credit: a discount
    assert table.months == tuple(months)
    assert sum(table.column_total(column) for column in table.columns) == table.total_minor


def test_revenue_leaves_out_what_is_booked_after_the_page_date(
    ledger: tuple[list[Any], dict[str, Any]],
) -> None:
    entries, _ = ledger
    assert revenue(entries, date(2026, 10, 30), ["2026-10"]) == []
    assert income_months(entries, date(2027, 3, 5))[0] == "2026-10"
    assert column_of("Income:Usage:Compute") == "Compute"
    assert column_of("Income:Credits:Expired") == "Credits Expired"


def test_months_run_across_years_and_bad_parameters_are_ignored() -> None:
    assert months_between("2026-11", "2027-02") == ["2026-11", "2026-12", "2027-01", "2027-02"]
    assert months_between("2027-02", "2026-11") == []
    assert months_before("2027-03", 12) == "2026-04"
    assert months_before("2027-01", 1) == "2027-01"
    assert (parse_month("2026-10"), parse_month("2026-13"), parse_month(None)) == (
        "2026-10", None, None,
    )  # fmt: skip
    assert month_of(date(2026, 1, 31)) == "2026-01"


def test_the_chart_stacks_each_months_families_to_its_total() -> None:
    table = RevenueTable(
        "EUR",
        ("2026-10", "2026-11", "2026-12"),
        ("Compute", "Storage", "Discounts"),
        {
            "2026-10": {"Compute": 123456, "Storage": 65432, "Discounts": -5000},
            "2026-11": {"Compute": 1},
        },
    )
    chart = layout(table)
    assert len(chart.bars) == 4 and all(bar.height >= 1 for bar in chart.bars)
    october = [bar for bar in chart.bars if bar.title.startswith("2026-10")]
    above = [bar for bar in october if "Discounts" not in bar.title]
    [discount] = [bar for bar in october if "Discounts" in bar.title]
    assert discount.y == chart.zero_y  # below zero, from zero down
    assert max(bar.y + bar.height for bar in above) == chart.zero_y  # stacked up from zero
    assert [tick.y for tick in chart.y_ticks] == sorted((t.y for t in chart.y_ticks), reverse=True)
    assert [tick.text for tick in chart.y_ticks[:2]] == ["-500.00", "0.00"]  # 500.00 a step
    assert chart.y_ticks[-1].text == "2000.00"  # the highest stack, 1888.88, rounded up
    assert [label.text for label in chart.x_labels] == list(table.months)
    assert [item.text for item in chart.legend] == list(table.columns)
    assert "2026-10 Compute: 1234.56 EUR" in [bar.title for bar in chart.bars]
    assert [nice_step(span) for span in (1, 7, 100, 999, 123456)] == [1, 2, 20, 200, 50000]
    empty = layout(RevenueTable("EUR", ("2026-10",), (), {}))
    assert empty.bars == () and empty.y_ticks


# --- sync ----------------------------------------------------------------------------------


def test_the_sync_page_lists_what_needs_a_human(
    books: Books, ledger: tuple[list[Any], dict[str, Any]]
) -> None:
    entries, _ = ledger
    as_of = date(2027, 3, 5)
    issued = documents_to_push(entries, as_of)
    numbers = [row.number for row in invoices(entries, as_of) if not row.prepayment]
    assert issued == [*numbers, books.credit_note] and books.prepayment not in issued
    view = read_sync(find_workspace(books.workspace.ledger_path), issued)
    assert view.note is None and view.enabled == (TARGET,) == (STRIPE,)
    [stripe] = view.targets
    assert [record.document for record in stripe.dead] == [books.part_paid]
    assert stripe.dead[0].last_error == DEAD_REASON
    assert [record.document for record in stripe.retrying] == [books.credit_note]
    assert stripe.pending == tuple(n for n in issued if n not in (books.paid, books.part_paid))
    assert books.credit_note in stripe.pending  # tried, failed, to be tried again
    assert stripe.push_counts == {"dead": 1, "pending": 1, "synced": 1}
    assert stripe.waiting_events == 1
    assert stripe.inbox == {"posted": 1, "quarantined": 1, "waiting": 1}
    assert stripe.problem_events == ((QUARANTINE_REASON, 1),)
    assert [(p.document, p.status) for p in stripe.payment_states] == [
        (books.paid, "payment_failed")
    ]
    assert stripe.needs_attention
    assert view.documents[books.paid][TARGET].status is PushStatus.SYNCED
    assert view.targets_of(books.credited) == [TARGET]  # enabled: "not pushed" is a status


def test_attention_keeps_a_target_no_longer_enabled_and_reads_outcomes(tmp_path: Path) -> None:
    state = SqliteSyncState(tmp_path)
    state.record_attempt("INV-1", "old", "refused")
    state.mark_dead("INV-1", "old", "refused")
    [old] = attention(state, [], ["INV-1", "INV-2"])
    assert (old.target, old.enabled, old.pending, len(old.dead)) == ("old", False, (), 1)
    assert pending_documents(["INV-1", "INV-2"], state.records("old")) == ["INV-2"]
    assert by_document(state.records()) == {"INV-1": {"old": state.records()[0]}}
    counts = {"waiting": 2, "posted": 5, "quarantined: a": 1, "unmatched: t: b": 3, "ignored": 1}
    assert inbox_by_kind(counts) == {
        "ignored": 1, "posted": 5, "quarantined": 1, "unmatched": 3, "waiting": 2,
    }  # fmt: skip
    assert problem_events(counts) == [("unmatched: t: b", 3), ("quarantined: a", 1)]


def test_without_a_workspace_or_a_state_the_sync_page_says_so_and_creates_nothing(
    tmp_path: Path, books: Books
) -> None:
    alone = tmp_path / "alone.beancount"
    alone.write_text("")
    view = read_sync(find_workspace(alone), [])
    assert view.note is not None and "not in a beanbill workspace" in view.note
    state_file = books.workspace.state_dir / STATE_FILE
    moved = state_file.with_suffix(".moved")
    open_sync_state(books.workspace)  # as every command opens it: the books get the mark
    mark = sync_mark(books.workspace)
    mark_moved = mark.with_suffix(".moved")
    state_file.rename(moved)
    try:
        # The books say the workspace had a state: it is lost, not "not yet" there.
        view = read_sync(find_workspace(books.workspace.ledger_path), ["INV-1"])
        assert view.note is not None and "is lost" in view.note and "restore it" in view.note
        assert not state_file.exists()
        mark.rename(mark_moved)
        view = read_sync(find_workspace(books.workspace.ledger_path), ["INV-1"])
        assert view.note is not None and "No sync state yet" in view.note
        assert not state_file.exists() and not mark.exists()
    finally:
        moved.rename(state_file)
        if mark_moved.exists():
            mark_moved.rename(mark)


# --- the pages, served by Fava -------------------------------------------------------------


def page(client: Any, tab: str, **arguments: str) -> str:
    query_string = "&".join(f"{key}={value}" for key, value in {"tab": tab, **arguments}.items())
    response = client.get(f"/{SLUG}/extension/BillingReport/?{query_string}")
    assert response.status_code == 200, tab
    return str(response.get_data(as_text=True))


def test_every_tab_renders_the_books_figures(books: Books) -> None:
    client = create_app([str(books.workspace.ledger_path)]).test_client()
    as_of = "2027-01-15"
    invoices_page = page(client, "invoices", **{"as-of": as_of})
    assert books.part_paid in invoices_page and f"{TARGET}: dead" in invoices_page
    assert f"{TARGET}: synced" in invoices_page and f"{TARGET}: not pushed" in invoices_page
    november = page(client, "invoices", **{"as-of": as_of, "from": "2026-11", "to": "2026-11"})
    numbers = set(re.findall(r'data-number="([^"]+)"', november))
    assert books.paid in numbers and books.prepayment not in numbers  # issued in October
    credits_page = page(client, "credits", **{"as-of": as_of})
    assert books.expiring_lot in credits_page and "expiring" in credits_page
    revenue_page = page(client, "revenue", **{"as-of": as_of, "from": "2026-10"})
    chart = revenue_page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert "<script" not in chart and "2026-10 Compute: " in chart
    sync_page = page(client, "sync", **{"as-of": as_of})
    assert DEAD_REASON.replace("'", "&#39;") in sync_page and QUARANTINE_REASON[:11] in sync_page
    one = page(client, "credits", customer=EXPIRING_GRANT[0], **{"as-of": as_of})
    assert set(re.findall(r'data-org="([^"]+)"', one)) == {EXPIRING_GRANT[0]}


HOSTILE_NAME = "<script>alert(1)</script> \"Evil\" 'Co' {{ 7*7 }}"
HOSTILE_LEDGER = """
option "operating_currency" "EUR"
2000-01-01 custom "fava-extension" "beanbill.fava_billing"
2000-01-01 open Assets:Receivable:Evil EUR
  org-id: "evil"
  org-name: {name}
2000-01-01 open Assets:Unbilled:Evil EUR
  org-id: "evil"
  org-name: {name}
2000-01-01 open Liabilities:Credits:Evil EUR
  org-id: "evil"
  org-name: {name}
2000-01-01 open Income:Usage:Compute EUR
2000-01-01 open Expenses:Promotions EUR

2026-10-01 * "Grant"
  org: "evil"
  credit-lot: "grant-evil"
  credit-kind: "grant"
  expires: 2026-11-10
  Expenses:Promotions  20.00 EUR
  Liabilities:Credits:Evil  -20.00 EUR

2026-10-31 * "Usage"
  org: "evil"
  Income:Usage:Compute  -30.00 EUR
  Liabilities:Credits:Evil  5.00 EUR
    credit-lot: "grant-evil"
  Assets:Unbilled:Evil  25.00 EUR

2026-11-01 * "Invoice INV-1" ^invoice-INV-1
  invoice-number: "INV-1"
  due-date: 2026-11-15
  Assets:Receivable:Evil  25.00 EUR
  Assets:Unbilled:Evil  -25.00 EUR
"""


def test_a_hostile_customer_name_is_shown_as_text_on_every_tab(tmp_path: Path) -> None:
    escaped = HOSTILE_NAME.replace('"', '\\"')
    main = tmp_path / "ledger.beancount"
    main.write_text(HOSTILE_LEDGER.format(name=f'"{escaped}"'))
    _, errors, _ = loader.load_file(str(main))
    assert errors == []
    client = create_app([str(main)]).test_client()
    response = client.get("/")
    slug = str(response.headers["Location"]).strip("/").split("/")[-2]
    for tab in TABS:
        response = client.get(f"/{slug}/extension/BillingReport/?tab={tab}&as-of=2026-11-02")
        assert response.status_code == 200, tab
        text = response.get_data(as_text=True)
        assert "<script>alert(1)" not in text, tab
        assert "{{ 7*7 }}" in text or tab == "sync", tab  # shown as typed, never evaluated
        if tab == "sync":
            assert "is not in a beanbill workspace" in text
        else:
            assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;Evil&#34; &#39;Co&#39;" in text, tab
