"""The forecast (``GET /v1/organizations/{org}/forecast``) and open periods' usage.

The backtest replays the demo month as the system saw it on several cut-off days: only
the events that had ended by then (an interval event arrives when it ends), rated by the
real engine, then forecast, and compared with the month's final rating. Stated goals,
measured on the demo's generator (whose one-off services, e.g. a 49 € migration, no
run-rate foresees): the band holds the actual total for at least 65 % of the
organizations' periods, and the median error of the expected total is at most 25 %.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import date
from decimal import Decimal

import duckdb
import ibis
import pytest
from fastapi.testclient import TestClient

from beanbill.api.app import create_app
from beanbill.api.keys import KeyStore
from beanbill.api.money import atto_text, micro_text
from beanbill.api.usage import scaled_text
from beanbill.rating.engine import month_input, rate, source_months, usage_files
from beanbill.rating.forecast import MeterDay, forecast_period
from beanbill.rating.money import AMOUNT_SCALE, QUANTITY_SCALE, from_scaled_integer
from beanbill.rating.periods import Month, local_midnight_epoch, period_of
from beanbill.rating.provisional import provisional_lines_path, rate_open
from beanbill.rating.rate import load_events
from beanbill.rating.rated_store import lines_path
from beanbill.rating.workspace import Workspace
from tests.support import rated_demo
from tests.test_api import UNLIMITED, bearer

OCTOBER = Month(2026, 10)
CUT_OFF_DAYS = (10, 14, 18, 22, 26)
MIN_COVERAGE = 0.65
MAX_MEDIAN_ERROR = 0.25
TODAY = date(2026, 10, 20)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    workspace, _ = rated_demo(tmp_path_factory.mktemp("forecast") / "ws", 40, seed=23)
    return workspace


def _final_totals(workspace: Workspace) -> dict[tuple[str, str], int]:
    path = str(lines_path(workspace, OCTOBER))
    rows = duckdb.execute(
        "SELECT org, period, sum(amount_atto)::HUGEINT FROM read_parquet(?) GROUP BY ALL", [path]
    ).fetchall()
    return {(org, period): int(amount) for org, period, amount in rows}


def test_the_band_holds_the_month_s_actual_total_for_most_organizations(
    demo: Workspace,
) -> None:
    rating_input = month_input(
        OCTOBER, demo.settings.billing.timezone, demo.catalog, demo.customers
    )
    connection = ibis.duckdb.connect(**demo.duckdb_config())
    months = source_months(rating_input, demo.settings.billing.max_event_duration_days)
    events = load_events(connection, usage_files(demo.usage_dir, months))
    addons = {addon.id for addon in demo.catalog.addon}
    actual = _final_totals(demo)
    covered: list[bool] = []
    errors: list[float] = []
    for day in CUT_OFF_DAYS:
        cut_off = date(2026, 10, day)
        known = events.filter(events.end_s <= local_midnight_epoch(cut_off, rating_input.zone))
        lines = rate(known, rating_input)
        summed = lines.group_by("org", "period", "day", "meter").aggregate(
            amount=lines.amount_atto.sum()
        )
        by_org: dict[str, list[dict[str, object]]] = defaultdict(list)
        for row in connection.to_pyarrow(summed).to_pylist():
            by_org[str(row["org"])].append(row)
        for customer in demo.customers.customer:
            period = period_of(customer.billing_period, cut_off)
            rows = by_org[customer.id]
            usage = [
                MeterDay(row["day"], str(row["meter"]), int(row["amount"]))  # type: ignore[arg-type, call-overload]
                for row in rows
                if row["meter"] not in addons
            ]
            known_addons = sum(
                int(row["amount"])  # type: ignore[call-overload]
                for row in rows
                if row["meter"] in addons and row["period"] == period.key
            )
            forecast = forecast_period(usage, known_addons, period, cut_off, OCTOBER.first_day)
            total = actual[(customer.id, period.key)]
            assert forecast.low_atto <= forecast.expected_atto <= forecast.high_atto
            assert forecast.so_far_atto <= forecast.high_atto
            covered.append(forecast.low_atto <= total <= forecast.high_atto)
            errors.append(abs(forecast.expected_atto - total) / total)
    coverage = sum(covered) / len(covered)
    median_error = statistics.median(errors)
    assert len(covered) == len(CUT_OFF_DAYS) * len(demo.customers.customer)
    assert coverage >= MIN_COVERAGE, (coverage, median_error)
    assert median_error <= MAX_MEDIAN_ERROR, (coverage, median_error)


@pytest.fixture(scope="module")
def opened(demo: Workspace) -> tuple[TestClient, str]:
    rate_open(demo, TODAY)
    orgs = [customer.id for customer in demo.customers.customer]
    key = KeyStore(demo.state_dir).create(None, orgs, "admin").secret_key
    return TestClient(create_app(demo, UNLIMITED, today=lambda: TODAY)), key


def _monthly(demo: Workspace) -> str:
    return next(c.id for c in demo.customers.customer if c.billing_period.value == "monthly")


def test_the_forecast_states_its_method_and_exact_figures(
    demo: Workspace, opened: tuple[TestClient, str]
) -> None:
    client, key = opened
    org = _monthly(demo)
    response = client.get(f"/v1/organizations/{org}/forecast", headers=bearer(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provisional"] is True
    assert (body["period"], body["period_start"], body["period_end"]) == (
        "2026-10",
        "2026-10-01",
        "2026-11-01",
    )
    assert "run-rate" in body["method"] and "add-ons" in body["method"]
    assert body["remaining_days"] == 12 and body["lookback_days"] == 7
    low, expected, high = (Decimal(body[name]) for name in ("low", "expected", "high"))
    assert Decimal(body["so_far"]) <= expected and low <= expected <= high
    assert all(isinstance(body[f"{name}_minor"], int) for name in ("low", "expected", "high"))
    assert body["expected_minor"] == int(expected.quantize(Decimal("0.01")) * 100)
    assert (
        sum(Decimal(meter["expected"]) for meter in body["meters"]) + Decimal(body["addons"])
        == expected
    )


def test_open_periods_usage_is_flagged_provisional_and_adds_up(
    demo: Workspace, opened: tuple[TestClient, str]
) -> None:
    client, key = opened
    org = _monthly(demo)
    response = client.get(
        f"/v1/organizations/{org}/usage", params={"month": "2026-10"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provisional"] is True
    [period] = body["periods"]
    assert period["provisional"] is True and period["period"] == "2026-10"
    path = str(provisional_lines_path(demo, OCTOBER))
    [[amount]] = duckdb.execute(
        "SELECT sum(amount_atto)::HUGEINT FROM read_parquet(?) WHERE org = ?", [path, org]
    ).fetchall()
    assert Decimal(period["amount"]) == from_scaled_integer(int(amount), AMOUNT_SCALE)
    days = {d["day"] for f in period["families"] for m in f["meters"] for r in m["resources"]
            for d in r["days"]}  # fmt: skip
    assert max(days) <= "2026-10-31"


def test_a_daily_customer_sees_only_the_days_begun(
    demo: Workspace, opened: tuple[TestClient, str]
) -> None:
    client, key = opened
    org = next(c.id for c in demo.customers.customer if c.billing_period.value == "daily")
    body = client.get(
        f"/v1/organizations/{org}/usage", params={"month": "2026-10"}, headers=bearer(key)
    ).json()
    assert body["periods"] and all(p["provisional"] for p in body["periods"])
    assert max(p["period_start"] for p in body["periods"]) == TODAY.isoformat()
    forecast = client.get(f"/v1/organizations/{org}/forecast", headers=bearer(key)).json()
    assert forecast["period"] == TODAY.isoformat() and forecast["remaining_days"] == 1


def test_the_drill_down_s_fast_text_is_money_s_exact_text() -> None:
    values = [0, 1, -1, 10, 5 * 10**17, 10**18, 4999936000000000000, -123456789012345678901234]
    values += [int(str(7**power)[:30]) for power in range(1, 60)]
    for value in values:
        assert scaled_text(value, AMOUNT_SCALE) == atto_text(value)
        assert scaled_text(value, QUANTITY_SCALE) == micro_text(value)
