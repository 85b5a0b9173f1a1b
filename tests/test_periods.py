"""Calendar arithmetic in the period time zone."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from beanbill.rating.config import BillingPeriod
from beanbill.rating.errors import PeriodError
from beanbill.rating.periods import (
    Month,
    day_rows,
    offset_changes,
    parse_month_range,
    period_of,
    periods_starting_in,
    rating_window,
)


def test_month_ranges() -> None:
    assert [m.key for m in parse_month_range("2026-11..2027-02")] == [
        "2026-11",
        "2026-12",
        "2027-01",
        "2027-02",
    ]
    for bad in ("2026-13", "2026-1", "november", "2026-11..2026-10"):
        with pytest.raises(PeriodError):
            parse_month_range(bad)


def test_iso_weeks_and_year_ends() -> None:
    assert period_of(BillingPeriod.WEEKLY, date(2027, 1, 1)).key == "2026-W53"
    weeks = periods_starting_in(BillingPeriod.WEEKLY, Month(2026, 12))
    assert [w.key for w in weeks] == ["2026-W50", "2026-W51", "2026-W52", "2026-W53"]
    assert rating_window(Month(2026, 12)) == (date(2026, 12, 1), date(2027, 1, 4))
    assert len(periods_starting_in(BillingPeriod.DAILY, Month(2028, 2))) == 29


def test_dst_days_have_their_true_length() -> None:
    paris = ZoneInfo("Europe/Paris")
    changes = offset_changes(paris, date(2026, 10, 20), date(2026, 10, 30))
    assert [c.offset_seconds for c in changes] == [7200, 3600]
    rows = {
        row.day: row.end_epoch - row.start_epoch
        for row in day_rows(paris, date(2026, 10, 24), date(2026, 10, 27))
    }
    assert rows == {
        date(2026, 10, 24): 86_400,
        date(2026, 10, 25): 90_000,
        date(2026, 10, 26): 86_400,
    }
