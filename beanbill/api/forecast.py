"""Forecast: an organization's current billing period, expected at its end, with a band.

The figures come from the provisional rating of open periods (``beanbill rate --open``)
and the method is ``rating.forecast``'s, stated in each answer. The credit balance held
today (from the ledger) is set against the expected spend: whether it covers the
period, and otherwise the day the run-rate uses it up. Money is exact: rated amounts as
decimal strings, and the same rounded once, half to even, to integer minor units.
"""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from beanbill.api.auth import Caller, CallerDependency
from beanbill.api.money import DECIMAL_PATTERN, atto_text, minor_text
from beanbill.api.organizations import OrganizationParameter
from beanbill.api.problems import NotFound, RateLimited, Unauthorized, Unavailable, responses
from beanbill.api.rated_reader import request_store
from beanbill.ledger.entries import minor_digits
from beanbill.ledger.fava_billing.credits import customer_credits
from beanbill.rating.errors import BeanbillError
from beanbill.rating.forecast import PeriodForecast, organization_forecast
from beanbill.rating.money import AMOUNT_SCALE, rounded_half_even
from beanbill.rating.periods import period_of


class MeterForecastOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meter: str
    so_far: str = Field(pattern=DECIMAL_PATTERN)
    daily_rate: str = Field(pattern=DECIMAL_PATTERN, description="Mean of the look-back days.")
    expected: str = Field(pattern=DECIMAL_PATTERN)


class CreditOutlook(BaseModel):
    """The credit held today against the period's expected spend."""

    model_config = ConfigDict(extra="forbid")

    balance_minor: int
    balance: str = Field(pattern=DECIMAL_PATTERN)
    covers_expected: bool = Field(description="The balance covers the expected total.")
    runs_out_on: date | None = Field(
        description="The day the run-rate uses the balance up; None: it lasts the period."
    )


class Forecast(BaseModel):
    """The current period's expected total at its end, with a low/high band."""

    model_config = ConfigDict(extra="forbid")

    org: str
    currency: str
    provisional: bool = Field(description="Always true: open periods are not final.")
    period: str
    period_start: date
    period_end: date = Field(description="The day after the period's last day (exclusive).")
    today: date
    method: str = Field(description="How the figures were computed, in words.")
    lookback_days: int = Field(ge=0, description="Complete days behind the run-rate.")
    remaining_days: int = Field(ge=1, description="Days left in the period, today included.")
    addons: str = Field(pattern=DECIMAL_PATTERN, description="Known add-ons of the period.")
    so_far: str = Field(pattern=DECIMAL_PATTERN, description="Rated so far, add-ons included.")
    expected: str = Field(pattern=DECIMAL_PATTERN)
    low: str = Field(pattern=DECIMAL_PATTERN)
    high: str = Field(pattern=DECIMAL_PATTERN)
    so_far_minor: int
    expected_minor: int
    low_minor: int
    high_minor: int
    meters: list[MeterForecastOut]
    credits: CreditOutlook | None = Field(
        description=(
            "None when the organization holds no credit account in this currency (or the "
            "books cannot be read now)."
        )
    )


def _minor(amount_atto: int, currency: str) -> int:
    """A rated amount rounded once, half to even, to the currency's minor units."""
    return rounded_half_even(amount_atto, 10 ** (AMOUNT_SCALE - minor_digits(currency)))


def _runs_out_on(forecast: PeriodForecast, balance_atto: int) -> date | None:
    """The first day whose spend (complete days, then the run-rate) reaches the balance;
    None when the expected total stays within it."""
    if forecast.expected_atto <= balance_atto:
        return None
    daily = sum(meter.daily_rate_atto for meter in forecast.meters)
    if forecast.complete_atto >= balance_atto or daily <= 0:
        return forecast.today
    days = -(-(balance_atto - forecast.complete_atto) // daily)  # ceiling division
    return forecast.today + timedelta(days=min(days, forecast.remaining_days) - 1)


def _credits(
    caller: Caller, org: str, forecast: PeriodForecast, currency: str
) -> CreditOutlook | None:
    try:
        entries = caller.context.ledger.entries()
    except Unavailable:  # the forecast stands without the books; say nothing of credit
        return None
    account = next(
        (
            row
            for row in customer_credits(entries, caller.context.today())
            if row.org == org and row.currency == currency
        ),
        None,
    )
    if account is None:
        return None
    balance_atto = account.balance_minor * 10 ** (AMOUNT_SCALE - minor_digits(currency))
    return CreditOutlook(
        balance_minor=account.balance_minor,
        balance=minor_text(account.balance_minor, currency),
        covers_expected=balance_atto >= forecast.expected_atto,
        runs_out_on=_runs_out_on(forecast, balance_atto) if balance_atto > 0 else None,
    )


def forecast_of(caller: Caller, org: str) -> Forecast:
    """The forecast (blocking: DuckDB and the books; run in a worker thread)."""
    context = caller.context
    workspace = context.workspace
    customer = workspace.customers.by_id().get(org)
    if customer is None:  # pragma: no cover - a visible organization is a customer
        raise NotFound(f"no organization {org!r}")
    today = context.today()
    period = period_of(customer.billing_period, today)
    currency = workspace.settings.billing.currency
    try:
        with request_store(context) as store:
            forecast = organization_forecast(store, org, period, today)
    except BeanbillError as error:
        raise Unavailable(f"the forecast cannot be computed now: {error}") from error
    return Forecast(
        org=org,
        currency=currency,
        provisional=True,
        period=period.key,
        period_start=period.start,
        period_end=period.end,
        today=today,
        method=forecast.method,
        lookback_days=forecast.lookback_days,
        remaining_days=forecast.remaining_days,
        addons=atto_text(forecast.addons_atto),
        so_far=atto_text(forecast.so_far_atto),
        expected=atto_text(forecast.expected_atto),
        low=atto_text(forecast.low_atto),
        high=atto_text(forecast.high_atto),
        so_far_minor=_minor(forecast.so_far_atto, currency),
        expected_minor=_minor(forecast.expected_atto, currency),
        low_minor=_minor(forecast.low_atto, currency),
        high_minor=_minor(forecast.high_atto, currency),
        meters=[
            MeterForecastOut(
                meter=meter.meter,
                so_far=atto_text(meter.so_far_atto),
                daily_rate=atto_text(meter.daily_rate_atto),
                expected=atto_text(meter.expected_atto),
            )
            for meter in forecast.meters
        ],
        credits=_credits(caller, org, forecast, currency),
    )


def router() -> APIRouter:
    routes = APIRouter(tags=["forecast"])

    @routes.get(
        "/v1/organizations/{org}/forecast",
        response_model=Forecast,
        summary="The current period's expected total at its end, with a low/high band",
        responses=responses(Unauthorized, NotFound, RateLimited, Unavailable),
    )
    async def get_forecast(caller: CallerDependency, org: OrganizationParameter) -> Forecast:
        caller.require(org)
        return await run_in_threadpool(forecast_of, caller, org)

    return routes
