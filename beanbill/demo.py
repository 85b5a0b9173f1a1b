"""The demo: a month of realistic, deterministic usage for the example workspace.

Same seed → byte-identical files. The generated inbox has three files, one per
supported input shape: interval and service events as JSON Lines, egress counters as
CSV, and a small file of deliberately broken events that must end up in ``rejects/``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from beanbill.ledger.post import record_credit
from beanbill.rating.config import BillingMode
from beanbill.rating.storage import write_bytes_atomically
from beanbill.rating.workspace import Workspace

DEMO_MONTH = "2026-10"
DEMO_AS_OF = date(2026, 11, 22)
CREDIT_DATE = date(2026, 10, 1)
USAGE_START = datetime(2026, 10, 1, tzinfo=UTC)
USAGE_END = datetime(2026, 11, 2, tzinfo=UTC)
FLAVORS = ((1, "1"), (2, "2"), (2, "4"), (4, "8"), (8, "16"))
DUPLICATE_EVERY = 97
PLUS_TWO_HOURS = timezone(timedelta(hours=2))


def rfc3339(moment: datetime, rng: random.Random) -> str:
    """Mostly UTC 'Z'; sometimes the same instant with a +02:00 offset (it must not matter)."""
    if rng.random() < 0.1:
        return moment.astimezone(PLUS_TWO_HOURS).isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _runs(rng: random.Random) -> Iterator[tuple[datetime, datetime]]:
    """On/off periods of one instance: minutes to days long, many across midnight."""
    cursor = USAGE_START + timedelta(seconds=rng.randrange(0, 36 * 3600))
    while cursor < USAGE_END:
        length = timedelta(
            seconds=rng.choice((rng.randrange(300, 7200), rng.randrange(3600, 3 * 86400)))
        )
        end = min(cursor + length, USAGE_END)
        yield cursor, end
        cursor = end + timedelta(seconds=rng.randrange(0, 2 * 86400))


def interval_events(org: str, rng: random.Random) -> Iterator[dict[str, Any]]:
    for app in range(rng.randrange(1, 5)):
        cpu, memory = rng.choice(FLAVORS)
        resource = f"{org}/app-{app + 1}"
        for run, (start, end) in enumerate(_runs(rng)):
            for meter, quantity in (("cpu", str(cpu)), ("memory", memory)):
                yield {
                    "id": f"{resource}/{meter}/{run}",
                    "org": org,
                    "resource": resource,
                    "meter": meter,
                    "start": rfc3339(start, rng),
                    "end": rfc3339(end, rng),
                    "quantity": quantity,
                }
    for volume in range(rng.randrange(1, 3)):
        resource = f"{org}/volume-{volume + 1}"
        size = rng.choice(("10", "50", "200", "1000", "2.5"))
        cursor = USAGE_START
        segment = 0
        while cursor < USAGE_END:
            end = min(cursor + timedelta(seconds=rng.randrange(86400, 10 * 86400)), USAGE_END)
            yield {
                "id": f"{resource}/block-storage/{segment}",
                "org": org,
                "resource": resource,
                "meter": "block-storage",
                "start": rfc3339(cursor, rng),
                "end": rfc3339(end, rng),
                "quantity": size,
            }
            cursor, segment = end, segment + 1


def daily_counters(org: str, rng: random.Random) -> Iterator[dict[str, Any]]:
    day = USAGE_START
    heavy = rng.random() < 0.2
    while day < USAGE_END:
        at = (day + timedelta(hours=23, minutes=59, seconds=59)).strftime("%Y-%m-%dT%H:%M:%SZ")
        gigabytes = rng.randrange(0, 2_000_000 if heavy else 20_000) / 1000
        yield {
            "id": f"{org}/egress/{day:%Y%m%d}",
            "org": org,
            "resource": f"{org}/lb",
            "meter": "egress",
            "at": at,
            "quantity": f"{gigabytes:.3f}",
        }
        requests = rng.randrange(0, 200_000)
        yield {
            "id": f"{org}/requests/{day:%Y%m%d}",
            "org": org,
            "resource": f"{org}/bucket",
            "meter": "object-requests",
            "at": at,
            "quantity": str(requests),
        }
        day += timedelta(days=1)


def service_events(org: str, rng: random.Random) -> Iterator[dict[str, Any]]:
    for index in range(rng.choice((0, 0, 1, 2))):
        at = USAGE_START + timedelta(seconds=rng.randrange(0, 30 * 86400))
        service = rng.choice(("db-migration", "cache-purge"))
        yield {
            "id": f"{org}/{service}/{index}",
            "org": org,
            "resource": f"{org}/ops",
            "meter": service,
            "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quantity": "1",
        }


BAD_EVENTS = (
    '{"id": "bad-1", "org": "org-9999", "resource": "r", "meter": "cpu", '
    '"start": "2026-10-03T10:00:00Z", "end": "2026-10-03T11:00:00Z"}',
    '{"id": "bad-2", "org": "org-0001", "resource": "r", "meter": "cpu", '
    '"start": "2026-10-03T10:00:00", "end": "2026-10-03T11:00:00Z"}',
    '{"id": "bad-3", "org": "org-0001", "resource": "r", "meter": "cpu", '
    '"start": "2026-10-03T12:00:00Z", "end": "2026-10-03T11:00:00Z"}',
    '{"id": "bad-4", "org": "org-0001", "resource": "r", "meter": "egress", '
    '"at": "2026-10-03T12:00:00Z", "quantity": "-5"}',
    '{"id": "bad-5", "org": "org-0001", "resource": "r", "meter": "cpu", "start": ',
)


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records).encode()


def _csv(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["id", "org", "resource", "meter", "at", "quantity"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue().encode()


def write_usage(inbox: Path, organizations: list[str], seed: int) -> list[Path]:
    """Write the demo month's usage files; returns them in ingestion order."""
    rng = random.Random(seed)
    intervals: list[dict[str, Any]] = []
    counters: list[dict[str, Any]] = []
    for org in organizations:
        intervals.extend(interval_events(org, rng))
        intervals.extend(service_events(org, rng))
        counters.extend(daily_counters(org, rng))
    # The platform re-sends some events (at-least-once delivery): same id, same content.
    intervals.extend(intervals[index] for index in range(0, len(intervals), DUPLICATE_EVERY))
    files = {
        inbox / f"usage-{DEMO_MONTH}.jsonl": _jsonl(intervals),
        inbox / f"counters-{DEMO_MONTH}.csv": _csv(counters),
        inbox / "broken-events.jsonl": ("\n".join(BAD_EVENTS) + "\n").encode(),
    }
    for path, data in files.items():
        write_bytes_atomically(path, data)
    return list(files)


def record_demo_credits(workspace: Workspace) -> int:
    """Prepaid purchases, monthly provisions, promotional grants (one expiring early)."""
    recorded = 0
    for index, customer in enumerate(workspace.customers.customer):
        commands: list[tuple[str, str, date | None, int]] = []
        if customer.billing_mode is BillingMode.PREPAID:
            commands.append(("purchase", "200.00", None, 100))
        elif customer.billing_mode is BillingMode.PROVISIONED:
            # Half the provisions are too small: over-consumption for the next invoice.
            commands.append(("purchase", "150.00" if index % 2 else "40.00", None, 100))
        if index % 5 == 0:
            commands.append(("grant", "25.00", date(2026, 10, 31), 10))
        if index % 5 == 1:
            commands.append(("grant", "10.00", date(2026, 10, 10), 10))  # expires unused
        for kind, amount, expires, priority in commands:
            _, written = record_credit(
                workspace, customer.id, kind, amount, CREDIT_DATE, expires, priority, None
            )
            recorded += written
    return recorded
