"""Usage out: an organization's billing periods, family → meter → resource → day.

Closed periods (posted to the ledger: ``state/periods.sqlite``) are shown from the rated
lines they were posted from, so their figures are final. Periods not closed yet that have
begun by today are shown from the provisional rating of open periods (``beanbill rate
--open``, ``rating.provisional``), each flagged ``provisional``: the same engine, so the
figures are what the final rating gives for the events received so far. Amounts
are the rated full-precision amounts (exact decimal strings, before the ledger's one
rounding to the cent); quantities are unit-seconds for interval meters and units for
counters, as rated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from itertools import groupby
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from beanbill.api.auth import Caller, CallerDependency
from beanbill.api.money import DECIMAL_PATTERN
from beanbill.api.organizations import OrganizationParameter
from beanbill.api.problems import NotFound, RateLimited, Unauthorized, Unavailable, responses
from beanbill.api.rated_reader import request_store
from beanbill.rating.closures import ClosedPeriods
from beanbill.rating.config import MeterKind
from beanbill.rating.errors import BeanbillError
from beanbill.rating.money import AMOUNT_SCALE, QUANTITY_SCALE
from beanbill.rating.periods import Month, periods_starting_in
from beanbill.rating.provisional import provisional_lines_path
from beanbill.rating.usage_detail import UsageDay, usage_days

MONTH_QUERY_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


class DayUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    quantity: str = Field(pattern=DECIMAL_PATTERN)
    amount: str = Field(pattern=DECIMAL_PATTERN)


class ResourceUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: str
    quantity: str = Field(pattern=DECIMAL_PATTERN)
    amount: str = Field(pattern=DECIMAL_PATTERN)
    days: list[DayUsage]


class MeterUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meter: str
    quantity_unit: str = Field(description="vCPU-second (interval meters), GB (counters), ...")
    quantity: str = Field(pattern=DECIMAL_PATTERN)
    amount: str = Field(pattern=DECIMAL_PATTERN)
    resources: list[ResourceUsage]


class FamilyUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str
    amount: str = Field(pattern=DECIMAL_PATTERN)
    meters: list[MeterUsage]


class PeriodUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: str
    period_start: date
    period_end: date = Field(description="The day after the period's last day (exclusive).")
    provisional: bool = Field(
        description="True: the period is still open; its figures are so far, not final."
    )
    amount: str = Field(pattern=DECIMAL_PATTERN)
    families: list[FamilyUsage]


class UsageReport(BaseModel):
    """An organization's periods starting in ``month``, drilled down to the day."""

    model_config = ConfigDict(extra="forbid")

    org: str
    month: str
    currency: str
    provisional: bool = Field(description="True when any period shown is still open.")
    periods: list[PeriodUsage]


def _quantity_units(caller: Caller) -> dict[str, str]:
    return {
        meter.id: f"{meter.unit}-second" if meter.kind is MeterKind.INTERVAL else meter.unit
        for meter in caller.context.workspace.catalog.rated_meters()
    }


def scaled_text(value: int, scale: int) -> str:
    """``money.atto_text``/``micro_text``'s exact text by string slicing: the drill-down
    writes tens of thousands of figures a request, and the Decimal route costs a third of
    its time (the two agree: tests/test_api_forecast.py)."""
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(scale + 1, "0")
    whole, fraction = digits[:-scale], digits[-scale:].rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


def _sums(rows: list[UsageDay]) -> tuple[str, str]:
    return (
        scaled_text(sum(row.quantity_micro for row in rows), QUANTITY_SCALE),
        scaled_text(sum(row.amount_atto for row in rows), AMOUNT_SCALE),
    )


def _grouped(rows: Iterable[UsageDay], field: str) -> Iterator[tuple[str, list[UsageDay]]]:
    for key, group in groupby(rows, key=lambda row: getattr(row, field)):
        yield str(key), list(group)


def report(caller: Caller, org: str, month: Month) -> UsageReport:
    """The drill-down (blocking: DuckDB; run in a worker thread)."""
    context = caller.context
    workspace = context.workspace
    closed = sorted(p for o, p in ClosedPeriods(workspace.state_dir).all_keys() if o == org)
    customer = workspace.customers.by_id().get(org)
    today = context.today()
    begun = periods_starting_in(customer.billing_period, month) if customer is not None else []
    still_open = [p.key for p in begun if p.start <= today and p.key not in closed]
    units = _quantity_units(caller)
    try:
        with request_store(context) as store:
            rows = usage_days(store, month, org, closed)
            rows += usage_days(
                store, month, org, still_open, provisional_lines_path(workspace, month)
            )
    except BeanbillError as error:
        raise Unavailable(f"usage cannot be read now: {error}") from error
    rows.sort(key=lambda row: (row.period, row.family, row.meter, row.resource, row.day))
    periods = []
    for period, period_rows in _grouped(rows, "period"):
        families = []
        for family, family_rows in _grouped(period_rows, "family"):
            meters = []
            for meter, meter_rows in _grouped(family_rows, "meter"):
                resources = []
                for resource, resource_rows in _grouped(meter_rows, "resource"):
                    quantity, amount = _sums(resource_rows)
                    days = [
                        DayUsage(
                            day=row.day,
                            quantity=scaled_text(row.quantity_micro, QUANTITY_SCALE),
                            amount=scaled_text(row.amount_atto, AMOUNT_SCALE),
                        )
                        for row in resource_rows
                    ]
                    resources.append(
                        ResourceUsage(
                            resource=resource, quantity=quantity, amount=amount, days=days
                        )
                    )
                quantity, amount = _sums(meter_rows)
                meters.append(
                    MeterUsage(
                        meter=meter,
                        quantity_unit=units.get(meter, meter_rows[0].unit),
                        quantity=quantity,
                        amount=amount,
                        resources=resources,
                    )
                )
            families.append(FamilyUsage(family=family, amount=_sums(family_rows)[1], meters=meters))
        periods.append(
            PeriodUsage(
                period=period,
                period_start=period_rows[0].period_start,
                period_end=period_rows[0].period_end,
                provisional=period in still_open,
                amount=_sums(period_rows)[1],
                families=families,
            )
        )
    return UsageReport(
        org=org,
        month=month.key,
        currency=context.workspace.settings.billing.currency,
        provisional=any(period.provisional for period in periods),
        periods=periods,
    )


def router() -> APIRouter:
    routes = APIRouter(tags=["usage"])

    @routes.get(
        "/v1/organizations/{org}/usage",
        response_model=UsageReport,
        summary="Usage of closed and open periods, family → meter → resource → day",
        responses=responses(Unauthorized, NotFound, RateLimited, Unavailable),
    )
    async def get_usage(
        caller: CallerDependency,
        org: OrganizationParameter,
        month: Annotated[
            str,
            Query(
                pattern=MONTH_QUERY_PATTERN,
                description="YYYY-MM: the billing periods that start in this month.",
            ),
        ],
    ) -> Response:
        caller.require(org)
        built = await run_in_threadpool(report, caller, org, Month.parse(month))
        # Built and validated once as a UsageReport: returned as its JSON, FastAPI does not
        # validate the thousands of days a second time (the document still names the model).
        return Response(built.model_dump_json(), media_type="application/json")

    return routes
