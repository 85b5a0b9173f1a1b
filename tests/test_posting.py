"""Posting rated consumption and credits: exact, idempotent, in the documented draw order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from beancount import loader
from hypothesis import given
from hypothesis import strategies as st

from beanbill.ledger.post import PostingError, balance, post, record_credit
from beanbill.ledger.rounding import allocate_largest_remainder, round_posting, to_minor
from beanbill.rating.closures import ClosedPeriods
from beanbill.rating.ingest import ingest
from beanbill.rating.money import AMOUNT_SCALE, plain_scaled, to_scaled_integer
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import beancount_snapshot, customer, write_jsonl

NOVEMBER = Month(2026, 11)
AS_OF = date(2026, 12, 5)


def hundred_hours(org: str, event_id: str = "e1") -> dict[str, str]:
    """1 vCPU for 100 h at 0.0000069444/s = 2.499984 EUR → posted as 2.50 EUR."""
    return {"id": f"{org}-{event_id}", "org": org, "resource": "app", "meter": "cpu",
            "start": "2026-11-02T00:00:00Z", "end": "2026-11-06T04:00:00Z"}  # fmt: skip


@pytest.fixture
def books(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Workspace:
    workspace = make_workspace(
        customers=[
            customer("prov", billing_mode="provisioned"),
            customer("post", billing_mode="postpaid"),
            customer("pre", billing_mode="prepaid"),
        ]
    )
    records = [hundred_hours(org) for org in ("prov", "post", "pre")]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [NOVEMBER])
    record_credit(workspace, "prov", "purchase", "1.00", date(2026, 10, 1), None, 100, "p1")
    record_credit(
        workspace, "prov", "grant", "0.50", date(2026, 10, 1), date(2026, 11, 30), 10, "g1"
    )
    record_credit(
        workspace, "pre", "purchase", "5.00", date(2026, 11, 1), date(2026, 11, 30), 100, "p2"
    )
    return workspace


def test_consumption_draws_credits_in_order_and_books_the_rest_by_mode(books: Workspace) -> None:
    summary = post(books, NOVEMBER, AS_OF)
    assert (summary.periods, summary.expiries) == (3, 1)
    _, errors, _ = loader.load_file(str(books.ledger_path))
    assert errors == []
    prov = balance(books, "prov")
    # grant first (priority 10), then the purchase; the over-consumption is owed: an asset
    assert (prov.credits_minor, prov.unbilled_minor) == (0, 100)
    assert {lot.lot_id: left for lot, left in prov.lots} == {"p1": 0, "g1": 0}
    assert balance(books, "post").unbilled_minor == 250
    pre = balance(books, "pre")
    assert (pre.credits_minor, pre.unbilled_minor) == (0, 0)  # 2.50 drawn, 2.50 expired
    text = (books.root / "books" / "2026-12" / "credits.beancount").read_text()
    assert "expiry:p2" in text and "Income:Credits:Expired  -2.50 EUR" in text


def test_posting_twice_changes_no_byte_and_closes_the_periods(books: Workspace) -> None:
    post(books, NOVEMBER, AS_OF)
    before = beancount_snapshot(books.root)
    again = post(books, NOVEMBER, AS_OF)
    assert again.written == 0
    assert beancount_snapshot(books.root) == before
    assert ("post", "2026-11") in ClosedPeriods(books.state_dir).all_keys()


def test_open_periods_are_not_posted(books: Workspace) -> None:
    assert post(books, NOVEMBER, date(2026, 11, 20)).periods == 0


def test_a_re_rated_closed_period_is_corrected_by_new_entries_only(
    books: Workspace, tmp_path: Path
) -> None:
    post(books, NOVEMBER, AS_OF)
    november = {p: p.read_bytes() for p in (books.root / "books" / "2026-11").glob("*.beancount")}
    records = [hundred_hours("post", "late"), hundred_hours("prov", "late")]
    assert ingest(books, [write_jsonl(tmp_path / "late.jsonl", records)]).late == 2
    rate_months(books, [NOVEMBER])
    with pytest.raises(PostingError, match=r"usage:post:2026-11.*--correct"):
        post(books, NOVEMBER, AS_OF)
    corrected = post(books, NOVEMBER, AS_OF, correct=True)
    assert corrected.written == 4  # two reversals, two corrected consumptions
    assert {p: p.read_bytes() for p in november} == november  # history intact
    entries, errors, _ = loader.load_file(str(books.ledger_path))
    assert errors == []
    reversal = next(e for e in entries if e.meta.get("reverses") == "usage:post:2026-11")
    assert reversal.links == {"usage-post-2026-11", "billing-post-2026-11"}
    assert reversal.date == AS_OF and reversal.payee == "post Ltd"
    assert balance(books, "post").unbilled_minor == 500
    prov = balance(books, "prov")
    # the reversal gave the credits back, drawn again; the rest is owed
    assert (prov.credits_minor, prov.unbilled_minor) == (0, 500 - 150)
    assert {lot.lot_id: left for lot, left in prov.lots} == {"p1": 0, "g1": 0}
    before = beancount_snapshot(books.root)
    assert post(books, NOVEMBER, date(2026, 12, 20), correct=True).written == 0
    assert beancount_snapshot(books.root) == before


def test_a_credit_id_cannot_smuggle_ledger_syntax(books: Workspace) -> None:
    with pytest.raises(PostingError, match="it becomes a link"):
        record_credit(
            books, "prov", "grant", "1.00", date(2026, 10, 1), None, 1, "x\n2026-01-01 open A"
        )


def test_credit_commands_are_idempotent(books: Workspace) -> None:
    before = beancount_snapshot(books.root)
    _, written = record_credit(
        books, "prov", "purchase", "1.00", date(2026, 10, 1), None, 100, "p1"
    )
    assert not written
    assert beancount_snapshot(books.root) == before


@given(
    lines=st.lists(st.integers(min_value=0, max_value=10**24), min_size=1, max_size=40),
    digits=st.sampled_from([0, 2, 3]),
)
def test_detail_lines_sum_exactly_to_the_rounded_posting(lines: list[int], digits: int) -> None:
    total = round_posting(sum(lines), digits)
    exact = [to_minor(atto, digits) for atto in lines]
    shares = allocate_largest_remainder(total, exact)
    assert sum(shares) == total
    assert all(abs(share - value) < 1 for share, value in zip(shares, exact, strict=True))
    assert shares == allocate_largest_remainder(total, exact)


def test_rounding_is_half_even_at_the_posting() -> None:
    assert round_posting(5 * 10**15, 2) == 0  # 0.005 → 0.00
    assert round_posting(15 * 10**15, 2) == 2  # 0.015 → 0.02
    assert round_posting(25 * 10**15, 2) == 2  # 0.025 → 0.02
    assert to_minor(2_499_984 * 10**12, 2) == Decimal("249.9984")


def test_daily_granularity_posts_one_transaction_per_day_of_a_closed_period(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace(customers=[customer("daily-books", billing_mode="postpaid")])
    settings = workspace.root / "beanbill.toml"
    settings.write_text(settings.read_text() + '\n[ledger]\ngranularity = "daily"\n')
    workspace = Workspace.load(workspace.root)
    records = [
        {**hundred_hours("daily-books", f"d{day}"), "start": f"2026-11-{day:02d}T08:00:00Z",
         "end": f"2026-11-{day:02d}T09:00:00Z"}
        for day in (3, 4, 20)
    ]  # fmt: skip
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [NOVEMBER])
    assert post(workspace, NOVEMBER, AS_OF).written == 3
    entries, errors, _ = loader.load_file(str(workspace.ledger_path))
    assert errors == []
    days = sorted(e.meta["day"] for e in entries if e.meta.get("txn-id", "").startswith("usage:"))
    assert days == [date(2026, 11, 3), date(2026, 11, 4), date(2026, 11, 20)]
    # 0.02499984 EUR a day rounds to 0.02 each day (posted monthly: 0.07499952 → 0.07)
    assert balance(workspace, "daily-books").unbilled_minor == 3 * 2
    assert post(workspace, NOVEMBER, AS_OF).written == 0


def test_amounts_beyond_28_digits_stay_exact_from_rating_to_the_ledger() -> None:
    """Decimal's default context keeps 28 digits: an atto amount has that many from 10
    billion on. Every conversion between rated integers and ledger decimals is exact."""
    atto = 12_345_678_901_234_567_890_123_456_789_012_345  # 1.2e16 EUR, 35 digits
    text = "12345678901234567.890123456789012345"
    assert plain_scaled(atto, AMOUNT_SCALE) == Decimal(text)
    assert str(plain_scaled(atto, AMOUNT_SCALE)) == text
    assert to_scaled_integer(Decimal(text), AMOUNT_SCALE) == atto
    assert round_posting(atto, 2) == 1_234_567_890_123_456_789  # .890123… rounds up
    assert round_posting(5 * 10**15, 2) == 0 and round_posting(15 * 10**15, 2) == 2  # ties even
    assert plain_scaled(1_500_000_000_000_000_000, AMOUNT_SCALE) == Decimal("1.5")
    shares = allocate_largest_remainder(
        round_posting(atto, 2), [to_minor(atto - 1, 2), to_minor(1, 2)]
    )
    assert shares == [1_234_567_890_123_456_789, 0]
