"""The usage drill-down of one month: family → meter → resource → day, with its chart.

Built from the API's own usage report (``beanbill.api.usage.report``: closed periods,
the rated full-precision amounts), so the portal and ``/v1/.../usage`` never disagree.
A month may hold several billing periods (daily or weekly billing): the drill-down adds
them up per day. At each level the chart shows the selected scope's cost per day of the
month, stacked by the next level down, and the table lists that next level with links.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from beanbill.api.problems import NotFound
from beanbill.api.usage import UsageReport
from beanbill.rating.periods import Month

LEVELS = ("family", "meter", "resource", "day")
MAX_SERIES = 8  # beyond this, the smallest series of a chart are added up as "others"
OTHERS = "others"


@dataclass(frozen=True)
class UsageRow:
    """One resource's use of one meter on one day (summed over the month's periods)."""

    family: str
    meter: str
    unit: str
    resource: str
    day: date
    quantity: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Selection:
    """Where the reader is: each level chosen so far (None: not drilled into yet)."""

    family: str | None = None
    meter: str | None = None
    resource: str | None = None
    day: date | None = None

    def chosen(self) -> list[tuple[str, str]]:
        values = (self.family, self.meter, self.resource, self.day)
        return [(level, str(value)) for level, value in zip(LEVELS, values, strict=True) if value]

    def is_path(self) -> bool:
        """Each level chosen only below a chosen one (no resource without its meter)."""
        values = [self.family, self.meter, self.resource, self.day]
        return None not in values[: len(self.chosen())]

    def next_level(self) -> str | None:
        chosen = len(self.chosen())
        return LEVELS[chosen] if chosen < len(LEVELS) else None

    def matches(self, row: UsageRow) -> bool:
        return all(
            wanted is None or wanted == value
            for wanted, value in (
                (self.family, row.family),
                (self.meter, row.meter),
                (self.resource, row.resource),
                (self.day, row.day),
            )
        )


@dataclass(frozen=True)
class Child:
    """One line of the drill-down's table: the next level's item and what it cost."""

    name: str
    quantity: Decimal | None  # None for a family (meters of other units)
    unit: str
    amount: Decimal
    href: str


@dataclass(frozen=True)
class Crumb:
    label: str
    href: str


@dataclass
class DrillDown:
    """What the usage page shows for one selection of one month."""

    month: Month
    currency: str
    level: str | None  # the level the table lists; None at a single day
    crumbs: list[Crumb]
    children: list[Child]
    total: Decimal
    quantity: Decimal | None
    unit: str
    chart: dict[str, Any] = field(default_factory=dict)


def rows_of(report: UsageReport) -> list[UsageRow]:
    """The report's days as flat rows, the month's periods added up per day."""
    sums: dict[tuple[str, str, str, str, date], list[Decimal]] = defaultdict(
        lambda: [Decimal(0), Decimal(0)]
    )
    for period in report.periods:
        for family in period.families:
            for meter in family.meters:
                for resource in meter.resources:
                    for day in resource.days:
                        key = (family.family, meter.meter, meter.quantity_unit,
                               resource.resource, day.day)  # fmt: skip
                        sums[key][0] += Decimal(day.quantity)
                        sums[key][1] += Decimal(day.amount)
    return [
        UsageRow(family, meter, unit, resource, day, quantity, amount)
        for (family, meter, unit, resource, day), (quantity, amount) in sorted(sums.items())
    ]


def usage_href(base: str, month: Month, selection: Iterable[tuple[str, str]]) -> str:
    return f"{base}?{urlencode([('month', month.key), *selection])}"


def _crumbs(base: str, month: Month, selection: Selection) -> list[Crumb]:
    chosen = selection.chosen()
    crumbs = [Crumb(f"All usage of {month.key}", usage_href(base, month, []))]
    crumbs += [
        Crumb(value, usage_href(base, month, chosen[: index + 1]))
        for index, (_, value) in enumerate(chosen)
    ]
    return crumbs


def _name_at(row: UsageRow, level: str) -> str:
    return str(getattr(row, level))


def _children(
    rows: list[UsageRow], level: str, base: str, month: Month, selection: Selection
) -> list[Child]:
    grouped: dict[str, list[UsageRow]] = defaultdict(list)
    for row in rows:
        grouped[_name_at(row, level)].append(row)
    chosen = selection.chosen()
    children = [
        Child(
            name=name,
            quantity=None
            if level == "family"
            else sum((row.quantity for row in group), Decimal(0)),
            unit="" if level == "family" else group[0].unit,
            amount=sum((row.amount for row in group), Decimal(0)),
            href=usage_href(base, month, [*chosen, (level, name)]),
        )
        for name, group in grouped.items()
    ]
    if level == "day":
        return sorted(children, key=lambda child: child.name)
    return sorted(children, key=lambda child: (-child.amount, child.name))


def _month_days(month: Month) -> list[date]:
    last = calendar.monthrange(month.year, month.month)[1]
    return [date(month.year, month.month, number) for number in range(1, last + 1)]


def _chart(rows: list[UsageRow], month: Month, level: str, children: list[Child]) -> dict[str, Any]:
    """Chart.js data: the month's days, one stacked series per child (the largest ones;
    the rest added up as "others"). Each series links to its child's page. Amounts become
    floats here only to be drawn: every figure printed on the page stays exact."""
    days = _month_days(month)
    kept = children if len(children) <= MAX_SERIES else children[: MAX_SERIES - 1]
    names = {child.name for child in kept}
    per_series: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in rows:
        name = _name_at(row, level)
        per_series[name if name in names else OTHERS][row.day] += row.amount
    series = [
        {"label": child.name, "href": child.href,
         "data": [float(per_series[child.name][day]) for day in days]}
        for child in kept
    ]  # fmt: skip
    if OTHERS in per_series:
        data = [float(per_series[OTHERS][day]) for day in days]
        series.append({"label": OTHERS, "href": "", "data": data})
    return {"labels": [day.isoformat() for day in days], "series": series}


def _resource_chart(
    rows: list[UsageRow], month: Month, label: str, days: list[Child], chosen: date | None
) -> dict[str, Any]:
    """One resource's cost per day: a single series, each day's bar linking to that day
    (the chosen day, if any, highlighted among the month's)."""
    links = {child.name: child.href for child in days}
    per_day: dict[date, Decimal] = defaultdict(Decimal)
    for row in rows:
        per_day[row.day] += row.amount
    labels = [day.isoformat() for day in _month_days(month)]
    data = [float(per_day[day]) for day in _month_days(month)]
    day_links = [links.get(text, "") for text in labels]
    highlight = labels.index(chosen.isoformat()) if chosen else None
    return {"labels": labels, "series": [{"label": label, "href": "", "data": data}],
            "day_links": day_links, "highlight": highlight}  # fmt: skip


def _chart_of(
    scope: list[UsageRow], month: Month, level: str | None, children: list[Child], at: Selection
) -> dict[str, Any]:
    """The chart of ``scope`` (the selection's rows over the whole month)."""
    if level in ("family", "meter", "resource"):
        return _chart(scope, month, level, children)
    return _resource_chart(scope, month, at.resource or "", children, at.day)


def drill_down(report: UsageReport, base: str, month: Month, selection: Selection) -> DrillDown:
    """The page for ``selection``; an item the month does not hold is "not found"."""
    every_day = replace(selection, day=None)
    scope = [row for row in rows_of(report) if every_day.matches(row)]
    rows = [row for row in scope if selection.matches(row)]
    if not selection.is_path() or (selection.chosen() and not rows):
        raise NotFound("no such usage in this month")
    level = selection.next_level()
    children = _children(rows, level, base, month, selection) if level else []
    # A single day's page keeps the resource's other days on its chart, as links.
    days = children if level else _children(scope, "day", base, month, every_day)
    single_unit = len({row.unit for row in rows}) == 1 and selection.meter is not None
    return DrillDown(
        month=month,
        currency=report.currency,
        level=level,
        crumbs=_crumbs(base, month, selection),
        children=children,
        total=sum((row.amount for row in rows), Decimal(0)),
        quantity=sum((row.quantity for row in rows), Decimal(0)) if single_unit else None,
        unit=rows[0].unit if single_unit and rows else "",
        chart=_chart_of(scope, month, level, days, selection),
    )
