"""A general ledger with control accounts, sub-ledgers per customer group, yearly books.

Why: Beancount reads a ledger at roughly 0.1-0.3 ms an entry, and beanbill's books grow
by about 150 entries per organization and year (docs/SCALE.md has the measured numbers):
one file with accounts per organization stops opening within Fava's 10 s near 500
organizations (2,000 from Beancount's cache), and a year of 100,000 needs ~50 GB to load.
Accountants solved this long before computers: the general ledger holds one *control
account* per customer group (the total), each group's *sub-ledger* holds its customers'
accounts (the detail), the two agree to the cent at every date, and each year's books
open with the balances the year before closed with.

This module is that, as pure functions of loaded Beancount entries (Beancount v3 style:
entries in, entries and errors out), so any beanbill ledger can be split, checked and
rendered without touching the writer. It is a prototype: beanbill still writes one ledger.

- ``split_books``: the general ledger (GL) — every per-organization account replaced by its
  group's control account (``Assets:Receivable`` + ``:Group-<g>``), the groups'
  transactions summed into one journal entry per day and kind (``usage``, ``invoice``,
  ``stripe-payment``…) — and one sub-ledger per group: its organizations' entries as
  beanbill wrote them, links, documents and metadata kept, balanced within the file. Both
  sides carry the same ``balance`` assertions on the first of every month (the control
  account in the GL, the root in the sub-ledger), so bean-check of each file proves its
  side equals the same figure.
- ``reconcile``: that agreement checked directly, at every date, to the cent.
- ``split_years``: yearly books, each loading alone: the year's entries, the balances
  carried forward from the year before (income and expenses closed to previous
  earnings), and the closing balances asserted, as the next year opens with them.
- ``ledger_header`` and ``render_ledger``: the files' text.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from beancount.core import account_types, data, flags
from beancount.core.amount import Amount
from beancount.ops import summarize
from beancount.parser import options, printer

from beanbill.ledger import keys
from beanbill.ledger.accounts import (
    CREDITS_ROOT,
    RECEIVABLE_ROOT,
    UNAPPLIED_ROOT,
    UNBILLED_ROOT,
)
from beanbill.ledger.text import ACCOUNT_COMPONENT, quoted

# The accounts beanbill opens once per organization: the ones a GL replaces by controls.
PER_ORGANIZATION_ROOTS = (RECEIVABLE_ROOT, UNBILLED_ROOT, CREDITS_ROOT, UNAPPLIED_ROOT)
GROUP_PREFIX = "Group-"  # Assets:Receivable:Group-A, the control account of group A
# Under the equity root (named by Beancount's options): in a sub-ledger, the other side of
# a transaction that also touches another group's organization (a parent paying for a team
# of another group). Summed over all sub-ledgers, these accounts are zero.
OTHER_GROUPS = "Other-groups"
BATCH_LINK_PREFIX = "gl"  # ^gl-usage-2026-10-31: a GL journal entry and its detail
BATCH_TXN_PREFIX = "gl:"
OPENING_TXN_PREFIX = "carried-forward:"
MANUAL_KIND = "manual"  # a transaction without a txn-id (a hand edit)
MAX_GROUPS = 10_000  # a GL of more groups than this would be a per-organization ledger again
SOURCE = "<beanbill.ledger.subledgers>"
CONFIGURATION = (data.Commodity, data.Custom, data.Query, data.Price)  # in every file
# The flags of the entries Beancount's summarize functions make (carried forward, transfer
# to previous earnings, conversions): beanbill's own entries are all '*'.
SUMMARIZING_FLAGS = (flags.FLAG_SUMMARIZE, flags.FLAG_TRANSFER, flags.FLAG_CONVERSIONS)

GroupOf = Callable[[str], str]  # an organization's account component -> its group's label
# Beancount's option readers, typed (the module has no annotations).
ACCOUNT_TYPES: Callable[[Mapping[str, Any]], account_types.AccountTypes]
ACCOUNT_TYPES = options.get_account_types
PREVIOUS_ACCOUNTS: Callable[[Mapping[str, Any]], tuple[str, str, str]]
PREVIOUS_ACCOUNTS = options.get_previous_accounts


def first_character(component: str) -> str:
    """The default grouping: the first character of the organization's account component
    (``Acme-gmbh`` -> ``A``), the classic A-Z of a receivables ledger. Real ids rarely spread
    evenly (``org-0001``...): pass a grouping that bounds each group's size."""
    return component[:1].upper()


class SplitError(NamedTuple):
    """A Beancount-style error (``source``, ``message``, ``entry``)."""

    source: dict[str, Any]
    message: str
    entry: data.Directive | None


@dataclass(frozen=True)
class SplitBooks:
    """The general ledger and each group's sub-ledger, as entries (sorted)."""

    general: list[data.Directive]
    subledgers: dict[str, list[data.Directive]]


def meta(**values: Any) -> dict[str, Any]:
    """Metadata of an entry this module makes (Beancount requires filename and lineno)."""
    return data.new_metadata(SOURCE, 0, {key.replace("_", "-"): v for key, v in values.items()})


def organization_of(account: str) -> tuple[str, str] | None:
    """(root, component) of a per-organization account, None for any other account."""
    for root in PER_ORGANIZATION_ROOTS:
        if account.startswith(f"{root}:"):
            return root, account[len(root) + 1 :].split(":", 1)[0]
    return None


def control_account(root: str, group: str) -> str:
    return f"{root}:{GROUP_PREFIX}{group}"


def other_groups_account(options_map: Mapping[str, Any], group: str) -> str:
    return f"{options_map['name_equity']}:{OTHER_GROUPS}:{GROUP_PREFIX}{group}"


def kind_of(entry: data.Transaction) -> str:
    """The journal a transaction belongs to: its txn-id's first part (``usage``, ...)."""
    txn_id = (entry.meta or {}).get(keys.TXN_ID)
    if not isinstance(txn_id, str) or not txn_id:
        return MANUAL_KIND
    kind = txn_id.split(":", 1)[0]
    return kind if ACCOUNT_COMPONENT.fullmatch(kind.capitalize()) else MANUAL_KIND


def batch_link(kind: str, day: date) -> str:
    return f"{BATCH_LINK_PREFIX}-{kind}-{day.isoformat()}"


def to_the_cent(total: Decimal) -> Decimal:
    """The amount a ``balance`` assertion states: one decimal more than it has.

    bean-check accepts an assertion within one unit of its last written digit: ``335.05
    EUR`` passes with 335.06 in the books. ``335.050 EUR`` fails by a cent.
    """
    exponent = total.as_tuple().exponent
    assert isinstance(exponent, int), total  # money is finite
    return total.quantize(Decimal(1).scaleb(min(exponent, 0) - 1))


def error(entry: data.Directive | None, message: str) -> SplitError:
    return SplitError(dict(entry.meta) if entry is not None else meta(), message, entry)


# --- grouping ------------------------------------------------------------------------------


def groups_of_components(
    entries: Sequence[data.Directive], group_of: GroupOf
) -> tuple[dict[str, str], list[SplitError]]:
    """component -> group for every organization the entries name, checked once each."""
    groups: dict[str, str] = {}
    errors: list[SplitError] = []
    for entry in entries:
        for account in accounts_of(entry):
            found = organization_of(account)
            if found is None or found[1] in groups:
                continue
            label = group_of(found[1])
            if not ACCOUNT_COMPONENT.fullmatch(f"{GROUP_PREFIX}{label}"):
                errors.append(error(entry, f"group {label!r} of {found[1]!r} is no account name"))
            groups[found[1]] = label
    if len(set(groups.values())) > MAX_GROUPS:
        errors.append(error(None, f"more than {MAX_GROUPS} customer groups"))
    return groups, errors


def links_of(entry: data.Directive) -> frozenset[str]:
    links = getattr(entry, "links", None)
    return links if isinstance(links, frozenset) else frozenset()


def units_of(posting: data.Posting) -> tuple[Decimal, str] | None:
    """(number, currency) of a posting; None when it has no amount."""
    if posting.units is None or posting.units.number is None:
        return None
    return posting.units.number, posting.units.currency


def accounts_of(entry: data.Directive) -> list[str]:
    if isinstance(entry, data.Transaction):
        return [posting.account for posting in entry.postings]
    account = getattr(entry, "account", None)
    return [account] if isinstance(account, str) else []


def touched_groups(entry: data.Directive, groups: Mapping[str, str]) -> tuple[str, ...]:
    """The groups whose organizations the entry posts to or is about, in first-seen order."""
    found: dict[str, None] = {}
    for account in accounts_of(entry):
        organization = organization_of(account)
        if organization is not None:
            found[groups[organization[1]]] = None
    return tuple(found)


def routed_by_link(
    entries: Sequence[data.Directive], touched: Sequence[tuple[str, ...]]
) -> dict[int, str]:
    """Transactions on house accounts only that follow one group through their links.

    A card fee posts to the fee and clearing accounts only, but it is the fee of one
    customer's invoice (``^invoice-<number>``): its detail belongs with that customer.
    A transaction whose links lead to no group or to several stays in the GL as it is.
    """
    wanted: set[str] = set()
    for index, entry in enumerate(entries):
        if isinstance(entry, data.Transaction) and not touched[index] and entry.links:
            wanted |= entry.links
    link_groups: dict[str, set[str]] = defaultdict(set)
    for index, entry in enumerate(entries):
        if touched[index]:
            for link in wanted.intersection(links_of(entry)):
                link_groups[link].update(touched[index])
    routed: dict[int, str] = {}
    for index, entry in enumerate(entries):
        if isinstance(entry, data.Transaction) and not touched[index] and entry.links:
            found = set().union(*(link_groups.get(link, set()) for link in entry.links))
            if len(found) == 1:
                routed[index] = found.pop()
    return routed


# --- the general ledger and the sub-ledgers --------------------------------------------------


@dataclass
class _Split:
    """What the split accumulates in its one pass over the entries."""

    options_map: Mapping[str, Any]
    groups: Mapping[str, str]  # organization component -> group
    general: list[data.Directive]
    subledgers: dict[str, list[data.Directive]]
    configuration: list[data.Directive]
    batches: dict[tuple[date, str], dict[tuple[str, str], Decimal]]
    batch_counts: dict[tuple[date, str], int]
    house_opens: dict[str, data.Open]
    control_opens: dict[str, data.Open]  # control account -> its open (the earliest)
    borrowed: dict[str, dict[str, date]]  # group -> account from elsewhere -> first day used
    # (root, group, currency) -> day -> change: what the assertions and reconcile restate
    changes: dict[tuple[str, str, str], dict[date, Decimal]]
    errors: list[SplitError]

    def transaction(self, entry: data.Transaction, groups: tuple[str, ...]) -> None:
        """The transaction's detail to each group's sub-ledger, its sums to the GL batch."""
        kind = kind_of(entry)
        key = (entry.date, kind)
        sums = self.batches.setdefault(key, defaultdict(Decimal))
        self.batch_counts[key] = self.batch_counts.get(key, 0) + 1
        for posting in entry.postings:
            units = units_of(posting)
            if units is None:
                self.errors.append(error(entry, f"{posting.account}: no amount"))
                continue
            if posting.cost is not None or posting.price is not None:
                self.errors.append(error(entry, f"{posting.account}: costs are not supported"))
            number, currency = units
            account = posting.account
            organization = organization_of(account)
            if organization is not None:
                root, group = organization[0], self.groups[organization[1]]
                account = control_account(root, group)
                by_day = self.changes.setdefault((root, group, currency), {})
                by_day[entry.date] = by_day.get(entry.date, Decimal(0)) + number
            sums[(account, currency)] += number
        link = batch_link(kind, entry.date)
        for group in groups:
            detail = self.in_subledger(entry, group, groups[0])
            self.subledgers[group].append(detail._replace(links=detail.links | {link}))

    def in_subledger(self, entry: data.Transaction, group: str, home: str) -> data.Transaction:
        """The transaction as ``group``'s sub-ledger holds it.

        One transaction touching organizations of several groups (a parent invoiced for
        its team of another group) is shown in each, once in full: in its ``home`` group's
        (the first it posts to) with the house accounts, each other group's organizations
        replaced by that group's contra account; in another group's with its own
        organizations and one contra posting to the home group. So house accounts are
        counted once over the sub-ledgers, and the contra accounts cancel out.
        """
        if group != home:
            return self.visiting(entry, group, home)
        postings = []
        for posting in entry.postings:
            account = posting.account
            organization = organization_of(account)
            if organization is None:
                self.borrow(group, account, entry.date)
            elif self.groups[organization[1]] != group:
                account = other_groups_account(self.options_map, self.groups[organization[1]])
                self.borrow(group, account, entry.date)
            same = account == posting.account
            postings.append(posting if same else posting._replace(account=account))
        return entry._replace(postings=postings)

    def visiting(self, entry: data.Transaction, group: str, home: str) -> data.Transaction:
        """Its own organizations' postings, balanced by one posting to the home group."""
        own = [
            p
            for p in entry.postings
            if (o := organization_of(p.account)) and self.groups[o[1]] == group
        ]
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for posting in own:
            units = units_of(posting)
            if units is not None:
                totals[units[1]] += units[0]
        contra = other_groups_account(self.options_map, home)
        self.borrow(group, contra, entry.date)
        balancing = [
            data.Posting(contra, Amount(-total, currency), None, None, None, None)
            for currency, total in sorted(totals.items())
        ]
        return entry._replace(postings=own + balancing)

    def borrow(self, group: str, account: str, day: date) -> None:
        first = self.borrowed[group].get(account)
        if first is None or day < first:
            self.borrowed[group][account] = day

    def open(self, entry: data.Open) -> None:
        organization = organization_of(entry.account)
        if organization is None:
            self.house_opens.setdefault(entry.account, entry)
            self.general.append(entry)
            return
        root, group = organization[0], self.groups[organization[1]]
        self.subledgers[group].append(entry)
        control = control_account(root, group)
        known = self.control_opens.get(control)
        if known is None or entry.date < known.date:
            opened = meta(txn_id=keys.open_txn_id(control), customer_group=group)
            self.control_opens[control] = data.Open(
                opened, entry.date, control, entry.currencies, None
            )

    def directive(self, entry: data.Directive, groups: tuple[str, ...]) -> None:
        """Any entry but a transaction or an open: with its organization's group, or the GL."""
        if isinstance(entry, CONFIGURATION):
            self.general.append(entry)
            self.configuration.append(entry)
        elif isinstance(entry, data.Pad) and (
            organization_of(entry.account) or organization_of(entry.source_account)
        ):
            self.errors.append(error(entry, "pad on a per-organization account: unsupported"))
        elif groups:
            self.subledgers[groups[0]].append(entry)
        else:
            self.general.append(entry)


def split_books(
    entries: Sequence[data.Directive],
    options_map: Mapping[str, Any],
    group_of: GroupOf = first_character,
    assertion_dates: Iterable[date] | None = None,
) -> tuple[SplitBooks, list[SplitError]]:
    """The general ledger with control accounts, and a sub-ledger per customer group.

    ``group_of`` maps an organization's account component to its group's label (an
    account component once prefixed with ``Group-``); ``assertion_dates`` are the days
    whose opening balances both sides assert (default: the first of every month from the
    month after the first transaction to the month after the last). On errors (a group
    that cannot be an account name, more than ``MAX_GROUPS`` groups) nothing is split:
    the GL is the entries as they are.
    """
    groups, errors = groups_of_components(entries, group_of)
    if errors:
        return SplitBooks(list(entries), {}), errors
    touched = [touched_groups(entry, groups) for entry in entries]
    routed = routed_by_link(entries, touched)
    split = _Split(
        options_map, groups, [], {group: [] for group in set(groups.values())}, [], {}, {},
        {}, {}, defaultdict(dict), {}, [],
    )  # fmt: skip
    for index, entry in enumerate(entries):
        groups_of_entry = touched[index] or ((routed[index],) if index in routed else ())
        if isinstance(entry, data.Transaction):
            if entry.flag == flags.FLAG_PADDING:
                continue  # re-created from its pad when the file loads
            if groups_of_entry:
                split.transaction(entry, groups_of_entry)
            else:
                split.general.append(entry)
        elif isinstance(entry, data.Open):
            split.open(entry)
        else:
            split.directive(entry, groups_of_entry)
    days = sorted(assertion_dates) if assertion_dates is not None else month_starts(entries)
    general = split.general + batch_entries(split) + list(split.control_opens.values())
    general += assertions(split.changes, days, in_general=True)
    general += missing_references(general, "the customer groups' sub-ledgers")
    subledgers = {group: subledger(split, group, days) for group in split.subledgers}
    return SplitBooks(sorted(general, key=data.entry_sortkey), subledgers), split.errors


def month_starts(entries: Iterable[data.Directive]) -> list[date]:
    """The first of every month after the first transaction's, through the last one's."""
    days = [entry.date for entry in entries if isinstance(entry, data.Transaction)]
    if not days:
        return []
    first, last = min(days), max(days)
    starts = []
    year, month = first.year, first.month
    while True:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        starts.append(date(year, month, 1))
        if starts[-1] > last:
            return starts


def batch_entries(split: _Split) -> list[data.Transaction]:
    """One GL journal entry per day and kind: the sums of the groups' transactions."""
    entries = []
    for (day, kind), sums in sorted(split.batches.items()):
        postings = [
            data.Posting(account, Amount(number, currency), None, None, None, None)
            for (account, currency), number in sorted(sums.items())
            if number != 0
        ]
        if not postings:
            continue
        count = split.batch_counts[(day, kind)]
        narration = (
            f"Journal {kind} of {day.isoformat()}: {count} transaction(s) of customer "
            "groups, detail in their sub-ledgers"
        )
        txn_id = f"{BATCH_TXN_PREFIX}{kind}:{day.isoformat()}"
        links = frozenset({batch_link(kind, day)})
        journal = meta(txn_id=txn_id, transactions=Decimal(count))
        entries.append(
            data.Transaction(journal, day, "*", None, narration, data.EMPTY_SET, links, postings)
        )
    return entries


def assertions(
    changes: Mapping[tuple[str, str, str], Mapping[date, Decimal]],
    days: Sequence[date],
    in_general: bool,
) -> list[data.Balance]:
    """The balance each control account (GL) or root (a sub-ledger) has at each day.

    Only from the day after an organization of the group first moved: before, there is
    nothing to agree on (and the account may not be open yet).
    """
    balances: list[data.Balance] = []
    for (root, group, currency), by_day in sorted(changes.items()):
        account = control_account(root, group) if in_general else root
        moves = sorted(by_day.items())
        total, position = Decimal(0), 0
        for day in days:
            while position < len(moves) and moves[position][0] < day:
                total += moves[position][1]
                position += 1
            if position == 0:
                continue
            amount = Amount(to_the_cent(total), currency)
            balances.append(
                data.Balance(meta(customer_group=group), day, account, amount, None, None)
            )
    return balances


def subledger(split: _Split, group: str, days: Sequence[date]) -> list[data.Directive]:
    """A group's entries, and what makes them load alone: the configuration, the opens of
    the accounts they borrow, the roots they assert on, and the assertions."""
    entries = list(split.subledgers[group]) + list(split.configuration)
    opened = {entry.account for entry in entries if isinstance(entry, data.Open)}
    for account, first in sorted(split.borrowed[group].items()):
        if account not in opened:
            known = split.house_opens.get(account)
            entries.append(known or data.Open(meta(), first, account, [], None))
            opened.add(account)
    for control, opening in sorted(split.control_opens.items()):
        root = control.rsplit(":", 1)[0]
        if control.endswith(f":{GROUP_PREFIX}{group}") and root not in opened:
            entries.append(opening._replace(meta=meta(txn_id=keys.open_txn_id(root)), account=root))
            opened.add(root)
    ours = {key: value for key, value in split.changes.items() if key[1] == group}
    entries += assertions(ours, days, in_general=False)
    entries += missing_references(entries, "another customer group's sub-ledger")
    return sorted(entries, key=data.entry_sortkey)


def missing_references(
    entries: Sequence[data.Directive], where: str, dated: Mapping[str, date] | None = None
) -> list[data.Note]:
    """A note standing for each transaction a ``reverses`` names that this file lacks.

    beanbill's plugin refuses a ``reverses`` naming no entry of the ledger; in split
    books the reversed entry may sit in another file (last year's books, a sub-ledger).
    The note carries its txn-id and says where it is, so the plugin still finds it and a
    reader knows where to look.
    """
    present = {(entry.meta or {}).get(keys.TXN_ID) for entry in entries}
    notes: dict[str, data.Note] = {}
    for entry in entries:
        target = (entry.meta or {}).get(keys.REVERSES)
        if not isinstance(entry, data.Transaction) or target in present or target in notes:
            continue
        if isinstance(target, str) and entry.postings:
            day = (dated or {}).get(target)
            place = f"{where} ({day.year})" if day else where
            comment = f"{target} is in {place}; {entry.meta.get(keys.TXN_ID)} reverses it"
            notes[target] = data.Note(
                meta(txn_id=target), entry.date, entry.postings[0].account, comment,
                data.EMPTY_SET, data.EMPTY_SET,
            )  # fmt: skip
    return list(notes.values())


# --- reconciliation ----------------------------------------------------------------------------

MAX_DISCREPANCIES = 20


def reconcile(split: SplitBooks) -> list[str]:
    """Where a control account and its sub-ledger disagree, at any date, to the cent.

    Equal balances at every date is equal changes on every day: each day's change of
    ``<root>:Group-<g>`` in the GL is compared with the day's change of the group's
    organizations under ``<root>`` in its sub-ledger (the contra accounts excluded). Empty
    when the books agree; at most ``MAX_DISCREPANCIES`` messages otherwise.
    """
    general: dict[tuple[str, str, str, date], Decimal] = defaultdict(Decimal)
    for root, component, number, currency, day in organization_postings(split.general):
        general[(root, component.removeprefix(GROUP_PREFIX), currency, day)] += number
    detail: dict[tuple[str, str, str, date], Decimal] = defaultdict(Decimal)
    for group, entries in split.subledgers.items():
        for root, _component, number, currency, day in organization_postings(entries):
            detail[(root, group, currency, day)] += number
    found = []
    for key in sorted(set(general) | set(detail)):
        if general.get(key, Decimal(0)) != detail.get(key, Decimal(0)):
            root, group, currency, day = key
            found.append(
                f"{control_account(root, group)} moved {general.get(key, 0)} {currency} on "
                f"{day}, the organizations of group {group} {detail.get(key, 0)} {currency}"
            )
            if len(found) == MAX_DISCREPANCIES:
                break
    return found


def organization_postings(
    entries: Iterable[data.Directive],
) -> Iterable[tuple[str, str, Decimal, str, date]]:
    """(root, component, number, currency, day) of every posting to an account under a
    per-organization root: organizations in a sub-ledger, control accounts in the GL."""
    for entry in entries:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                found = organization_of(posting.account)
                units = units_of(posting)
                if found is not None and units is not None:
                    yield found[0], found[1], units[0], units[1], entry.date


# --- yearly books ----------------------------------------------------------------------------


def split_years(
    entries: Sequence[data.Directive], options_map: Mapping[str, Any]
) -> tuple[dict[int, list[data.Directive]], list[SplitError]]:
    """One book per calendar year, each loading alone, each opening where the last closed.

    Beancount's own ``summarize.clamp`` makes the year (what Fava's time filter does):
    income and expenses before the year closed to previous earnings, every balance
    carried forward by one entry per account dated the day before the year, entries after
    the year cut. Added here: the configuration (options entries, queries, the Fava
    extension), a txn-id for each carried-forward entry, opens for the equity accounts
    they use, the closing balance of every balance-sheet account asserted on the first day
    of the next year (so bean-check proves what the next book opens with), and a note for
    each reversed entry that sits in an earlier year's book.
    """
    errors = [error(e, "pads are not supported in yearly books") for e in entries
              if isinstance(e, data.Pad)]  # fmt: skip
    entries = sorted(entries, key=data.entry_sortkey)
    years = sorted({e.date.year for e in entries if isinstance(e, data.Transaction)})
    if errors or not years:
        return {}, errors
    types = ACCOUNT_TYPES(options_map)
    earnings, opening, conversions = PREVIOUS_ACCOUNTS(options_map)
    currency = options_map["conversion_currency"]
    configuration = [entry for entry in entries if isinstance(entry, CONFIGURATION)]
    dated = {str(e.meta[keys.TXN_ID]): e.date for e in entries if keys.TXN_ID in (e.meta or {})}
    assert len(dated) <= len(entries)
    books: dict[int, list[data.Directive]] = {}
    for year in range(years[0], years[-1] + 1):
        begin, end = date(year, 1, 1), date(year + 1, 1, 1)
        clamped, _ = summarize.clamp(
            entries, begin, end, types, currency, earnings, opening, conversions
        )
        book: list[data.Directive] = [e for e in configuration if e.date < begin]
        book += [carried_forward(entry, year) for entry in clamped]
        book += equity_opens(book)
        book += closing_balances(book, end, types)
        book += missing_references(book, "an earlier year's book", dated)
        books[year] = sorted(book, key=data.entry_sortkey)
    return books, []


def carried_forward(entry: data.Directive, year: int) -> data.Directive:
    """A summarization entry of ``clamp`` named as beanbill names entries: a txn-id."""
    if not isinstance(entry, data.Transaction) or entry.flag not in SUMMARIZING_FLAGS:
        return entry
    account = entry.postings[0].account
    txn_id = f"{OPENING_TXN_PREFIX}{year}:{entry.flag}:{account}"
    narration = f"Balance of {account} carried forward into {year}"
    return entry._replace(meta=meta(txn_id=txn_id), narration=narration)


def equity_opens(book: Sequence[data.Directive]) -> list[data.Open]:
    """Opens for the accounts the summarization entries post to and nothing opened."""
    opened = {entry.account for entry in book if isinstance(entry, data.Open)}
    first: dict[str, date] = {}
    for entry in book:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                if posting.account not in opened:
                    day = first.get(posting.account, entry.date)
                    first[posting.account] = min(day, entry.date)
    return [data.Open(meta(), day, account, [], None) for account, day in sorted(first.items())]


def closing_balances(
    book: Sequence[data.Directive], end: date, types: account_types.AccountTypes
) -> list[data.Balance]:
    """Every balance-sheet account's balance at the end of the year, asserted on ``end``:
    what the next year's book carries forward (accounts closed during the year excepted)."""
    closed = {entry.account for entry in book if isinstance(entry, data.Close)}
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for entry in book:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                units = units_of(posting)
                if units is not None and posting.account not in closed:
                    totals[(posting.account, units[1])] += units[0]
    return [
        data.Balance(meta(), end, account, Amount(to_the_cent(total), currency), None, None)
        for (account, currency), total in sorted(totals.items())
        if account_types.is_balance_sheet_account(account, types)
    ]


# --- text ----------------------------------------------------------------------------------


def ledger_header(main_text: str, title: str) -> str:
    """The options and plugins of a main ledger file, for a file that must load alone."""
    lines = ["; Generated by beanbill.ledger.subledgers: do not edit.", ""]
    for line in main_text.splitlines():
        if line.startswith(("option ", "plugin ")) and not line.startswith('option "title"'):
            lines.append(line)
    lines.append(f'option "title" {quoted(title)}')
    return "\n".join(lines) + "\n"


def render_ledger(entries: Iterable[data.Directive], header: str, directory: str) -> str:
    """The text of a ledger file written in ``directory``: Beancount's own printer, the
    paths of documents (and of the files their metadata names beside them) made relative
    to that folder, so that the file loads alone wherever the folder is."""
    parts = [header]
    for entry in entries:
        if isinstance(entry, data.Document):
            entry = relocated(entry, directory)
        parts.append(printer.format_entry(entry))
    return "\n".join(parts)


def relocated(entry: data.Document, directory: str) -> data.Document:
    source = os.path.dirname(str(entry.meta.get("filename", "")))
    beside = os.path.dirname(entry.filename)
    moved = dict(entry.meta)
    for key, value in entry.meta.items():
        if isinstance(value, str) and key not in ("filename",) and source:
            path = os.path.normpath(os.path.join(source, value))
            if os.path.dirname(path) == beside:
                moved[key] = os.path.relpath(path, directory)
    return entry._replace(meta=moved, filename=os.path.relpath(entry.filename, directory))
