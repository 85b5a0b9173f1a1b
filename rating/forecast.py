"""The expected total of a billing period at its end, with a low/high band.

Method (stated in every answer, and in the README), per organization:

1. **Known add-ons**: the period's add-on amounts are rated in full from its first day
   (``engine.addon_lines``), so they enter the forecast as they are.
2. **Settled usage**: the rated amounts of the period's days up to ``SETTLING_DAYS`` ago
   (in the billing time zone), per meter. An interval event arrives when it ends, so the
   most recent days still lack the events that are running: they are not taken as final.
3. **Run-rate**: per meter, the mean daily amount of the ``LOOKBACK_DAYS`` days before the
   settling days (days without usage count as zero; they may reach into earlier periods,
   which is what a daily or weekly customer needs), times the settling days and the days
   left including today; never below what is already rated for those days.
4. **Band**: the same days at the lowest and at the highest daily usage total of the
   look-back days (add-ons and settled usage as they are).

The backtest (tests/test_api_forecast.py) replays the demo month from the events known on
several cut-off days: the band holds the final total for about 70-80 % of organizations,
the median error of the expected total is 10-20 %; what it misses is mostly one-off
services (a migration) no run-rate foresees.

Everything is in integers of atto currency; the one division (a mean) is rounded half to
even to the atto. Amounts are rated ones, so tiers and free allowances are in the daily
amounts already; a free allowance or a volume tier the rest of the period will cross is
not foreseen (the band says how far the recent days spread, not every price change).

Rows come from the provisional rating of open periods (``rating.provisional``) and, for
months already rated for good, the rated store: for each month, the newer of the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

from beanbill.rating.errors import RatingError
from beanbill.rating.money import rounded_half_even
from beanbill.rating.periods import Month, Period
from beanbill.rating.provisional import provisional_lines_path
from beanbill.rating.rated_store import RatedStore, lines_path
from beanbill.rating.workspace import Workspace

LOOKBACK_DAYS = 7
# An interval event arrives when it ends: the last days lack the events still running, so
# they are projected like the days to come (never below what is rated for them already).
SETTLING_DAYS = 2
MAX_LOOKBACK_DAYS = 62
MAX_FORECAST_ROWS = 100_000  # one organization's meters × days over about three months
METHOD = (
    "run-rate: per meter, the period's days as rated up to {settling} day(s) ago, plus the "
    "mean daily amount of the {lookback} complete day(s) before those times the last "
    "{settling} day(s) (their longer events may not have ended yet) and the {remaining} "
    "day(s) left including today, never below what is rated for them; known add-ons of the "
    "period in full; band: the same days at the lowest and highest daily usage total of the "
    "look-back days"
)


class MeterDay(NamedTuple):
    """One meter's rated usage amount on one day (summed over resources and bands)."""

    day: date
    meter: str
    amount_atto: int


@dataclass(frozen=True)
class MeterForecast:
    meter: str
    so_far_atto: int  # complete days and today so far
    daily_rate_atto: int  # mean of the look-back days, rounded half to even
    expected_atto: int


@dataclass(frozen=True)
class PeriodForecast:
    period: Period
    today: date
    lookback_first: date  # first day of the look-back
    lookback_days: int  # complete days used for the run-rate (0: none yet)
    settling_days: int  # recent days projected too: their longer events may not have ended
    remaining_days: int  # days left including today
    addons_atto: int
    complete_atto: int  # add-ons and usage of the period's complete days
    so_far_atto: int  # add-ons and usage rated so far (today's partial usage included)
    expected_atto: int
    low_atto: int
    high_atto: int
    meters: tuple[MeterForecast, ...]

    @property
    def method(self) -> str:
        return METHOD.format(
            lookback=self.lookback_days,
            settling=self.settling_days,
            remaining=self.remaining_days,
        )


def forecast_period(
    usage: Sequence[MeterDay],
    addons_atto: int,
    period: Period,
    today: date,
    history_start: date,
    lookback_days: int = LOOKBACK_DAYS,
    settling_days: int = SETTLING_DAYS,
) -> PeriodForecast:
    """The forecast of ``period`` on ``today`` from ``usage`` rows (any days; those of the
    look-back and of the period are used); ``history_start``: the first day rows can hold,
    so that days before it are not counted as days without usage."""
    if not period.start <= today < period.end:
        raise RatingError(f"{today} is not in the period {period.key}")
    if not 1 <= lookback_days <= MAX_LOOKBACK_DAYS:
        raise RatingError(f"the look-back must be between 1 and {MAX_LOOKBACK_DAYS} days")
    if not 0 <= settling_days <= MAX_LOOKBACK_DAYS:
        raise RatingError(f"the settling days must be between 0 and {MAX_LOOKBACK_DAYS}")
    # Days from ``settled_end`` on may still lack events that have not ended yet.
    settled_end = max(today - timedelta(days=settling_days), history_start)
    lookback_first = max(settled_end - timedelta(days=lookback_days), history_start)
    window_days = (settled_end - lookback_first).days
    projected_first = max(settled_end, period.start)
    projected_days = (period.end - projected_first).days
    settled: dict[str, int] = defaultdict(int)  # the period's settled days, as rated
    unsettled: dict[str, int] = defaultdict(int)  # its later days so far, as rated
    window: dict[str, int] = defaultdict(int)
    daily_totals: dict[date, int] = {
        lookback_first + timedelta(days=offset): 0 for offset in range(window_days)
    }
    for row in usage:
        if period.start <= row.day < projected_first:
            settled[row.meter] += row.amount_atto
        elif projected_first <= row.day < period.end:
            unsettled[row.meter] += row.amount_atto
        if row.day in daily_totals:
            window[row.meter] += row.amount_atto
            daily_totals[row.day] += row.amount_atto
    meters = []
    for meter in sorted(settled.keys() | unsettled.keys() | window.keys()):
        so_far = settled[meter] + unsettled[meter]
        rate = rounded_half_even(window[meter], window_days) if window_days else 0
        expected = settled[meter] + max(projected_days * rate, unsettled[meter])
        meters.append(MeterForecast(meter, so_far, rate, expected))
    settled_total = sum(settled.values())
    unsettled_total = sum(unsettled.values())
    expected_usage = sum(meter.expected_atto for meter in meters)
    lowest = min(daily_totals.values(), default=0)
    highest = max(daily_totals.values(), default=0)
    low_usage = settled_total + max(projected_days * lowest, unsettled_total)
    high_usage = settled_total + max(projected_days * highest, unsettled_total)
    low_usage = min(low_usage, expected_usage)
    high_usage = max(high_usage, expected_usage)
    complete_total = sum(
        row.amount_atto for row in usage if period.start <= row.day < min(today, period.end)
    )
    return PeriodForecast(
        period=period,
        today=today,
        lookback_first=lookback_first,
        lookback_days=window_days,
        settling_days=(today - settled_end).days,
        remaining_days=(period.end - today).days,
        addons_atto=addons_atto,
        complete_atto=addons_atto + complete_total,
        so_far_atto=addons_atto + settled_total + unsettled_total,
        expected_atto=addons_atto + expected_usage,
        low_atto=addons_atto + low_usage,
        high_atto=addons_atto + high_usage,
        meters=tuple(meters),
    )


_ROWS_SQL = """
SELECT day, meter, list_contains($addons, meter) AS is_addon, sum(amount_atto) AS amount_atto
FROM read_parquet($paths)
WHERE org = $org
  AND ((NOT list_contains($addons, meter) AND day >= $first AND day < $end)
       OR (list_contains($addons, meter) AND period = $period AND period_start = $start))
GROUP BY ALL
ORDER BY day, meter
LIMIT $limit
"""


def _newest_lines(workspace: Workspace, month: Month) -> Path | None:
    """The month's provisional or final rated lines, whichever was written last."""
    candidates = [
        path
        for path in (provisional_lines_path(workspace, month), lines_path(workspace, month))
        if path.is_file()
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime_ns, default=None)


def organization_forecast(
    store: RatedStore,
    org: str,
    period: Period,
    today: date,
    lookback_days: int = LOOKBACK_DAYS,
) -> PeriodForecast:
    """``org``'s forecast of ``period`` from the provisional and rated lines on disk."""
    workspace = store.workspace
    first = min(today - timedelta(days=lookback_days), period.start)
    month = Month.of(first).previous()  # a week that began the month before holds days
    last = Month.of(period.end - timedelta(days=1))
    paths: list[str] = []
    history_start: date | None = None
    while month <= last:
        path = _newest_lines(workspace, month)
        if path is not None:
            paths.append(str(path))
            history_start = history_start or month.first_day
        month = month.next()
    usage: list[MeterDay] = []
    addons = 0
    if paths:
        parameters = {
            "paths": paths,
            "org": org,
            "addons": [addon.id for addon in workspace.catalog.addon],
            "first": first,
            "end": period.end,
            "period": period.key,
            "start": period.start,
            "limit": MAX_FORECAST_ROWS + 1,
        }
        rows = store.connection.execute(_ROWS_SQL, parameters).fetchall()
        if len(rows) > MAX_FORECAST_ROWS:
            raise RatingError(f"{org} has more than {MAX_FORECAST_ROWS:,} meter-days to forecast")
        for day, meter, is_addon, amount in rows:
            if is_addon:
                addons += int(amount)
            else:
                usage.append(MeterDay(day, str(meter), int(amount)))
    return forecast_period(
        usage, addons, period, today, history_start or today, lookback_days=lookback_days
    )
