"""Revenue per product family and month: the figures behind the Revenue page.

Income is negative in Beancount; here it is shown as earned, positive. Each income
account is one column: the product families (``accounts.income_account``), and the
other income the books hold (expired credit, discounts as contra revenue), so that the
months' totals are the ``Income`` balance's movements, to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from beancount.core.data import Transaction

from beanbill.ledger import keys
from beanbill.ledger.accounts import (
    FAMILY_ACCOUNTS,
    INCOME_ROOT,
    USAGE_INCOME_ROOT,
    family_of,
    under,
)
from beanbill.ledger.entries import format_minor
from beanbill.ledger.fava_billing.billing import posting_minor
from beanbill.ledger.fava_billing.periods import month_of


def is_family(account: str) -> bool:
    """True for the income account of a product family (``accounts.income_account``)."""
    return under(account, USAGE_INCOME_ROOT) or account in FAMILY_ACCOUNTS.values()


def column_of(account: str) -> str:
    """A column's heading: the family an income account books, else the account's name
    below ``Income`` (``Credits Expired``, ``Discounts``)."""
    if is_family(account):
        return family_of(account)
    return account.removeprefix(f"{INCOME_ROOT}:").replace(":", " ")


@dataclass(frozen=True)
class RevenueTable:
    """Revenue of one currency: ``cells[month][column]`` in minor units, earned positive."""

    currency: str
    months: tuple[str, ...]
    columns: tuple[str, ...]
    cells: dict[str, dict[str, int]]

    def amount(self, month: str, column: str) -> int:
        return self.cells.get(month, {}).get(column, 0)

    def month_total(self, month: str) -> int:
        return sum(self.cells.get(month, {}).values())

    def column_total(self, column: str) -> int:
        return sum(self.amount(month, column) for month in self.months)

    @property
    def total_minor(self) -> int:
        return sum(self.month_total(month) for month in self.months)

    def formatted(self, amount_minor: int) -> str:
        return format_minor(amount_minor, self.currency)


def income_months(entries: Iterable[Any], as_of: date) -> list[str]:
    """The months in which income was booked, up to ``as_of``, in order."""
    return sorted(
        {
            month_of(entry.date)
            for entry in entries
            if isinstance(entry, Transaction)
            and entry.date <= as_of
            and any(under(posting.account, INCOME_ROOT) for posting in entry.postings)
        }
    )


def revenue(
    entries: Sequence[Any],
    as_of: date,
    months: Sequence[str],
    org: str | None = None,
) -> list[RevenueTable]:
    """Revenue earned in ``months`` (``YYYY-MM``) up to ``as_of``, one table per currency.

    ``org`` keeps the transactions of one organization (their ``org`` metadata: its
    consumption, its expired credit); without it every income posting counts.
    """
    wanted = set(months)
    families: set[str] = set()
    sums: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    for entry in entries:
        if not isinstance(entry, Transaction) or entry.date > as_of:
            continue
        month = month_of(entry.date)
        if month not in wanted or (org and (entry.meta or {}).get(keys.ORG) != org):
            continue
        for posting in entry.postings:
            if under(posting.account, INCOME_ROOT):
                currency, minor = posting_minor(posting)
                sums[currency][month][column_of(posting.account)] -= minor
                if is_family(posting.account):
                    families.add(column_of(posting.account))
    tables = []
    for currency, by_month in sorted(sums.items()):
        found = {column for cells in by_month.values() for column in cells}
        columns = sorted(found, key=lambda column: (column not in families, column))
        cells = {month: dict(values) for month, values in by_month.items()}
        tables.append(RevenueTable(currency, tuple(months), tuple(columns), cells))
    return tables
