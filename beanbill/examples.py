"""The example workspace: a realistic seller, catalog and customers.

``beanbill init`` writes a small one; ``beanbill demo`` a larger one with generated
usage. Everything here is deterministic for a given seed.
"""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import tomli_w
from stdnum import luhn
from stdnum.iso7064 import mod_11_10

from beanbill.ledger.main_file import main_ledger_text
from beanbill.rating.config import Catalog, Settings, parse_model
from beanbill.rating.storage import write_bytes_atomically
from beanbill.rating.workspace import CATALOG_FILE, CUSTOMERS_FILE, LEDGER_FILE, SETTINGS_FILE

CATALOG_EFFECTIVE = date(2026, 1, 1)
CPU_PRICE_CUT = date(2026, 10, 15)
# From this many organizations on, the second one is a private developer in Germany:
# a consumer without a VAT id, charged German VAT through the One-Stop Shop.
MIN_ORGANIZATIONS_WITH_CONSUMER = 5
CONSUMER_INDEX = 1

SETTINGS: dict[str, Any] = {
    "seller": {
        "legal_name": "Nimbus Cloud SAS",
        "legal_form": "SAS",
        "share_capital": "100 000 EUR",
        "address": ["12 rue de la Paix", "75002 Paris", "France"],
        "country": "FR",
        "vat_id": "FR44732829320",
        "registration": "RCS Paris 732 829 320",
        "siren": "732829320",
        "email": "billing@nimbus.example",
        "iban": "FR7630006000011234567890189",
        "bic": "BNPAFRPP",
        "legal_mentions": [
            "Late payment penalty: three times the French legal interest rate.",
            "Fixed indemnity for recovery costs: 40 EUR.",
            "No discount for early payment.",
        ],
    },
    "billing": {"currency": "EUR", "timezone": "UTC", "max_event_duration_days": 31},
    "invoicing": {"oss": True},
}

# Prices as a provider publishes them (``per``): vCPU and memory per hour, storage per
# GB-month (730 hours), transfer per GB, requests per million. Rating still bills every
# second: 1 vCPU for 90 s costs 0.025 × 90 / 3,600.
CATALOG: dict[str, Any] = {
    "meter": [
        {
            "id": "cpu",
            "name": "vCPU",
            "unit": "vCPU",
            "kind": "interval",
            "family": "Compute",
            "per": "hour",
            "price": [
                {"effective": CATALOG_EFFECTIVE, "price": "0.025"},
                {"effective": CPU_PRICE_CUT, "price": "0.023"},
            ],
        },
        {
            "id": "memory",
            "name": "Memory",
            "unit": "GB",
            "kind": "interval",
            "family": "Compute",
            "per": "hour",
            "price": [{"effective": CATALOG_EFFECTIVE, "price": "0.0035"}],
        },
        {
            "id": "block-storage",
            "name": "Block storage",
            "unit": "GB",
            "kind": "interval",
            "family": "Storage",
            "per": "month",
            "price": [
                {
                    "effective": CATALOG_EFFECTIVE,
                    "mode": "graduated",
                    "tiers": [{"up_to": "100", "price": "0.10"}, {"price": "0.08"}],
                }
            ],
        },
        {
            "id": "egress",
            "name": "Data transfer out",
            "unit": "GB",
            "kind": "counter",
            "family": "Network",
            "per": "unit",
            "price": [
                {
                    "effective": CATALOG_EFFECTIVE,
                    "free": "100",
                    "tiers": [{"up_to": "10000", "price": "0.01"}, {"price": "0.008"}],
                }
            ],
        },
        {
            "id": "object-requests",
            "name": "Object storage requests",
            "unit": "request",
            "kind": "counter",
            "family": "Storage",
            "per": "million",
            "price": [
                {
                    "effective": CATALOG_EFFECTIVE,
                    "mode": "volume",
                    "tiers": [{"up_to": "1", "price": "0.40"}, {"price": "0.30"}],
                }
            ],
        },
    ],
    "addon": [
        {
            "id": "backup-plus",
            "name": "Backup Plus",
            "price": {"monthly": "9.90", "weekly": "2.50", "daily": "0.40"},
        },
        {
            "id": "support-premium",
            "name": "Premium support",
            "price": {"monthly": "49.00", "weekly": "12.00", "daily": "1.80"},
        },
    ],
    "service": [
        {"id": "db-migration", "name": "Database migration", "price": "49.00"},
        {"id": "cache-purge", "name": "Build cache purge", "price": "0.50"},
    ],
}

COMPANY_WORDS = [
    "Acme",
    "Atlas",
    "Borealis",
    "Cobalt",
    "Delta",
    "Ember",
    "Fjord",
    "Granite",
    "Helix",
    "Indigo",
    "Juniper",
    "Krypton",
    "Lumen",
    "Meridian",
    "Nova",
    "Orbit",
    "Pioneer",
    "Quartz",
    "Raven",
    "Sierra",
    "Tundra",
    "Umbra",
    "Vertex",
    "Willow",
    "Xenon",
    "Yonder",
    "Zephyr",
    "Aurora",
    "Beacon",
    "Cascade",
]
COMPANY_SUFFIXES = ("SAS", "SARL", "GmbH", "Ltd", "Inc", "SA", "BV")


def french_vat_id(rng: random.Random) -> str:
    stem = f"{rng.randrange(10_000_000, 99_999_999)}"
    siren = stem + luhn.calc_check_digit(stem)
    key = (12 + 3 * (int(siren) % 97)) % 97
    return f"FR{key:02d}{siren}"


def german_vat_id(rng: random.Random) -> str:
    stem = f"{rng.randrange(10_000_000, 99_999_999)}"
    return "DE" + stem + mod_11_10.calc_check_digit(stem)


def consumer_record(index: int) -> dict[str, Any]:
    """A private developer in Germany: no VAT id, so German VAT through the One-Stop Shop."""
    return {
        "name": "Lena Vogel",
        "address": ["Torstraße 12", "10119 Berlin", "DE"],
        "country": "DE",
        "email": f"lena.vogel@org{index + 1}.example",
    }


def customer_records(count: int, seed: int) -> list[dict[str, Any]]:
    """Organizations across billing modes, periods, countries, with one parent and children,
    and (from five organizations on) one consumer in another EU country."""
    rng = random.Random(seed)
    modes = ("postpaid", "prepaid", "provisioned")
    records: list[dict[str, Any]] = []
    for index in range(count):
        word = COMPANY_WORDS[index % len(COMPANY_WORDS)]
        name = f"{word} {'Labs' if index >= len(COMPANY_WORDS) else ''}".strip()
        country = ("FR", "FR", "FR", "DE", "US")[index % 5]
        record: dict[str, Any] = {
            "id": f"org-{index + 1:04d}",
            "name": f"{name} {rng.choice(COMPANY_SUFFIXES)}",
            "address": [f"{rng.randrange(1, 200)} Example Street", f"City {index + 1}", country],
            "country": country,
            "email": f"billing@org{index + 1}.example",
            "currency": "EUR",
            "billing_mode": modes[index % 3],
            "billing_period": "monthly" if index % 10 < 8 else ("weekly", "daily")[index % 2],
        }
        if country == "FR" and index % 2 == 0:
            record["vat_id"] = french_vat_id(rng)
            record["siren"] = record["vat_id"][4:]
        elif country == "DE":
            record["vat_id"] = german_vat_id(rng)
        if index == CONSUMER_INDEX and count >= MIN_ORGANIZATIONS_WITH_CONSUMER:
            record |= consumer_record(index)  # after the draws: the others stay the same
        addons = []
        if index % 4 == 0:
            addons.append({"addon": "backup-plus", "start": date(2026, 1, 1)})
        if index % 7 == 3:
            addons.append({"addon": "support-premium", "start": date(2026, 10, 10)})
        if addons:
            record["addons"] = addons
        records.append(record)
    if count >= 4:
        # Central invoicing: the last three organizations are teams of the first one.
        for child in records[-3:]:
            child["parent"] = records[0]["id"]
            child["billing_period"] = records[0]["billing_period"]
            child["billing_mode"] = records[0]["billing_mode"]
    return records


def write_toml(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomically(path, tomli_w.dumps(data, multiline_strings=False).encode())


def example_ledger_text() -> str:
    settings = parse_model(Settings, SETTINGS, "example settings")
    catalog = parse_model(Catalog, CATALOG, "example catalog")
    return main_ledger_text(settings, catalog)


# The demo's settings: SETTINGS, with Stripe's minimum charge as the minimum invoice
# amount (daily invoices below it are carried to the next day's).
DEMO_SETTINGS: dict[str, Any] = {
    **SETTINGS,
    "invoicing": {**SETTINGS["invoicing"], "minimum_amount": "0.50"},
}


def write_configuration(root: Path, customer_count: int, seed: int) -> None:
    """Settings, catalog, customers and the main ledger file of an example workspace."""
    root.mkdir(parents=True, exist_ok=True)
    write_toml(root / SETTINGS_FILE, DEMO_SETTINGS)
    write_toml(root / CATALOG_FILE, CATALOG)
    write_toml(root / CUSTOMERS_FILE, {"customer": customer_records(customer_count, seed)})
    write_bytes_atomically(root / LEDGER_FILE, example_ledger_text().encode())
