"""An organization's prepaid and granted credit: its balance and its lots with expiry.

Read from the ledger as at today by the Credits page's pure functions
(``beanbill.ledger.fava_billing.credits``): what each lot gave, what was used, what
expired and what is left, which lots expire within 30 days, and the unbilled amount
beside it. Amounts are integer minor units with their exact decimal text.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from beanbill.api.auth import CallerDependency
from beanbill.api.money import DECIMAL_PATTERN, minor_text
from beanbill.api.organizations import OrganizationParameter
from beanbill.api.problems import NotFound, RateLimited, Unauthorized, Unavailable, responses
from beanbill.ledger.fava_billing.credits import LotState, customer_credits, lots, unbilled


class Lot(BaseModel):
    """One credit lot: bought or granted, valid through ``expires`` (None: never expires)."""

    model_config = ConfigDict(extra="forbid")

    lot_id: str
    kind: str = Field(description="purchase or grant.")
    acquired: date
    expires: date | None = Field(description="Its last valid day; None: it never expires.")
    state: LotState
    amount_minor: int
    used_minor: int
    expired_minor: int
    remaining_minor: int
    remaining: str = Field(pattern=DECIMAL_PATTERN)


class Credits(BaseModel):
    """An organization's credit account today (positive: credit held)."""

    model_config = ConfigDict(extra="forbid")

    org: str
    currency: str
    balance_minor: int = Field(description="The credits account's balance: lots and outside.")
    balance: str = Field(pattern=DECIMAL_PATTERN)
    held_in_lots_minor: int
    outside_lots_minor: int = Field(
        description="Movements no lot explains (provisioned mode: over-consumption, provisions)."
    )
    expiring_minor: int = Field(description="Left in lots whose last valid day is within 30 days.")
    unbilled_minor: int = Field(description="Consumed and posted, not yet invoiced.")
    lots: list[Lot]


def router() -> APIRouter:
    routes = APIRouter(tags=["credits"])

    @routes.get(
        "/v1/organizations/{org}/credits",
        response_model=Credits,
        summary="Credit balance and lots with expiry",
        responses=responses(Unauthorized, NotFound, RateLimited, Unavailable),
    )
    def get_credits(caller: CallerDependency, org: OrganizationParameter) -> Credits:
        caller.require(org)
        context = caller.context
        entries = context.ledger.entries()
        today = context.today()
        currency = context.workspace.settings.billing.currency
        account = next((row for row in customer_credits(entries, today) if row.org == org), None)
        own_lots = [row for row in lots(entries, today) if row.org == org]
        if account is not None:
            currency = account.currency
        owed = account.unbilled_minor if account else unbilled(entries, today).get((org, currency))
        balance = account.balance_minor if account else 0
        return Credits(
            org=org,
            currency=currency,
            balance_minor=balance,
            balance=minor_text(balance, currency),
            held_in_lots_minor=account.held_minor if account else 0,
            outside_lots_minor=account.outside_lots_minor if account else 0,
            expiring_minor=account.expiring_minor if account else 0,
            unbilled_minor=owed or 0,
            lots=[
                Lot(
                    lot_id=row.lot_id,
                    kind=row.kind,
                    acquired=row.acquired,
                    expires=row.expires,
                    state=row.state,
                    amount_minor=row.amount_minor,
                    used_minor=row.used_minor,
                    expired_minor=row.expired_minor,
                    remaining_minor=row.remaining_minor,
                    remaining=minor_text(row.remaining_minor, row.currency),
                )
                for row in own_lots
            ],
        )

    return routes
