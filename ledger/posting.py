"""What gets posted: consumption per organization and billing period, credits, expiries.

Consumption of one closed billing period is one transaction: one income posting per
product family (rounded once, half-even, from the rated full-precision total), paid for
first by the organization's credit lots — lowest ``priority`` first, then the soonest
expiry, then the oldest — and the rest goes to ``Assets:Unbilled``: consumed, not yet
invoiced (postpaid, prepaid), or, provisioned, over-consumption marked so, which the next
unified invoice regularizes. Money a customer owes is an asset, never a negative
liability netted against other customers' prepayments. A lot whose last valid day has
passed gives up what is left: breakage to ``Income:Credits:Expired`` for purchased
credit, back to ``Expenses:Promotions`` for granted credit.

Entries are pure functions of their inputs, so regenerating a posted period yields the
same text and the writer leaves the ledger untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from beanbill.ledger import keys
from beanbill.ledger.accounts import (
    CREDITS_EXPIRED,
    PROMOTIONS,
    OrganizationAccounts,
    income_account,
)
from beanbill.ledger.books import LOT_KEY, CreditLot, UsageVersion
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.rounding import round_posting
from beanbill.ledger.wording import about, billing_link, usage_narration
from beanbill.rating.config import BillingMode
from beanbill.rating.money import AMOUNT_SCALE, plain_scaled

FAR_FUTURE = date.max


@dataclass(frozen=True)
class PeriodUsage:
    """The rated totals of one organization's billing period, per product family."""

    org: str
    billing_mode: BillingMode
    period: str
    period_start: date
    period_end: date
    family_atto: tuple[tuple[str, int], ...]
    rated_checksum: str
    rated_file: str
    day: date | None = None  # daily postings; and a period's part in its second month
    through: date | None = None  # last day of a part (a period split at a month end)
    name: str = ""  # the organization's name: the transaction's payee
    payer: str = ""  # who is invoiced for it (a parent pays for its teams)

    @property
    def last_day(self) -> date:
        return self.through or self.day or self.period_end - timedelta(days=1)

    @property
    def txn_id(self) -> str:
        return keys.usage_txn_id(self.org, self.period, self.day)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.org, self.period, self.day.isoformat() if self.day else "")


def correction_txn_id(usage: PeriodUsage) -> str:
    return f"{usage.txn_id}:{usage.rated_checksum[:12]}"


def reversal_entry(original: Transaction, when: date) -> Transaction:
    """Cancels a posted transaction with a new one: same link, ``reverses`` its txn-id.

    Credit draws come back to their lots, because each negated posting keeps its
    ``credit-lot`` metadata.
    """
    return Transaction(
        date=when,
        txn_id=keys.reversal_txn_id(original.txn_id),
        narration=f"Reversal of {original.narration}",
        payee=original.payee,
        postings=tuple(
            posting._replace(amount_minor=-posting.amount_minor) for posting in original.postings
        ),
        links=original.links,
        meta=(
            *((k, v) for k, v in original.meta if k in (keys.ORG, keys.PERIOD)),
            (keys.REVERSES, original.txn_id),
        ),
    )


def draw_order(lot: CreditLot) -> tuple[int, date, date, str]:
    return (lot.priority, lot.expires or FAR_FUTURE, lot.acquired, lot.lot_id)


def usable(lot: CreditLot, usage: PeriodUsage) -> bool:
    """Acquired by the period's last day and still valid on it."""
    return lot.acquired <= usage.last_day and (lot.expires is None or lot.expires >= usage.last_day)


def consumption_entry(
    usage: PeriodUsage,
    accounts: OrganizationAccounts,
    lots: Sequence[CreditLot],
    remaining: dict[str, int],
    currency: str,
    digits: int,
    version: UsageVersion | None = None,
) -> Transaction | None:
    """The period's transaction; draws are taken out of ``remaining`` as they are made.

    ``version`` names the txn-id and date when this is not the period's first posting
    (a correction, or the regeneration of one).
    """
    income = [
        (family, round_posting(atto, digits), atto)
        for family, atto in usage.family_atto
        if round_posting(atto, digits) != 0
    ]
    total = sum(amount for _, amount, _ in income)
    if total == 0:
        return None
    postings = [
        Posting(
            income_account(family),
            -amount,
            currency,
            ((keys.RATED_AMOUNT, plain_scaled(atto, AMOUNT_SCALE)),),
        )
        for family, amount, atto in income
    ]
    due = total
    for lot in sorted((lot for lot in lots if usable(lot, usage)), key=draw_order):
        take = min(due, remaining.get(lot.lot_id, 0))
        if take <= 0:
            continue
        remaining[lot.lot_id] -= take
        due -= take
        postings.append(Posting(accounts.credits, take, currency, ((LOT_KEY, lot.lot_id),)))
        if due == 0:
            break
    if due > 0 and usage.billing_mode is BillingMode.PROVISIONED:
        postings.append(Posting(accounts.unbilled, due, currency, ((keys.OVER_CONSUMPTION, True),)))
    elif due > 0:
        postings.append(Posting(accounts.unbilled, due, currency))
    rated_total = sum(atto for _, atto in usage.family_atto)
    return Transaction(
        date=version.date if version else usage.last_day,
        txn_id=version.txn_id if version else usage.txn_id,
        narration=usage_narration(usage.period, usage.day, usage.through, usage.name),
        postings=tuple(postings),
        links=(
            f"usage-{usage.org}-{usage.period}",
            billing_link(usage.payer or usage.org, usage.period),
        ),
        payee=usage.name,
        meta=(
            (keys.ORG, usage.org),
            (keys.PERIOD, usage.period),
            (keys.PERIOD_START, usage.period_start),
            (keys.PERIOD_END, usage.period_end),
            *(((keys.DAY, usage.day),) if usage.day else ()),
            *(((keys.POSTED_THROUGH, usage.through),) if usage.through else ()),
            (keys.RATED_TOTAL, plain_scaled(rated_total, AMOUNT_SCALE)),
            (keys.RATED_LINES, usage.rated_file),
            (keys.RATED_CHECKSUM, usage.rated_checksum),
            ("rounding", "half-even per family posting"),
        ),
    )


def expiry_entry(
    lot: CreditLot, left_minor: int, accounts: OrganizationAccounts, currency: str, name: str = ""
) -> Transaction | None:
    if lot.expires is None or left_minor <= 0:
        return None
    counter = CREDITS_EXPIRED if lot.kind == "purchase" else PROMOTIONS
    return Transaction(
        date=lot.expires + timedelta(days=1),
        txn_id=keys.expiry_txn_id(lot.lot_id),
        narration=about(f"Credit {lot.lot_id} expired", name),
        payee=name,
        postings=(
            Posting(accounts.credits, left_minor, currency, ((LOT_KEY, lot.lot_id),)),
            Posting(counter, -left_minor, currency),
        ),
        links=(f"credit-{lot.lot_id}",),
        meta=((keys.ORG, lot.org),),
    )


def credit_entry(
    lot: CreditLot,
    accounts: OrganizationAccounts,
    currency: str,
    purchase_account: str,
    name: str = "",
) -> Transaction:
    """A purchase (paid into ``purchase_account``, a clearing account) or a promotional grant."""
    source = purchase_account if lot.kind == "purchase" else PROMOTIONS
    meta: list[tuple[str, str | date | Decimal]] = [
        (keys.ORG, lot.org),
        (LOT_KEY, lot.lot_id),
        (keys.CREDIT_KIND, lot.kind),
        ("priority", Decimal(lot.priority)),
    ]
    if lot.expires is not None:
        meta.append(("expires", lot.expires))
    return Transaction(
        date=lot.acquired,
        txn_id=keys.credit_txn_id(lot.lot_id),
        narration=about(f"Credit {lot.kind} {lot.lot_id}", name),
        payee=name,
        postings=(
            Posting(source, lot.amount_minor, currency),
            Posting(accounts.credits, -lot.amount_minor, currency),
        ),
        links=(f"credit-{lot.lot_id}",),
        meta=tuple(meta),
    )
