"""Usage out: an organization's closed billing periods, family → meter → resource → day.

Only closed periods (posted to the ledger: ``state/periods.sqlite``) are shown, from the
rated lines they were posted from, so the figures are final, not provisional. Amounts
are the rated full-precision amounts (exact decimal strings, before the ledger's one
rounding to the cent); quantities are unit-seconds for interval meters and units for
counters, as rated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from itertools import groupby
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from beanbill.api.auth import Caller, CallerDependency
from beanbill.api.money import DECIMAL_PATTERN, atto_text, micro_text
from beanbill.api.organizations import OrganizationParameter
from beanbill.api.problems import NotFound, RateLimited, Unauthorized, Unavailable, responses
from beanbill.rating.closures import ClosedPeriods
from beanbill.rating.config import MeterKind
from beanbill.rating.errors import BeanbillError
from beanbill.rating.periods import Month
from beanbill.rating.rated_store import RatedStore
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
    amount: str = Field(pattern=DECIMAL_PATTERN)
    families: list[FamilyUsage]


class UsageReport(BaseModel):
    """An organization's closed periods starting in ``month``, drilled down to the day."""

    model_config = ConfigDict(extra="forbid")

    org: str
    month: str
    currency: str
    provisional: bool = Field(description="Always false here: closed periods only.")
    periods: list[PeriodUsage]


def _quantity_units(caller: Caller) -> dict[str, str]:
    return {
        meter.id: f"{meter.unit}-second" if meter.kind is MeterKind.INTERVAL else meter.unit
        for meter in caller.context.workspace.catalog.rated_meters()
    }


def _sums(rows: list[UsageDay]) -> tuple[str, str]:
    return (
        micro_text(sum(row.quantity_micro for row in rows)),
        atto_text(sum(row.amount_atto for row in rows)),
    )


def _grouped(rows: Iterable[UsageDay], field: str) -> Iterator[tuple[str, list[UsageDay]]]:
    for key, group in groupby(rows, key=lambda row: getattr(row, field)):
        yield str(key), list(group)


def report(caller: Caller, org: str, month: Month) -> UsageReport:
    """The drill-down (blocking: DuckDB; run in a worker thread)."""
    context = caller.context
    closed = sorted(p for o, p in ClosedPeriods(context.workspace.state_dir).all_keys() if o == org)
    units = _quantity_units(caller)
    try:
        with RatedStore(context.workspace) as store:
            rows = usage_days(store, month, org, closed)
    except BeanbillError as error:
        raise Unavailable(f"usage cannot be read now: {error}") from error
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
                            quantity=micro_text(row.quantity_micro),
                            amount=atto_text(row.amount_atto),
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
                amount=_sums(period_rows)[1],
                families=families,
            )
        )
    return UsageReport(
        org=org,
        month=month.key,
        currency=context.workspace.settings.billing.currency,
        provisional=False,
        periods=periods,
    )


def router() -> APIRouter:
    routes = APIRouter(tags=["usage"])

    @routes.get(
        "/v1/organizations/{org}/usage",
        response_model=UsageReport,
        summary="Usage of closed periods, family → meter → resource → day",
        responses=responses(Unauthorized, NotFound, RateLimited, Unavailable),
    )
    async def get_usage(
        caller: CallerDependency,
        org: OrganizationParameter,
        month: Annotated[
            str,
            Query(
                pattern=MONTH_QUERY_PATTERN,
                description="YYYY-MM: the closed billing periods that start in this month.",
            ),
        ],
    ) -> UsageReport:
        caller.require(org)
        return await run_in_threadpool(report, caller, org, Month.parse(month))

    return routes
