"""Invoice lines people can read: quantities and prices in the catalog's units, labels that
say the tier, the free allowance and the price change, e-invoice fields within the rules.

``detail_lines`` is pure: these tests build the posting and its rated groups as the
ledger and the rated store give them; one test goes through rating, posting and issuing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from beanbill.ledger import keys
from beanbill.ledger.accounts import income_account
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.invoicing.due import Consumption
from beanbill.ledger.invoicing.lines import DetailLine, detail_lines
from beanbill.ledger.rounding import round_posting
from beanbill.rating.config import Catalog, parse_model
from beanbill.rating.money import amount_atto
from beanbill.rating.periods import Month
from beanbill.rating.rated_store import RatedGroup, RatedStore
from beanbill.rating.workspace import Workspace

OCTOBER = date(2026, 10, 1)
NOVEMBER = date(2026, 11, 1)
PRICE_CUT = date(2026, 10, 15)
PICO = 10**12
CATALOG_FIELDS: dict[str, Any] = {
    "meter": [
        {"id": "cpu", "name": "vCPU", "unit": "vCPU", "kind": "interval", "family": "Compute",
         "per": "hour", "price": [{"effective": date(2026, 1, 1), "price": "0.025"},
                                  {"effective": PRICE_CUT, "price": "0.023"}]},
        {"id": "old-cpu", "name": "Legacy vCPU", "unit": "vCPU", "kind": "interval",
         "family": "Compute", "price": [{"effective": date(2026, 1, 1), "price": "0.0000069444"}]},
        {"id": "disk", "name": "Block storage", "unit": "GB", "kind": "interval",
         "family": "Storage", "per": "month",
         "price": [{"effective": date(2026, 1, 1), "free": "100",
                    "tiers": [{"up_to": "10000", "price": "0.01"}, {"price": "0.008"}]}]},
        {"id": "requests", "name": "Object requests", "unit": "request", "kind": "counter",
         "family": "Storage", "per": "million",
         "price": [{"effective": date(2026, 1, 1), "mode": "volume",
                    "tiers": [{"up_to": "1", "price": "0.40"}, {"price": "0.30"}]}]},
        {"id": "egress", "name": "Egress", "unit": "GB", "kind": "counter", "family": "Network",
         "price": [{"effective": date(2026, 1, 1), "price": "0.01"}]},
    ],
    "addon": [{"id": "backup", "name": "Backup",
               "price": {"monthly": "9.90", "weekly": "2.50", "daily": "0.40"}}],
    "service": [{"id": "migration", "name": "Migration", "price": "49.00"}],
}  # fmt: skip
CATALOG = parse_model(Catalog, CATALOG_FIELDS, "catalog")


def group(
    meter: str,
    quantity_micro: int,
    price: str,
    band: int = 0,
    family: str = "Compute",
    days: tuple[date, date] | None = None,
    basis_units: int = 3600,
    is_free: bool = False,
) -> RatedGroup:
    """A rated group as the store serves it, its amount rated as the engine rates one row."""
    price_pico = int(Decimal(price) * PICO)
    first, last = days or (None, None)
    return RatedGroup(
        family,
        meter,
        f"r-{meter}",
        band,
        is_free,
        price_pico,
        quantity_micro,
        amount_atto(quantity_micro, price_pico, basis_units),
        first,
        last,
    )


def consumption(
    groups: list[RatedGroup],
    start: date = OCTOBER,
    end: date = NOVEMBER,
    day: date | None = None,
) -> Consumption:
    """The posting these groups explain: each family's rated amount, rounded to cents."""
    rated: dict[str, int] = {}
    for item in groups:
        rated[item.family] = rated.get(item.family, 0) + item.amount_atto
    postings = tuple(
        Posting(
            income_account(family),
            -round_posting(atto, 2),
            "EUR",
            ((keys.RATED_AMOUNT, Decimal(f"{atto}E-18")),),
        )
        for family, atto in sorted(rated.items())
    )
    transaction = Transaction(end, "usage:acme:2026-10", "Usage", postings)
    return Consumption(transaction, "acme", "2026-10", start, end, "rated/x", day, day)


def lines_of(groups: list[RatedGroup], **posting: Any) -> list[DetailLine]:
    return detail_lines(consumption(groups, **posting), groups, CATALOG, 2)


def test_a_vcpu_line_reads_in_hours_at_the_published_price() -> None:
    """838,356 vCPU-seconds at 0.025 per vCPU-hour: 232.8767 h × 0.025 = 5.82."""
    [line] = lines_of([group("cpu", 838_356 * 10**6, "0.025")])
    assert (line.shown_quantity, line.shown_unit, line.shown_price) == (
        Decimal("232.8767"),
        "h",
        Decimal("0.025"),
    )
    assert (line.quantity, line.unit_code, line.unit_price, line.base_quantity) == (
        Decimal("232.8767"),
        "HUR",
        Decimal("0.025"),
        Decimal(1),
    )
    assert line.net_minor == 582
    assert line.description == "vCPU · r-cpu"


def test_a_per_second_price_reads_per_hour_exactly() -> None:
    """An old catalog's 0.0000069444 per vCPU-second is 0.02499984 per hour, exactly; the
    e-invoice keeps six decimals with a base quantity of 100 hours."""
    [line] = lines_of([group("old-cpu", 838_356 * 10**6, "0.0000069444", basis_units=1)])
    assert (line.shown_quantity, line.shown_unit, line.shown_price) == (
        Decimal("232.8767"),
        "h",
        Decimal("0.02499984"),
    )
    assert (line.unit_code, line.unit_price, line.base_quantity) == (
        "HUR",
        Decimal("2.499984"),
        Decimal(100),
    )


def test_storage_tiers_and_free_allowance_read_in_gb_months() -> None:
    gb_month_micro = 730 * 3600 * 10**6
    groups = [
        group("disk", 100 * gb_month_micro, "0", 0, "Storage", None, 730 * 3600, True),
        group("disk", 9_900 * gb_month_micro, "0.01", 1, "Storage", basis_units=730 * 3600),
        group("disk", 72_000 * 3600 * 10**6, "0.008", 2, "Storage", basis_units=730 * 3600),
    ]
    free, tier, above = lines_of(groups)
    assert free.description == "Block storage · r-disk (free allowance: first 100 GB-month)"
    assert tier.description == "Block storage · r-disk (tier 100–10,000 GB-month)"
    assert above.description == "Block storage · r-disk (above 10,000 GB-month)"
    # 72,000 GB-hours are 98.6301 GB-months (a month is 730 hours)
    assert (above.shown_quantity, above.shown_unit, above.shown_price) == (
        Decimal("98.6301"),
        "GB-month",
        Decimal("0.008"),
    )
    assert (above.quantity, above.unit_code, above.unit_price, above.base_quantity) == (
        Decimal("98.6301"),
        "MON",
        Decimal("0.008"),
        Decimal(1),
    )
    assert tier.net_minor == 9_900 and free.net_minor == 0 and above.net_minor == 79


def test_requests_read_per_million_with_a_base_quantity_on_the_e_invoice() -> None:
    below = group("requests", 900_000 * 10**6, "0.40", 0, "Storage", basis_units=10**6)
    above = group("requests", 3_245_678 * 10**6, "0.30", 1, "Storage", basis_units=10**6)
    first, second = lines_of([below, above])
    assert first.description == (
        "Object requests · r-requests (volume pricing: total up to 1 M requests)"
    )
    assert second.description == (
        "Object requests · r-requests (volume pricing: total above 1 M requests)"
    )
    assert (second.shown_quantity, second.shown_unit, second.shown_price) == (
        Decimal("3.2457"),
        "M requests",
        Decimal("0.30"),
    )
    assert (second.quantity, second.unit_code, second.unit_price, second.base_quantity) == (
        Decimal(3_245_678),
        "C62",
        Decimal("0.3"),
        Decimal(1_000_000),
    )


def test_a_gb_counter_is_in_gigabytes_and_a_service_in_operations() -> None:
    egress = group("egress", 250_500_000, "0.01", family="Network", basis_units=1)
    migration = group("migration", 2 * 10**6, "49", family="Services", basis_units=1)
    network, services = lines_of([egress, migration])
    assert (network.quantity, network.unit_code, network.shown_unit) == (
        Decimal("250.5"),
        "E34",
        "GB",
    )
    assert (services.shown_quantity, services.shown_unit, services.shown_price) == (
        Decimal(2),
        "operation",
        Decimal(49),
    )
    assert (services.unit_code, services.unit_price, services.net_minor) == (
        "C62",
        Decimal(49),
        9_800,
    )


def addon(quantity_micro: int, price: str) -> RatedGroup:
    price_pico = int(Decimal(price) * PICO)
    atto = amount_atto(quantity_micro, price_pico, 1)
    return RatedGroup("Addons", "backup", "backup", 0, False, price_pico, quantity_micro, atto)


def test_an_add_on_reads_as_its_share_of_the_period() -> None:
    """Subscribed from Oct 20: 12 of October's 31 days, 0.387097 of a month at 9.90."""
    [monthly] = lines_of([addon(387_097, "9.90")])
    assert monthly.description == "Backup · backup"
    assert (monthly.shown_quantity, monthly.shown_unit, monthly.shown_price) == (
        Decimal("0.3871"),
        "month",
        Decimal("9.90"),
    )
    assert (monthly.quantity, monthly.unit_code, monthly.unit_price) == (
        Decimal("0.3871"),
        "MON",
        Decimal("9.9"),
    )
    week = date(2026, 10, 26)
    [weekly] = lines_of([addon(10**6, "2.50")], start=week, end=week + timedelta(days=7))
    assert (weekly.shown_unit, weekly.unit_code, weekly.shown_quantity) == (
        "week",
        "WEE",
        Decimal(1),
    )
    [daily] = lines_of([addon(10**6, "0.40")], start=week, end=week + timedelta(days=1))
    assert (daily.shown_unit, daily.unit_code, daily.shown_price) == ("day", "DAY", Decimal("0.40"))


def test_a_price_change_says_from_and_until_which_day() -> None:
    before = group("cpu", 3600 * 10**6, "0.025", days=(date(2026, 10, 2), date(2026, 10, 14)))
    after = group("cpu", 3600 * 10**6, "0.023", days=(date(2026, 10, 16), date(2026, 10, 31)))
    first, second = lines_of([before, after])
    assert first.description == "vCPU · r-cpu (until 2026-10-14)"
    assert second.description == "vCPU · r-cpu (from 2026-10-15)"  # the price's first day
    # Posted daily, or in a period without a change: nothing to say.
    [daily] = lines_of([after], day=date(2026, 10, 20))
    assert daily.description == "vCPU · r-cpu"
    november = group("cpu", 3600 * 10**6, "0.023", days=(date(2026, 11, 2), date(2026, 11, 3)))
    [later] = lines_of([november], start=NOVEMBER, end=date(2026, 12, 1))
    assert later.description == "vCPU · r-cpu"


def test_labels_depend_on_the_group_the_posting_and_the_catalog_only() -> None:
    groups = [
        group("cpu", 7_200 * 10**6, "0.025", days=(date(2026, 10, 2), date(2026, 10, 3))),
        group("requests", 900_000 * 10**6, "0.40", 0, "Storage", basis_units=10**6),
    ]
    assert lines_of(groups) == lines_of(groups)
    assert lines_of(list(reversed(groups)))[0].description == lines_of(groups)[0].description


# Up to 10 per basis unit with ten decimals, so a line stays below 10^9 (the ledger's
# rated-amount keeps 28 significant digits: see the report on ledger precision).
meter_prices = st.integers(0, 10**11).map(lambda n: Decimal(n).scaleb(-10))


@settings(max_examples=200, deadline=None)
@given(
    per=st.sampled_from(["second", "minute", "hour", "day", "month"]),
    price=meter_prices,
    quantity_micro=st.integers(1, 10**14),
)
def test_e_invoice_quantities_and_prices_keep_the_french_decimal_rules(
    per: str, price: Decimal, quantity_micro: int
) -> None:
    """BR-FR-DEC-02: at most 4 decimals on a quantity and a base quantity; BR-FR-DEC-03: at
    most 6 on a unit price; and the shown price is the catalog's, exactly."""
    fields = {"id": "m", "name": "M", "unit": "GB", "kind": "interval", "family": "Compute",
              "per": per, "price": [{"effective": date(2026, 1, 1), "price": price}]}  # fmt: skip
    catalog = parse_model(Catalog, {"meter": [fields]}, "catalog")
    basis = catalog.meter[0].basis_units
    price_pico = int(price * PICO)
    item = RatedGroup("Compute", "m", "r", 0, False, price_pico, quantity_micro,
                      amount_atto(quantity_micro, price_pico, basis))  # fmt: skip
    [line] = detail_lines(consumption([item]), [item], catalog, 2)
    assert line.quantity == line.quantity.quantize(Decimal("0.0001"))
    assert line.base_quantity == line.base_quantity.to_integral_value()
    assert line.unit_price == line.unit_price.quantize(Decimal("0.000001"))
    assert line.shown_price is not None and line.shown_quantity is not None
    shown_seconds = 3600 if per == "second" else basis
    assert line.shown_price == price * shown_seconds / basis
    assert abs(Fraction(line.shown_quantity) - Fraction(quantity_micro, shown_seconds * 10**6)) <= (
        Fraction(1, 20_000)
    )


def test_rated_groups_carry_their_days_and_split_at_the_price_change(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Through rating, posting and issuing: the lines say when the price changed, read in
    the catalog's units, and the e-invoices validate (EN16931 and the French rules)."""
    from beanbill.ledger.invoicing.documents import load_document
    from beanbill.ledger.invoicing.issue import issue
    from beanbill.ledger.post import post
    from beanbill.rating.ingest import ingest
    from beanbill.rating.rate import rate_months
    from tests.einvoice_validation import validate_cii, validate_ubl
    from tests.support import customer, write_jsonl

    workspace = make_workspace(
        catalog=CATALOG_FIELDS,
        customers=[customer("acme", siren="552100554",
                            addons=[{"addon": "backup", "start": date(2026, 10, 20)}])],
    )  # fmt: skip
    usage = [
        {"id": f"cpu-{day}", "org": "acme", "resource": "vm-1", "meter": "cpu",
         "start": f"2026-10-{day:02d}T00:00:00Z", "end": f"2026-10-{day:02d}T10:00:00Z",
         "quantity": "2"}
        for day in (3, 14, 15, 30)
    ] + [
        {"id": "disk", "org": "acme", "resource": "vol-1", "meter": "disk",
         "start": "2026-10-01T00:00:00Z", "end": "2026-10-31T00:00:00Z", "quantity": "500"},
        {"id": "req", "org": "acme", "resource": "bucket", "meter": "requests",
         "at": "2026-10-09T00:00:00Z", "quantity": "2500000"},
    ]  # fmt: skip
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", usage)])
    rate_months(workspace, [Month(2026, 10)])
    with RatedStore(workspace) as store:
        rated_file = "rated/month=2026-10/lines.parquet"
        groups = store.detail_groups(rated_file, "acme", "2026-10", None, None)
    cpu = [(g.price_pico, g.first_day, g.last_day) for g in groups if g.meter == "cpu"]
    assert cpu == [  # one group per price, in the order of their days
        (25 * 10**9, date(2026, 10, 3), date(2026, 10, 14)),
        (23 * 10**9, date(2026, 10, 15), date(2026, 10, 30)),
    ]
    post(workspace, Month(2026, 10), date(2026, 11, 2))
    [number] = issue(workspace, Month(2026, 10), date(2026, 11, 3)).issued
    document = load_document(workspace.invoices_dir / f"{number}.json")
    lines = {line.description: line for line in document.lines}
    assert lines["vCPU · vm-1 (until 2026-10-14)"].shown_quantity == 40  # 2 vCPU × 2 × 10 h
    assert lines["vCPU · vm-1 (from 2026-10-15)"].net_minor == 92  # 40 h × 0.023
    assert lines["Block storage · vol-1 (free allowance: first 100 GB-month)"].net_minor == 0
    # 500 GB for 720 h = 493.1507 GB-month: 100 free, 393.1507 at 0.01
    tier = lines["Block storage · vol-1 (tier 100–10,000 GB-month)"]
    assert (tier.shown_quantity, tier.unit_code, tier.net_minor) == (
        Decimal("393.1507"),
        "MON",
        393,
    )
    requests = lines["Object requests · bucket (volume pricing: total above 1 M requests)"]
    assert (requests.shown_quantity, requests.shown_unit, requests.net_minor) == (
        Decimal("2.5"),
        "M requests",
        75,
    )
    assert (requests.unit_price, requests.base_quantity) == (Decimal("0.3"), Decimal(10**6))
    backup = lines["Backup · backup"]
    assert (backup.shown_unit, backup.unit_code, backup.shown_quantity) == (
        "month",
        "MON",
        Decimal("0.3871"),
    )
    for suffix in ("cii.xml", "ubl.xml"):
        xml = (workspace.invoices_dir / f"{number}.{suffix}").read_bytes()
        validate = validate_cii if suffix == "cii.xml" else validate_ubl
        assert validate(xml, french_seller=True) == []
