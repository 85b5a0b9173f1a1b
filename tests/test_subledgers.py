"""The way past one big ledger (ledger/subledgers.py): a general ledger with control accounts
per customer group, a sub-ledger per group, yearly books — each file bean-check clean, the
control accounts equal to their sub-ledgers to the cent at every date, balances carried
from one year to the next exactly.

Built on real beanbill books: the demo's organizations rated, posted, invoiced (PDFs and
e-invoices), a team billed to its parent in another group, a credit grant expiring on
New Year's Day, a credit purchase and a credit note in the next year. The hostile case
adds an organization id with '.', '_' and a leading digit, an organization whose accounts
are all zero, and what earlier versions wrote for over-consumption: a debit in the credits
account (a negative credit), booked by hand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from beancount import loader
from beancount.core import data

from beanbill.ledger.accounts import organization_accounts
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import balance, post, record_credit
from beanbill.ledger.subledgers import (
    GROUP_PREFIX,
    PER_ORGANIZATION_ROOTS,
    SplitBooks,
    control_account,
    first_character,
    ledger_header,
    organization_of,
    reconcile,
    render_ledger,
    split_books,
    split_years,
)
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import customer, october_usage, write_jsonl
from tests.test_fava import posted_demo

OCTOBER = Month(2026, 10)
Entries = list[data.Directive]


@dataclass(frozen=True)
class Ledger:
    workspace: Workspace
    entries: Entries
    options: dict[str, Any]

    @property
    def main_text(self) -> str:
        return self.workspace.ledger_path.read_text(encoding="utf-8")


def loaded(workspace: Workspace) -> Ledger:
    entries, errors, options = loader.load_file(str(workspace.ledger_path))
    assert errors == [], [error.message for error in errors]
    return Ledger(workspace, list(entries), options)


def by_parity(component: str) -> str:
    """Odd and even account numbers: the parent org-0001 is odd, its teams org-0006 and
    org-0008 even, so central invoicing crosses two groups."""
    return "Odd" if int(component[-1]) % 2 else "Even"


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """October 2026 posted and invoiced; a grant expiring on 1 January 2027 (its expiry is
    posted then); a credit purchase and a credit note in January 2027."""
    workspace = posted_demo(tmp_path_factory.mktemp("books") / "demo")
    record_credit(workspace, "org-0002", "grant", "3.00", date(2026, 11, 1), date(2026, 12, 31),
                  5, None)  # fmt: skip
    issued = issue(workspace, OCTOBER, date(2026, 11, 22)).issued
    assert post(workspace, Month(2026, 12), date(2027, 1, 10)).expiries == 1
    record_credit(workspace, "org-0003", "purchase", "20.00", date(2027, 1, 5), None, 100, None)
    credit_note(workspace, issued[1], date(2027, 1, 10), "Wrong plan")
    return loaded(workspace)


def checked(entries: Iterable[data.Directive], main_text: str, path: Path) -> Entries:
    """The entries written to ``path`` as a ledger of its own, loaded back: bean-check's
    verdict (its checks and beanbill's plugin) must be clean."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ledger_header(main_text, path.stem)
    path.write_text(render_ledger(entries, header, str(path.parent)), encoding="utf-8")
    back, errors, _ = loader.load_file(str(path))
    assert errors == [], (path.name, [error.message for error in errors[:5]])
    return list(back)


def write_all(split: SplitBooks, main_text: str, folder: Path) -> dict[str, Entries]:
    files = {"general": split.general} | {f"group-{g}": e for g, e in split.subledgers.items()}
    return {name: checked(entries, main_text, folder / f"{name}.beancount")
            for name, entries in files.items()}  # fmt: skip


def balances(
    entries: Iterable[data.Directive], before: date | None = None
) -> dict[tuple[str, str], Decimal]:
    """(account, currency) -> balance, of the postings dated before ``before`` (all)."""
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for entry in entries:
        if isinstance(entry, data.Transaction) and (before is None or entry.date < before):
            for posting in entry.postings:
                totals[(posting.account, posting.units.currency)] += posting.units.number
    return {key: value for key, value in totals.items() if value != 0}


def per_group(
    totals: dict[tuple[str, str], Decimal], group_of: Callable[[str], str]
) -> dict[tuple[str, str], Decimal]:
    """Per-organization accounts summed into their control account; the others as they are."""
    grouped: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (account, currency), total in totals.items():
        organization = organization_of(account)
        if organization is not None:
            account = control_account(organization[0], group_of(organization[1]))
        grouped[(account, currency)] += total
    return {key: value for key, value in grouped.items() if value != 0}


def test_the_general_ledger_and_subledgers_reconcile_and_pass_bean_check(
    books: Ledger, tmp_path: Path
) -> None:
    split, errors = split_books(books.entries, books.options, by_parity)
    assert errors == []
    assert sorted(split.subledgers) == ["Even", "Odd"]
    assert reconcile(split) == []
    files = write_all(split, books.main_text, tmp_path)
    # Every per-organization account is gone from the GL: only control accounts remain.
    gl_accounts = {e.account for e in files["general"] if isinstance(e, data.Open)}
    controls = {a for a in gl_accounts if organization_of(a) is not None}
    assert controls and all(a.rsplit(":", 1)[1].startswith(GROUP_PREFIX) for a in controls)
    # Each side asserts the same balances: bean-check of each file proved its side.
    gl_asserted = {(e.date, e.account.rsplit(":", 1)[0], e.account.rsplit(":", 1)[1],
                    e.amount) for e in files["general"] if isinstance(e, data.Balance)}  # fmt: skip
    sub_asserted = {
        (e.date, e.account, f"{GROUP_PREFIX}{name.removeprefix('group-')}", e.amount)
        for name, entries in files.items() if name != "general"
        for e in entries if isinstance(e, data.Balance)
    }  # fmt: skip
    assert gl_asserted == sub_asserted and len(gl_asserted) >= 8
    # The GL is smaller: one journal entry per day and kind instead of one per customer.
    transactions = [e for e in books.entries if isinstance(e, data.Transaction)]
    assert len([e for e in files["general"] if isinstance(e, data.Transaction)]) < len(transactions)


def test_balances_equal_the_originals_per_account_and_group(books: Ledger) -> None:
    split, errors = split_books(books.entries, books.options, by_parity)
    assert errors == []
    original = balances(books.entries)
    assert per_group(original, by_parity) == balances(split.general)
    detail: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for entries in split.subledgers.values():
        for (account, currency), total in balances(entries).items():
            if organization_of(account) is not None:
                detail[(account, currency)] += total
    assert dict(detail) == {k: v for k, v in original.items() if organization_of(k[0])}
    # The contra accounts of central invoicing across groups cancel out over the groups.
    contra: dict[str, Decimal] = defaultdict(Decimal)
    for entries in split.subledgers.values():
        for (account, _), total in balances(entries).items():
            if account.startswith("Equity:"):
                contra[account.rsplit(":", 1)[1]] += total
    assert contra and sum(contra.values()) == 0


def test_a_story_keeps_its_links_in_its_subledger(books: Ledger) -> None:
    """An invoice, its PDF and its credit note sit in the payer's sub-ledger, linked as
    beanbill wrote them, and the GL's journal entry names its detail by a link."""
    split, _ = split_books(books.entries, books.options, by_parity)
    stories: dict[str, set[str]] = defaultdict(set)
    for entry in books.entries:
        for link in getattr(entry, "links", None) or ():
            if link.startswith("invoice-"):
                stories[link].add(str(entry.meta.get("txn-id")))
    for link, txn_ids in stories.items():
        homes = [group for group, entries in split.subledgers.items()
                 if txn_ids <= {str(e.meta.get("txn-id")) for e in entries
                                if link in (getattr(e, "links", None) or ())}]  # fmt: skip
        assert homes, link
    journal = [e for e in split.general if str(e.meta.get("txn-id", "")).startswith("gl:invoice:")]
    assert journal
    [batch] = journal[0].links
    detail = {
        str(e.meta["txn-id"])
        for entries in split.subledgers.values()
        for e in entries
        if batch in (getattr(e, "links", None) or ())
    }  # a transaction of two groups is in both sub-ledgers, once in full
    assert len(detail) == int(journal[0].meta["transactions"])


def test_a_missing_cent_is_found_by_reconcile_and_by_bean_check(
    books: Ledger, tmp_path: Path
) -> None:
    split, _ = split_books(books.entries, books.options, by_parity)
    index, journal = next(
        (i, e) for i, e in enumerate(split.general)
        if isinstance(e, data.Transaction) and str(e.meta["txn-id"]).startswith("gl:invoice:")
    )  # fmt: skip
    postings = list(journal.postings)
    first = next(i for i, p in enumerate(postings) if organization_of(p.account))
    house = next(i for i, p in enumerate(postings) if not organization_of(p.account))
    cent = Decimal("0.01")
    for i, sign in ((first, 1), (house, -1)):  # still balanced, one cent in the wrong place
        units = postings[i].units
        postings[i] = postings[i]._replace(units=units._replace(number=units.number + sign * cent))
    general = list(split.general)
    general[index] = journal._replace(postings=postings)
    tampered = SplitBooks(general, split.subledgers)
    [found] = reconcile(tampered)
    assert postings[first].account in found and journal.date.isoformat() in found
    path = tmp_path / "general.beancount"
    path.write_text(render_ledger(general, ledger_header(books.main_text, "GL"), str(tmp_path)))
    _, errors, _ = loader.load_file(str(path))
    assert any("Balance failed" in error.message for error in errors)


def test_a_year_split_carries_balances_forward_exactly(books: Ledger, tmp_path: Path) -> None:
    years, errors = split_years(books.entries, books.options)
    assert errors == [] and sorted(years) == [2026, 2027]
    book_2026 = checked(years[2026], books.main_text, tmp_path / "2026.beancount")
    book_2027 = checked(years[2027], books.main_text, tmp_path / "2027.beancount")
    new_year = date(2027, 1, 1)
    balance_sheet = ("Assets:", "Liabilities:")
    carried = {key: total for key, total in balances(book_2027, new_year).items()
               if key[0].startswith(balance_sheet)}  # fmt: skip
    expected = {key: total for key, total in balances(books.entries, new_year).items()
                if key[0].startswith(balance_sheet)}  # fmt: skip
    assert carried == expected and carried
    closing = {
        (e.account, e.amount.currency): e.amount.number
        for e in book_2026
        if isinstance(e, data.Balance) and e.date == new_year and e.amount.number
    }
    assert {k: v for k, v in closing.items() if k[0].startswith(balance_sheet)} == expected
    # The year's own movements are the original's; what came before is previous earnings.
    income = {k: v for k, v in balances(book_2027).items() if k[0].startswith("Income:")}
    original = {k: v for k, v in balances(books.entries).items() if k[0].startswith("Income:")}
    before = {k: v for k, v in balances(books.entries, new_year).items()
              if k[0].startswith("Income:")}  # fmt: skip
    assert income == {k: v - before.get(k, 0) for k, v in original.items()
                      if v != before.get(k, 0)}  # fmt: skip
    # The credit note of 2027 reverses an invoice of the 2026 book: a note stands for it.
    notes = [e for e in book_2027 if isinstance(e, data.Note)]
    assert [n.meta["txn-id"] for n in notes] == [
        e.meta["reverses"] for e in book_2027 if "reverses" in e.meta
    ]
    assert "(2026)" in notes[0].comment


def test_the_general_ledger_and_subledgers_split_into_years_too(
    books: Ledger, tmp_path: Path
) -> None:
    split, _ = split_books(books.entries, books.options, by_parity)
    for name, entries in {"general": split.general, **split.subledgers}.items():
        years, errors = split_years(entries, books.options)
        assert errors == [] and sorted(years) == [2026, 2027], name
        for year, book in years.items():
            back = checked(book, books.main_text, tmp_path / f"{name}-{year}.beancount")
            txn_ids = [str(e.meta.get("txn-id", "")) for e in back]
            own = [i for i in txn_ids if i and not i.startswith(("carried-forward:", "open:"))]
            assert own and (name != "general" or all(i.startswith("gl:") for i in own)), name
        opening = [i for i in txn_ids if i.startswith("carried-forward:2027:S:")]
        assert opening, name  # 2027 opens with 2026's balances


@pytest.fixture
def hostile(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Ledger:
    """An id with '.', '_' and a leading digit; an organization whose accounts are all
    zero; acme's consumption settled by a bank transfer booked by hand; and a negative
    credit: over-consumption booked as a debit in the credits account, as earlier versions
    did."""
    odd = "0.weird_Id-x"
    workspace = make_workspace(
        customers=[
            customer(odd, billing_mode="prepaid", email="billing@weird.example"),
            customer("acme"),
            customer("zero"),
        ]
    )
    records = [*october_usage(odd, 3), *october_usage("acme", 5)]
    ingest(workspace, [write_jsonl(tmp_path / "usage.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    record_credit(workspace, odd, "purchase", "0.10", date(2026, 10, 1), None, 100, None)
    post(workspace, OCTOBER, date(2026, 11, 2))
    accounts = organization_accounts(workspace.customers.customer)
    owed = Decimal(balance(workspace, "acme").unbilled_minor).scaleb(-2)
    assert owed > 0
    hand = tmp_path / "ws" / "books" / "hand.beancount"
    hand.write_text(
        f'2026-11-03 * "Acme" "Invoiced and paid by transfer, booked by hand"\n'
        f"  {accounts['acme'].unbilled}  -{owed} EUR\n"
        f"  Assets:Bank:Operating  {owed} EUR\n\n"
        f'2026-11-04 * "Over-consumption, as earlier versions booked it"\n'
        f"  {accounts[odd].credits}  2.50 EUR\n"
        f"  Income:Usage:Compute  -2.50 EUR\n"
    )  # fmt: skip
    with workspace.ledger_path.open("a") as main:
        main.write('include "books/hand.beancount"\n')
    return loaded(workspace)


def test_hostile_organizations_still_reconcile(hostile: Ledger, tmp_path: Path) -> None:
    split, errors = split_books(hostile.entries, hostile.options)  # the default: A-Z, 0-9
    assert errors == []
    assert sorted(split.subledgers) == ["0", "A", "Z"]
    assert reconcile(split) == []
    files = write_all(split, hostile.main_text, tmp_path)
    original = balances(hostile.entries)
    assert per_group(original, first_character) == balances(files["general"])
    credits = control_account(PER_ORGANIZATION_ROOTS[2], "0")
    assert balances(files["general"])[(credits, "EUR")] > 0  # a negative credit, kept
    assert balances(files["group-A"]).get(("Assets:Unbilled:Acme", "EUR"), 0) == 0
    assert {e.account for e in files["group-Z"] if isinstance(e, data.Open)} >= {
        "Assets:Receivable:Zero", "Liabilities:Credits:Zero"
    }  # fmt: skip
    years, errors = split_years(files["group-0"], hostile.options)
    assert errors == [] and sorted(years) == [2026]


def test_a_group_that_cannot_be_an_account_name_is_refused(books: Ledger) -> None:
    split, errors = split_books(books.entries, books.options, lambda component: "no group")
    assert errors and "no account name" in errors[0].message
    assert split.general == books.entries and split.subledgers == {}
