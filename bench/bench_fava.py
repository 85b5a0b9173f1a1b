"""Fava's first page and bean-check on a year of 1,000 organizations, against Beancount's bare load.

    .venv/bin/python bench/bench_fava.py                          # build a year, measure
    .venv/bin/python bench/bench_fava.py --keep /tmp/fava-year    # ... and keep the year
    .venv/bin/python bench/bench_fava.py --reuse /tmp/fava-year   # measure a kept year
    .venv/bin/python bench/bench_fava.py --organizations 60 --months 1 --copies 2  # quick

The year: 1,000 organizations in every billing mode (postpaid, prepaid, provisioned) and
period (80 % monthly, 10 % weekly, 10 % daily), a quarter of them reverse-charge customers
in Germany and an eighth consumers in Belgium, half with a credit purchase or grant; an
hour of compute a day each. ``--months`` real months (3 by default) are built with
beanbill's own steps: ingest, rate, post, issue every invoice (HTML, CII and UBL real; the
PDF a placeholder, since WeasyPrint at ~0.2 s an invoice would take hours), then a Stripe
payment and fee for each invoice (``post_movements``, as webhooks or reconciliation post
them). Building a real month takes 2-3 minutes, so the year is those months' books copied
``--copies`` times (4 by default), each copy 13 weeks later with its txn-ids and links
made unique: within 2 % of a real year's entries by type. It passes bean-check.

Then, each in a fresh process, in the same run (seconds from process start):

- the floor: Beancount's bare ``loader._load`` of the ledger (no cache, GC on);
- ``bean-check -C`` (no cache), and ``fava`` as installed (it never reads the cache);
- the nightly check that ends ``beanbill run`` (``ledger_errors``): check, write the cache;
- ``bean-check`` and ``beanbill fava`` with that cache (warm);
- ``beanbill fava`` and ``bean-check`` without a cache (cold: they load and write it).

A Fava first page is process start to ``GET /`` answered 200 by the income statement
(``/`` redirects there). Each row says how busy the rest of the machine was meanwhile
(cores used by other processes, from /proc/stat): on a 2-core machine one busy core
elsewhere doubles these times.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.connectors.stripe import ACCOUNTS  # noqa: E402
from beanbill.ledger.books import cache_path  # noqa: E402
from beanbill.ledger.invoicing import files as invoice_files  # noqa: E402
from beanbill.ledger.invoicing.documents import load_document  # noqa: E402
from beanbill.ledger.invoicing.issue import issue  # noqa: E402
from beanbill.ledger.post import post, record_credit  # noqa: E402
from beanbill.ports import free_port as free_port  # noqa: E402 (still importable from here)
from beanbill.rating.ingest import ingest  # noqa: E402
from beanbill.rating.periods import Month  # noqa: E402
from beanbill.rating.rate import rate_months  # noqa: E402
from beanbill.rating.workspace import Workspace  # noqa: E402
from beanbill.sync.interface import Movement, MovementKind  # noqa: E402
from beanbill.sync.payments import post_movements  # noqa: E402
from bench.bench_invoices import mix_countries  # noqa: E402
from bench.bench_ledger import daily_usage, make_workspace  # noqa: E402

BIN = Path(sys.executable).parent
BEANBILL = str(BIN / "beanbill")
BEAN_CHECK = str(BIN / "bean-check")
FAVA = str(BIN / "fava")
PERIODS = ("monthly",) * 8 + ("weekly", "daily")
FIRST_DAY = date(2026, 1, 1)
COPY_SHIFT = timedelta(weeks=13)
PLACEHOLDER_PDF = b"%PDF-1.7\n% placeholder: the Fava benchmark does not render PDFs\n%%EOF\n"
STARTUP_SECONDS = 600
QUIET_CORES = 0.25  # other processes using less than this many cores: quiet
FLOOR = (
    "import os, sys\n"
    "from beancount import loader\n"
    "entries, errors, _ = loader._load([(os.path.abspath(sys.argv[1]), True)], None, None, None)\n"
    "print(len(entries), len(errors))\n"
)
NIGHTLY_CHECK = (
    "import sys\n"
    "from pathlib import Path\n"
    "from beanbill.ledger.books import ledger_errors\n"
    "print(len(ledger_errors(Path(sys.argv[1]))))\n"
)


# --- building the year ---------------------------------------------------------------------


class Placeholder:
    """Stripe as ``post_movements`` needs it: a name and the accounts it posts to."""

    name = "stripe"
    accounts = ACCOUNTS


def log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {message}", file=sys.stderr, flush=True)


def build(root: Path, organizations: int, months: int, copies: int) -> None:
    """The workspace: ``months`` real months, then their books copied ``copies`` times."""
    if not hasattr(invoice_files, "invoice_pdf") or not hasattr(
        invoice_files, "MAX_RENDER_WORKERS"
    ):
        sys.exit("bench_fava: beanbill.ledger.invoicing.files changed; adapt the PDF placeholder")
    # In this process (one render worker), with a placeholder instead of WeasyPrint's PDF.
    invoice_files.MAX_RENDER_WORKERS = 1
    invoice_files.invoice_pdf = lambda document, legal: PLACEHOLDER_PDF
    started = time.perf_counter()
    make_workspace(root, organizations, PERIODS)
    mix_countries(root)
    workspace = Workspace.load(root)
    all_months = [Month(FIRST_DAY.year, number) for number in range(1, months + 1)]
    days = (all_months[-1].next().first_day - FIRST_DAY).days
    ingest(workspace, [daily_usage(workspace, FIRST_DAY, days)])
    rate_months(workspace, all_months)
    log(f"ingested and rated {days} days", started)
    for customer in workspace.customers.customer[::2]:
        kind = "grant" if customer.billing_mode.value == "postpaid" else "purchase"
        record_credit(workspace, customer.id, kind, "5.00", FIRST_DAY, None, 10, None)
    log("credits recorded (each purchase issues a prepayment invoice)", started)
    for month in all_months:
        month_end = month.next().first_day
        post(workspace, month, month_end + timedelta(days=1))
        summary = issue(workspace, month, month_end + timedelta(days=2))
        movements = list(payments(workspace, summary.issued, month_end))
        no_sync_state: Any = None  # read only for movements naming a remote customer
        paid = post_movements(workspace, Placeholder(), no_sync_state, movements)  # type: ignore[arg-type]
        log(f"{month}: {len(summary.issued):,} invoices issued, {paid.posted:,} paid", started)
    added = copy_books(root, copies)
    log(f"books copied: {added} files added", started)


def payments(workspace: Workspace, numbers: Iterable[str], month_end: date) -> Iterator[Movement]:
    """A card payment and its fee for every invoice with something to pay."""
    day = month_end + timedelta(days=12)
    for number in numbers:
        document = load_document(workspace.invoices_dir / f"{number}.json")
        if document.due_minor <= 0:
            continue
        yield Movement(
            f"stripe-payment:{number}", MovementKind.PAYMENT, day, document.due_minor,
            document.currency, f"pi_{number}", number, document.buyer_reference,
        )  # fmt: skip
        fee = document.due_minor * 15 // 1000 + 25
        yield Movement(
            f"stripe-fee:{number}", MovementKind.FEE, day, fee, document.currency,
            f"txn_{number}",
        )  # fmt: skip


DATE = re.compile(r"\b(20\d\d)-(\d\d)-(\d\d)\b")
TXN_ID = re.compile(r'^(\s+txn-id: ")([^"]+)(")', re.MULTILINE)
LINK = re.compile(r"(\s\^)([A-Za-z0-9\-_/.]+)")
MONTH_INCLUDE = re.compile(r'^include "books/(\d{4}-\d\d)/([^"]+)"$', re.MULTILINE)


def copied(text: str, copy: int) -> str:
    """A generated file's text as its ``copy``-th copy: dates later, ids and links unique."""
    shift = COPY_SHIFT * copy

    def later(match: re.Match[str]) -> str:
        return (date(int(match[1]), int(match[2]), int(match[3])) + shift).isoformat()

    text = DATE.sub(later, text)
    text = TXN_ID.sub(lambda match: f"{match[1]}{match[2]}-copy{copy}{match[3]}", text)
    return LINK.sub(lambda match: f"{match[1]}{match[2]}-copy{copy}", text)


def copy_books(root: Path, copies: int) -> int:
    """The monthly books ``copies - 1`` more times, each 13 weeks after the one before,
    txn-ids and links suffixed (unique again), included from the main file."""
    main = root / "ledger.beancount"
    text = main.read_text(encoding="utf-8")
    includes = MONTH_INCLUDE.findall(text)
    added = []
    for copy in range(1, copies):
        for month, name in includes:
            source = root / "books" / month / name
            target = root / "books" / f"copy{copy}-{month}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(copied(source.read_text(encoding="utf-8"), copy), encoding="utf-8")
            added.append(f'include "books/copy{copy}-{month}/{name}"')
    main.write_text(text.rstrip("\n") + "\n" + "".join(f"{line}\n" for line in added))
    return len(added)


# --- measuring -----------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def others(note: list[str]) -> Iterator[None]:
    """Appends to ``note`` how many cores other processes used meanwhile."""
    busy, own, started = busy_seconds(), children_seconds(), time.perf_counter()
    yield
    wall = time.perf_counter() - started
    elsewhere = (busy_seconds() - busy) - (children_seconds() - own)
    note.append(f"{max(elsewhere, 0.0) / wall:.2f}")


def wait_for_quiet(limit_seconds: float) -> str:
    """Wait (at most ``limit_seconds``) until other processes use < QUIET_CORES cores."""
    deadline = time.monotonic() + limit_seconds
    while True:
        note: list[str] = []
        with others(note):
            time.sleep(2)
        if float(note[0]) < QUIET_CORES or time.monotonic() > deadline:
            return note[0]


def run(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench_fava: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds, result.stdout.strip()


def first_page(command: Callable[[int], list[str]]) -> float:
    """Seconds from starting the server to ``GET /`` answered by the income statement."""
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=600) as page:
                    page.read()
                    if page.status != 200 or not page.url.endswith("/income_statement/"):
                        sys.exit(f"bench_fava: GET / answered {page.status} from {page.url}")
                    return time.perf_counter() - started
            except (ConnectionError, urllib.error.URLError):
                if server.poll() is not None:
                    stderr = server.stderr.read().decode() if server.stderr else ""
                    sys.exit(f"bench_fava: the server stopped:\n{stderr[-2000:]}")
                if time.perf_counter() - started > STARTUP_SECONDS:
                    sys.exit("bench_fava: no first page after {STARTUP_SECONDS} s")
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(root: Path, quiet_limit: float) -> list[tuple[str, str, str, str]]:
    ledger = root / "ledger.beancount"
    cache = cache_path(ledger)
    if cache is None:
        sys.exit("bench_fava: BEANCOUNT_DISABLE_LOAD_CACHE is set; unset it to measure")

    def no_cache() -> None:
        cache.unlink(missing_ok=True)

    python = sys.executable
    beanbill_fava: Callable[[int], list[str]] = lambda port: [  # noqa: E731
        BEANBILL, "fava", "-w", str(root), "--port", str(port)
    ]  # fmt: skip
    stock_fava: Callable[[int], list[str]] = lambda port: [  # noqa: E731
        FAVA, "--read-only", "--host", "127.0.0.1", "--port", str(port), str(ledger)
    ]  # fmt: skip
    steps: list[tuple[str, Callable[[], None], Callable[[], float]]] = [
        ("floor: `loader._load`, no cache", no_cache,
         lambda: run([python, "-c", FLOOR, str(ledger)])[0]),
        ("`bean-check -C` (no cache)", no_cache, lambda: run([BEAN_CHECK, "-C", str(ledger)])[0]),
        ("`fava` as installed: first page (never reads the cache)", no_cache,
         lambda: first_page(stock_fava)),
        ("end of `beanbill run`: check, write the cache", no_cache,
         lambda: run([python, "-c", NIGHTLY_CHECK, str(ledger)])[0]),
        ("`bean-check`, warm cache", lambda: None, lambda: run([BEAN_CHECK, str(ledger)])[0]),
        ("`beanbill fava` first page, warm cache", lambda: None,
         lambda: first_page(beanbill_fava)),
        ("`beanbill fava` first page, no cache (writes it)", no_cache,
         lambda: first_page(beanbill_fava)),
        ("`bean-check`, no cache (writes it)", no_cache,
         lambda: run([BEAN_CHECK, str(ledger)])[0]),
    ]  # fmt: skip
    rows: list[tuple[str, str, str, str]] = []
    floor = 0.0
    for label, prepare, step in steps:
        prepare()
        quiet = wait_for_quiet(quiet_limit)
        note: list[str] = []
        with others(note):
            seconds = step()
        floor = floor or seconds
        rows.append((label, f"{seconds:.1f}", f"{seconds / floor:.2f}×", f"{quiet} / {note[0]}"))
        print(f"  {label}: {seconds:.1f} s (others busy {note[0]} cores)", file=sys.stderr)
    return rows


def describe(root: Path) -> str:
    ledger = root / "ledger.beancount"
    _, counts = run([sys.executable, "-c", FLOOR, str(ledger)])
    entries, errors = counts.split()
    books = list((root / "books").rglob("*.beancount"))
    size = sum(path.stat().st_size for path in books) + ledger.stat().st_size
    files = len(books) + 1
    return f"{int(entries):,} entries ({errors} errors), {files} files, {size / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organizations", type=int, default=1_000)
    parser.add_argument("--months", type=int, default=3, help="real months built (1-12)")
    parser.add_argument("--copies", type=int, default=4, help="the months' books × this")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep", type=Path, help="build the workspace here and keep it")
    where.add_argument("--reuse", type=Path, help="measure a workspace built with --keep")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each measure, wait at most this long for the machine to be quiet",
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.months <= 12 or arguments.copies < 1:
        parser.error("--months is 1 to 12 and --copies at least 1")
    if arguments.reuse:
        root = arguments.reuse.resolve()
        if not (root / "ledger.beancount").exists():
            parser.error(f"{root} holds no ledger.beancount")
    else:
        root = (arguments.keep or ROOT / "bench" / "data" / "fava-year").resolve()
        build(root, arguments.organizations, arguments.months, arguments.copies)
    try:
        load_before = os.getloadavg()
        description = describe(root)
        rows = measure(root, arguments.quiet_wait)
        load_after = os.getloadavg()
    finally:
        cache = cache_path(root / "ledger.beancount")
        if cache is not None and not (arguments.keep or arguments.reuse):
            cache.unlink(missing_ok=True)
    print(f"Ledger: {root} — {description}")
    print(f"Load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)\n")  # fmt: skip
    print("| measure | seconds | / floor | other cores busy (before / during) |")
    print("|---|---:|---:|---:|")
    for label, seconds, ratio, busy in rows:
        print(f"| {label} | {seconds} | {ratio} | {busy} |")


if __name__ == "__main__":
    main()
