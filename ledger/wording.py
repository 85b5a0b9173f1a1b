"""How the books say things: periods as people read them, narrations, the story link.

An accountant reads Fava's journal, not txn-ids: every generated transaction names the
customer as payee and says what happened to whom (``Usage October 2026 — Acme GmbH``).
The ids stay in the metadata. Every entry of one billing period's story — the usage it
bills, the invoice, its payment, refund and credit note, the invoice issued again — shares
one link, ``^billing-<payer>-<period>``, so Fava's link view shows the whole story from
any of them. It is known before the invoice has a number (usage is posted first), which
is why it names the period and not the invoice.
"""

from __future__ import annotations

import re
from datetime import date

from beanbill.ledger import keys

DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")
SEPARATOR = " — "


def day_label(day: date) -> str:
    """``5 October 2026``."""
    return f"{day.day} {day:%B %Y}"


def period_label(period: str) -> str:
    """A billing period key as people say it: ``October 2026``, ``week 44 of 2026``,
    ``5 October 2026``; any other key as it is."""
    month = MONTH_PATTERN.fullmatch(period)
    if month:
        return f"{date(int(month[1]), int(month[2]), 1):%B %Y}"
    week = WEEK_PATTERN.fullmatch(period)
    if week:
        return f"week {int(week[2])} of {week[1]}"
    if DAY_PATTERN.fullmatch(period):
        return day_label(date.fromisoformat(period))
    return period


def usage_narration(period: str, day: date | None, through: date | None, name: str) -> str:
    """``Usage October 2026 — Acme GmbH``; a day of it, or a part of it, said so."""
    label = period_label(period)
    if day is not None and day.isoformat() != period:
        label = f"{label}, {day_label(day)}"
    if through is not None:
        label = f"{label}, through {day_label(through)}"
    return f"Usage {label}{SEPARATOR}{name}" if name else f"Usage {label}"


def about(text: str, name: str) -> str:
    """``text — name`` (the customer a narration is about), or the text alone."""
    return f"{text}{SEPARATOR}{name}" if name else text


def billing_link(payer: str, period: str) -> str:
    """The link every entry of a payer's billing period shares (see the module's doc)."""
    return f"billing-{payer}-{period}"


def billing_link_of_key(invoice_key: str) -> str:
    """The story link of an invoice key (``invoice:<payer>:<period>[:rN]``)."""
    parsed = keys.InvoiceKey.parse(invoice_key)
    return billing_link(parsed.payer, parsed.period)
