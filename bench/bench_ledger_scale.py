"""A ledger for 1,000, 10,000 and 100,000 organizations: post, bean-check, Fava's first page,
and the general ledger with sub-ledgers that replaces one file (ledger/subledgers.py).

    .venv/bin/python bench/bench_ledger_scale.py --organizations 1000 --repeat 5 \
        --measure check,fava,split,post                          # 12 months: ~6 minutes
    .venv/bin/python bench/bench_ledger_scale.py --organizations 3000      # ~6 minutes
    .venv/bin/python bench/bench_ledger_scale.py --organizations 10000 --measure check,fava
    .venv/bin/python bench/bench_ledger_scale.py --organizations 10000 --reuse --measure post
    .venv/bin/python bench/bench_ledger_scale.py --organizations 100000    # 1 month: ~14 min
    .venv/bin/python bench/bench_ledger_scale.py --organizations 100000 --reuse --measure split
    .venv/bin/python bench/bench_ledger_scale.py --report       # the table and the PNG again
    .venv/bin/python bench/bench_ledger_scale.py --organizations 60 --months 2 \
        --measure check,fava,split,post                          # quick: seconds

Each line stays under 20 minutes on 2 cores (10,000 organizations: 12 + 8 minutes; the
books are kept in ``bench/data/ledger-scale/<N>x<months>/``, 0.1-0.7 GB each, for
``--reuse``; delete them when done).

Why synthetic: building a real month of 100,000 organizations through rating, invoicing
(PDFs) and payments would take hours. So the books are generated the way beanbill writes
them, entry by entry with beanbill's own code: the chart of accounts
(``organization_opens``, ``processor_opens``), ``consumption_entry`` (credits drawn lot by
lot, the rest unbilled), ``prepayment_document`` and ``purchase_entries`` (a credit purchase
with its prepayment invoice), ``issuance_entries`` (the invoice, its VAT, its PDF's
``document`` entry), ``movement_entry`` (the Stripe payment and its fee), rendered by
``ledger.entries.render`` into the files the writer would append to (``books/YYYY-MM/
{usage,invoices,payments}.beancount``, ``books/accounts.beancount``), with the same
txn-ids, links, payees and metadata. What is synthetic: the amounts (a few tens of euros a
month per organization, three product families, sub-cent rated totals), the rated-lines
checksums, the invoice documents (one line per family, no rendering: the PDFs are hard
links to one placeholder so that bean-check finds every file), provisioned organizations
billed like prepaid ones (a credit purchase each month, no unified provision invoice),
and the VAT share of credit drawn (20 % of the draw). Every organization is French, in
one of the three billing modes, 95 % on monthly periods and 5 % on daily periods (an
invoice, a payment and a fee a day each: they dominate the entry count, as in the
1,000-organization year of bench_fava.py). Each month: usage, an invoice issued on the
2nd of the next month (daily: the next day), paid 12 days later with its card fee; the
prepaid and provisioned organizations buy credit on the 1st.

Measured, each in a fresh process, seconds from process start:

- ``bean-check``: Beancount's ``loader.load_file`` with the cache off (what ``bean-check
  -C`` does, the beanbill plugin included), with its peak memory;
- Fava's first page: stock ``fava`` (never reads the cache) until ``GET /`` is answered
  by the income statement, with the server's peak memory;
- ``beanbill post`` of the next month (real: its usage ingested and rated first, not
  timed), on top of the generated months: the load of the ledger dominates it;
- ``split``: the ledger split by ``split_books`` into a general ledger and
  sub-ledgers of 1,000 organizations each (by account number), reconciled, written, and
  the general ledger checked and opened in Fava, the largest sub-ledger checked.

Results accumulate in ``bench/data/ledger-scale/results.json`` (one row per size and
months); every run prints the table of all rows and draws ``bench/data/ledger-scale.png``
(copied to ``docs/ledger-scale.png``). The machine is shared: each row says how many cores
other processes used meanwhile, and ``--repeat`` measures bean-check more than once.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.connectors.stripe import ACCOUNTS  # noqa: E402
from beanbill.ledger.accounts import (  # noqa: E402
    ACCOUNTS_FILE,
    OrganizationAccounts,
    family_of,
    house_accounts,
    is_income,
    organization_accounts,
    organization_opens,
    processor_opens,
)
from beanbill.ledger.books import CreditLot  # noqa: E402
from beanbill.ledger.entries import Entry, Transaction, render  # noqa: E402
from beanbill.ledger.invoicing.derive import (  # noqa: E402
    Derived,
    buyer_vat,
    invoice_notes,
    party,
    seller_party,
)
from beanbill.ledger.invoicing.documents import (  # noqa: E402
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    Party,
)
from beanbill.ledger.invoicing.issuance import issuance_entries, ledger_file  # noqa: E402
from beanbill.ledger.invoicing.prepayment import (  # noqa: E402
    prepayment_document,
    purchase_entries,
)
from beanbill.ledger.invoicing.vat import VatTreatment  # noqa: E402
from beanbill.ledger.keys import InvoiceKey  # noqa: E402
from beanbill.ledger.posting import PeriodUsage, consumption_entry  # noqa: E402
from beanbill.ledger.wording import billing_link  # noqa: E402
from beanbill.ledger.writer import GENERATED_HEADER  # noqa: E402
from beanbill.ports import free_port  # noqa: E402
from beanbill.rating.config import BillingMode, Customer  # noqa: E402
from beanbill.rating.ingest import ingest  # noqa: E402
from beanbill.rating.periods import Month  # noqa: E402
from beanbill.rating.rate import rate_months  # noqa: E402
from beanbill.rating.workspace import Workspace  # noqa: E402
from beanbill.sync.interface import Movement, MovementKind  # noqa: E402
from beanbill.sync.payments import movement_entry  # noqa: E402
from bench.bench_fava import others, wait_for_quiet  # noqa: E402
from bench.bench_ledger import daily_usage, make_workspace  # noqa: E402

BIN = Path(sys.executable).parent
BEANBILL = str(BIN / "beanbill")
FAVA = str(BIN / "fava")
DATA = ROOT / "bench" / "data"
RESULTS = DATA / "ledger-scale" / "results.json"
PLOT = DATA / "ledger-scale.png"
DOCS_PLOT = ROOT / "docs" / "ledger-scale.png"
PERIODS = ("monthly",) * 19 + ("daily",)  # 5 % of the organizations on daily periods
FIRST_MONTH = Month(2026, 1)
ISSUE_AFTER = timedelta(days=1)  # monthly invoices on the 2nd: one day after the period
PAY_AFTER = timedelta(days=12)
DUE_AFTER = timedelta(days=30)
PLACEHOLDER_PDF = b"%PDF-1.7\n% placeholder: bench_ledger_scale renders no PDF\n%%EOF\n"
LINKS_PER_FILE = 60_000  # ext4 allows 65,000 hard links to one file
GROUP_SIZE = 1_000  # organizations per sub-ledger in the split
STARTUP_SECONDS = 1_800
ATTO_PER_CENT = 10**16
FILES = {"pdf": ".pdf", "html": ".html", "cii": ".cii.xml", "ubl": ".ubl.xml"}
CHECK = (
    "import os, resource, sys, time\n"
    "os.environ['BEANCOUNT_DISABLE_LOAD_CACHE'] = '1'\n"
    "from beancount import loader\n"
    "entries, errors, _ = loader.load_file(sys.argv[1])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print(len(entries), len(errors), peak)\n"
    "for error in errors[:5]: print(error.message, file=sys.stderr)\n"
)


# --- the synthetic books ---------------------------------------------------------------------


@dataclass(frozen=True)
class Organization:
    customer: Customer
    accounts: OrganizationAccounts
    buyer: Party
    vat: VatTreatment
    monthly_atto: tuple[tuple[str, int], ...]  # a month's consumption per product family
    daily: bool
    prepaid: bool  # prepaid or provisioned: buys credit on the 1st of each month


def organizations(workspace: Workspace) -> list[Organization]:
    customers = workspace.customers.customer
    accounts = organization_accounts(customers)
    settings = workspace.settings
    result = []
    for index, customer in enumerate(customers):
        cents = {
            "Compute": 2_000 + (index * 7_919) % 18_000,
            "Storage": 300 + (index * 104_729) % 2_700,
            "Network": 100 + (index * 1_299_709) % 900 if index % 3 == 0 else 0,
        }
        fraction = (index % 997) * 10**12  # rated totals carry sub-cent digits
        result.append(
            Organization(
                customer, accounts[customer.id], party(customer),
                buyer_vat(settings.seller, customer, settings.invoicing),
                tuple((f, c * ATTO_PER_CENT + fraction) for f, c in cents.items() if c),
                customer.billing_period.value == "daily",
                customer.billing_mode is not BillingMode.POSTPAID,
            )
        )  # fmt: skip
    return result


class Books:
    """The generated files, as the writer leaves them: its header, then each entry after
    a blank line; ``include``s added to the main file in the order files were created."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handles: dict[str, TextIO] = {}
        self.entries = 0

    def add(self, relative: str, entries: Iterable[Entry]) -> None:
        handle = self.handles.get(relative)
        if handle is None:
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.handles[relative] = path.open("w", encoding="utf-8")
            handle.write(GENERATED_HEADER)
        for entry in entries:
            handle.write("\n" + render(entry))
            self.entries += 1

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        main = self.root / "ledger.beancount"
        text = main.read_text(encoding="utf-8")
        includes = "".join(f'include "{relative}"\n' for relative in self.handles)
        main.write_text(text.rstrip("\n") + "\n" + includes, encoding="utf-8")


class Generator:
    """Writes the months' entries of every organization with beanbill's own functions."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.settings = workspace.settings
        self.currency = workspace.settings.billing.currency
        self.seller = seller_party(workspace.settings.seller)
        self.notes = invoice_notes(workspace.settings.invoicing)
        self.books = Books(workspace.root)
        self.numbers: dict[int, int] = {}
        self.issued: list[str] = []
        self.lots: dict[str, list[CreditLot]] = {}
        self.remaining: dict[str, int] = {}

    def number(self, day: date) -> str:
        self.numbers[day.year] = self.numbers.get(day.year, 0) + 1
        number = f"INV-{day.year}-{self.numbers[day.year]:06d}"
        self.issued.append(number)
        return number

    def files(self, number: str) -> dict[str, str]:
        return {kind: f"../../invoices/{number}{suffix}" for kind, suffix in FILES.items()}

    def opens(self, orgs: list[Organization]) -> None:
        customers = [org.customer for org in orgs]
        opens = organization_opens(customers, self.currency, set())
        house = set(house_accounts(self.settings, self.workspace.catalog))  # the main file's
        opens += processor_opens(ACCOUNTS, "stripe", self.currency, house)
        self.books.add(ACCOUNTS_FILE, opens)

    def month(self, orgs: list[Organization], month: Month) -> None:
        end = month.next().first_day
        days = (end - month.first_day).days
        for org in orgs:
            if org.prepaid:
                self.purchase(org, month)
            if not org.daily:
                issue_day = end + ISSUE_AFTER
                self.period(org, month.key, month.first_day, end, org.monthly_atto, issue_day)
                continue
            daily = tuple((family, atto // days) for family, atto in org.monthly_atto)
            for offset in range(days):
                day = month.first_day + timedelta(days=offset)
                following = day + timedelta(days=1)
                self.period(org, day.isoformat(), day, following, daily, following)

    def purchase(self, org: Organization, month: Month) -> None:
        """80 % of the month's expected consumption bought as credit on the 1st."""
        cents = sum(atto for _, atto in org.monthly_atto) * 8 // 10 // ATTO_PER_CENT
        lot_id = f"purchase-{org.customer.id}-{month.key}"
        lot = CreditLot(lot_id, org.customer.id, "purchase", cents, month.first_day, None, 10)
        number = self.number(month.first_day)
        document = prepayment_document(lot, number, org.customer, self.settings, 2)
        lot = lot._replace(vat_minor=document.tax_minor)
        entries = purchase_entries(
            lot, document, org.accounts, self.settings.ledger.credit_purchase_account,
            self.seller.country, self.files(number),
        )  # fmt: skip
        self.books.add(ledger_file(month.first_day), entries)
        self.lots.setdefault(org.customer.id, []).append(lot)
        self.remaining[lot_id] = cents

    def period(
        self, org: Organization, period: str, start: date, end: date,
        family_atto: tuple[tuple[str, int], ...], issue_day: date,
    ) -> None:  # fmt: skip
        """One billing period: its usage, its invoice, the payment and the fee."""
        customer = org.customer
        usage = PeriodUsage(
            customer.id, customer.billing_mode, period, start, end, family_atto,
            hashlib.md5(f"{customer.id}:{period}".encode()).hexdigest(),
            f"rated/month={start:%Y-%m}/lines.parquet", name=customer.name, payer=customer.id,
        )  # fmt: skip
        lots = self.lots.get(customer.id, [])
        entry = consumption_entry(usage, org.accounts, lots, self.remaining, self.currency, 2)
        if entry is None:
            return
        self.books.add(f"books/{entry.date:%Y-%m}/usage.beancount", [entry])
        self.invoice(org, usage, entry, issue_day)

    def invoice(self, org: Organization, usage: PeriodUsage, entry: Transaction, day: date) -> None:
        drawn = sum(p.amount_minor for p in entry.postings if p.account == org.accounts.credits)
        unbilled = sum(p.amount_minor for p in entry.postings if p.account == org.accounts.unbilled)
        drawn_vat = int(
            (Decimal(drawn) * org.vat.rate_percent / 100).quantize(Decimal(1), ROUND_HALF_UP)
        )
        income = [p for p in entry.postings if is_income(p.account)]
        lines = tuple(
            InvoiceLine(
                str(index), f"{family_of(p.account)} usage", Decimal(1), "C62",
                Decimal(-p.amount_minor).scaleb(-2), Decimal(1), -p.amount_minor, org.vat,
                family=family_of(p.account),
            )
            for index, p in enumerate(income, start=1)
        )  # fmt: skip
        number = self.number(day)
        document = InvoiceDocument(
            number, DocumentType.INVOICE, day, day + DUE_AFTER, usage.period_start,
            usage.period_end - timedelta(days=1), self.currency, self.seller, org.buyer, lines,
            self.notes, org.customer.id, paid_minor=drawn + drawn_vat,
            prepaid_vat_minor=drawn_vat,
        )  # fmt: skip
        derived = Derived(document, ((org.customer.id, unbilled),), ())
        key = InvoiceKey(org.customer.id, usage.period).text
        accounts = {org.customer.id: org.accounts}
        entries = issuance_entries(
            derived, accounts, org.customer.id, key, self.files(number), "FR"
        )
        self.books.add(ledger_file(day), entries)
        if document.due_minor > 0:
            self.payment(org, number, usage.period, document.due_minor, day + PAY_AFTER)

    def payment(self, org: Organization, number: str, period: str, due: int, day: date) -> None:
        org_id, name = org.customer.id, org.customer.name
        story = (billing_link(org_id, period),)
        paid = Movement(f"stripe-payment:{number}", MovementKind.PAYMENT, day, due,
                        self.currency, f"pi_{number}", number, org_id)  # fmt: skip
        fee = Movement(f"stripe-fee:{number}", MovementKind.FEE, day, due * 15 // 1000 + 25,
                       self.currency, f"txn_{number}", number, org_id)  # fmt: skip
        receivable = org.accounts.receivable
        entries = [
            movement_entry(paid, "stripe", ACCOUNTS, org_id, receivable, self.currency,
                           name=name, story=story),
            movement_entry(fee, "stripe", ACCOUNTS, org_id, None, self.currency,
                           name=name, story=story),
        ]  # fmt: skip
        self.books.add(f"books/{day:%Y-%m}/payments.beancount", entries)


def placeholder_pdfs(folder: Path, numbers: list[str]) -> None:
    """Every invoice's PDF, as hard links to a few copies of one placeholder file."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(numbers), LINKS_PER_FILE):
        source = folder / f".placeholder-{start // LINKS_PER_FILE}.pdf"
        source.write_bytes(PLACEHOLDER_PDF)
        for number in numbers[start : start + LINKS_PER_FILE]:
            os.link(source, folder / f"{number}.pdf")


def build(root: Path, count: int, months: int) -> dict[str, Any]:
    """A workspace of ``count`` organizations and ``months`` generated months of books."""
    started = time.perf_counter()
    workspace = make_workspace(root, count, PERIODS)
    orgs = organizations(workspace)
    generator = Generator(workspace)
    generator.opens(orgs)
    month = FIRST_MONTH
    for _ in range(months):
        generator.month(orgs, month)
        log(f"{month.key}: {generator.books.entries:,} entries so far", started)
        month = month.next()
    generator.books.close()
    placeholder_pdfs(workspace.invoices_dir, generator.issued)
    books = [root / "ledger.beancount", *(root / "books").rglob("*.beancount")]
    size = sum(path.stat().st_size for path in books)
    log(f"built: {len(generator.issued):,} invoices, {size / 1e6:,.0f} MB", started)
    return {"generated": generator.books.entries, "megabytes": round(size / 1e6, 1),
            "build_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {message}", file=sys.stderr, flush=True)


# --- measuring -------------------------------------------------------------------------------


def busy(step: Callable[[], dict[str, Any]], quiet_wait: float) -> dict[str, Any]:
    """``step``'s result, with how many cores other processes used before and during it."""
    before = wait_for_quiet(quiet_wait)
    note: list[str] = []
    with others(note):
        result = step()
    return {**result, "busy": f"{before} / {note[0]}"}


def check(ledger: Path) -> dict[str, Any]:
    """bean-check's load (``loader.load_file``, no cache) in a fresh process."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(ledger)], capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench_ledger_scale: loading {ledger} failed:\n{result.stderr[-2000:]}")
    entries, errors, peak_kb = (int(value) for value in result.stdout.split())
    if errors:
        print(f"  {ledger.name}: {errors} errors, first: {result.stderr[:500]}", file=sys.stderr)
    return {"seconds": round(seconds, 1), "entries": entries, "errors": errors,
            "peak_gb": round(peak_kb / 1e6, 2)}  # fmt: skip


def peak_memory_gb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), in GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1e6, 2)
    return 0.0


def fava_first_page(ledger: Path) -> dict[str, Any]:
    """Stock ``fava`` (which never reads Beancount's cache): seconds from its start to
    ``GET /`` answered 200 by the income statement, and the server's peak memory."""
    port = free_port()
    log_path = ledger.parent / "fava-bench.log"
    started = time.perf_counter()
    with log_path.open("wb") as server_log:
        command = [FAVA, "--read-only", "--host", "127.0.0.1", "--port", str(port), str(ledger)]
        server = subprocess.Popen(command, stdout=server_log, stderr=server_log)
        try:
            while True:
                try:
                    url = f"http://127.0.0.1:{port}/"
                    with urllib.request.urlopen(url, timeout=STARTUP_SECONDS) as page:
                        page.read()
                        seconds = time.perf_counter() - started
                        if page.status != 200 or not page.url.endswith("/income_statement/"):
                            sys.exit(f"bench_ledger_scale: GET / answered {page.status} {page.url}")
                        return {"seconds": round(seconds, 1), "peak_gb": peak_memory_gb(server.pid)}
                except (ConnectionError, urllib.error.URLError):
                    if server.poll() is not None:
                        sys.exit(f"bench_ledger_scale: fava stopped, see {log_path}")
                    if time.perf_counter() - started > STARTUP_SECONDS:
                        sys.exit(f"bench_ledger_scale: no first page in {STARTUP_SECONDS} s")
                    time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=60)


POST = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('peak-kb', resource.getrusage(resource.RUSAGE_SELF)"
    ".ru_maxrss, file=sys.stderr))\n"
    "from beanbill.cli import main\n"
    "sys.argv = ['beanbill', *sys.argv[1:]]\n"
    "main()\n"
)


def post_next_month(root: Path, months: int) -> dict[str, Any]:
    """``beanbill post`` of the month after the generated ones, its usage rated first."""
    workspace = Workspace.load(root)
    month = FIRST_MONTH
    for _ in range(months):
        month = month.next()
    days = (month.next().first_day - month.first_day).days
    ingest(workspace, [daily_usage(workspace, month.first_day, days)])
    rate_months(workspace, [month])
    as_of = (month.next().first_day + timedelta(days=1)).isoformat()
    arguments = ["post", "-w", str(root), "--period", month.key, "--as-of", as_of]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", POST, *arguments], capture_output=True,
                            text=True, cwd=ROOT)  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench_ledger_scale: beanbill post failed:\n{result.stderr[-2000:]}")
    peak_kb = int(result.stderr.rsplit("peak-kb", 1)[1].split()[0])
    return {"seconds": round(seconds, 1), "month": month.key, "peak_gb": round(peak_kb / 1e6, 2)}


# --- the general ledger and its sub-ledgers ----------------------------------------------------


def by_number(component: str) -> str:
    """Groups of GROUP_SIZE organizations by account number (``Org-01234`` -> ``001``)."""
    return f"{int(component.rsplit('-', 1)[1]) // GROUP_SIZE:03d}"


SPLIT = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from bench.bench_ledger_scale import split_worker\n"
    "print(json.dumps(split_worker(Path(sys.argv[1]))))\n"
)


def split_worker(root: Path) -> dict[str, Any]:
    """In its own process (its memory given back): split the ledger, reconcile, write."""
    from beanbill.ledger.books import load_uncached
    from beanbill.ledger.subledgers import ledger_header, reconcile, render_ledger, split_books

    started = time.perf_counter()
    entries, errors, options_map = load_uncached(root / "ledger.beancount")
    assert not errors, errors[:3]
    loaded = time.perf_counter()
    split, split_errors = split_books(entries, options_map, by_number)
    assert not split_errors, split_errors[:3]
    split_done = time.perf_counter()
    discrepancies = reconcile(split)
    reconciled = time.perf_counter()
    folder = root / "split"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    main_text = (root / "ledger.beancount").read_text(encoding="utf-8")
    books = {"general": split.general} | {f"group-{g}": e for g, e in split.subledgers.items()}
    for name, book in books.items():
        header = ledger_header(main_text, f"{name} ledger")
        text = render_ledger(book, header, str(folder))
        (folder / f"{name}.beancount").write_text(text, encoding="utf-8")
    sizes = {name: len(book) for name, book in books.items()}
    largest = max((name for name in sizes if name != "general"), key=sizes.__getitem__)
    return {
        "load_seconds": round(loaded - started, 1),
        "split_seconds": round(split_done - loaded, 1),
        "reconcile_seconds": round(reconciled - split_done, 1),
        "write_seconds": round(time.perf_counter() - reconciled, 1),
        "discrepancies": len(discrepancies),
        "groups": len(split.subledgers),
        "general_entries": sizes["general"],
        "largest": largest,
        "largest_entries": sizes[largest],
        "general_megabytes": round((folder / "general.beancount").stat().st_size / 1e6, 2),
    }


def measure_split(root: Path, quiet_wait: float) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", SPLIT, str(root)], capture_output=True,
                            text=True, cwd=ROOT)  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"bench_ledger_scale: the split failed:\n{result.stderr[-3000:]}")
    split: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  split: {split}", file=sys.stderr)
    general = root / "split" / "general.beancount"
    largest = root / "split" / f"{split['largest']}.beancount"
    split["general_check"] = busy(lambda: check(general), quiet_wait)
    split["general_fava"] = busy(lambda: fava_first_page(general), quiet_wait)
    split["largest_check"] = busy(lambda: check(largest), quiet_wait)
    return split


def post_and_undo(root: Path, months: int, quiet_wait: float) -> dict[str, Any]:
    """Time ``beanbill post`` of the next month, then take its files out again, so the
    workspace stays the measured ledger (``--reuse`` measures the same books)."""
    main = root / "ledger.beancount"
    main_text = main.read_text(encoding="utf-8")
    before = {path: path.stat().st_size for path in (root / "books").rglob("*.beancount")}
    result = busy(lambda: post_next_month(root, months), quiet_wait)
    after = {path: path.stat().st_size for path in (root / "books").rglob("*.beancount")}
    changed = [str(path) for path, size in before.items() if after.get(path) != size]
    if changed:
        sys.exit(f"bench_ledger_scale: post changed generated files: {changed[:3]}")
    result["entries_written"] = sum(
        path.read_text(encoding="utf-8").count("\n  txn-id:")
        for path in after
        if path not in before
    )
    for path in after:
        if path not in before:
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
    main.write_text(main_text, encoding="utf-8")
    return result


# --- results, table and curve ----------------------------------------------------------------


def load_results() -> list[dict[str, Any]]:
    if not RESULTS.exists():
        return []
    rows: list[dict[str, Any]] = json.loads(RESULTS.read_text())
    return rows


def save_result(row: dict[str, Any]) -> None:
    key = (row["organizations"], row["months"])
    rows = [r for r in load_results() if (r["organizations"], r["months"]) != key]
    rows.append(row)
    rows.sort(key=lambda r: (r["organizations"], r["months"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


def fixed_entries(row: dict[str, Any]) -> int:
    """Entries that do not grow with months: three opens per organization, the main file's
    (house accounts, queries, options) and Stripe's opens — about 60."""
    return 3 * int(row["organizations"]) + 60


def year_of(row: dict[str, Any]) -> float:
    """The factor from this row's entries to a year's, by extrapolating the months."""
    entries = int(row["check"][0]["entries"])
    fixed = fixed_entries(row)
    year = fixed + (entries - fixed) * 12 / int(row["months"])
    return year / entries


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    if len(ordered) == 1:
        return f"{middle:,.1f}"
    return f"{middle:,.1f} ({ordered[0]:,.1f}–{ordered[-1]:,.1f}, {len(ordered)} runs)"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| organizations × months | entries | MB | bean-check s | ms / entry | peak GB "
        "| Fava first page s | Fava peak GB | post next month s | other cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        checks = row["check"]
        entries = int(checks[0]["entries"])
        seconds = [float(c["seconds"]) for c in checks]
        fava, post = row.get("fava"), row.get("post")
        per_entry = 1000 * sorted(seconds)[len(seconds) // 2] / entries
        busy_notes = [c["busy"] for c in checks] + [x["busy"] for x in (fava, post) if x]
        lines.append(
            f"| {row['organizations']:,} × {row['months']} | {entries:,} | "
            f"{row['megabytes']:,.0f} | {spread(seconds)} | {per_entry:.3f} | "
            f"{max(float(c['peak_gb']) for c in checks):.1f} | "
            f"{fava['seconds'] if fava else '—'} | {fava['peak_gb'] if fava else '—'} | "
            f"{post['seconds'] if post else '—'} | {', '.join(busy_notes)} |"
        )
        if row["months"] < 12:
            factor = year_of(row)
            median = sorted(seconds)[len(seconds) // 2]
            peak = max(float(c["peak_gb"]) for c in checks)
            fava_year = f"≈ {fava['seconds'] * factor:,.0f}" if fava else "—"
            fava_peak = f"≈ {fava['peak_gb'] * factor:.0f}" if fava else "—"
            lines.append(
                f"| ≈ {row['organizations']:,} × 12 (extrapolated, linear) | "
                f"≈ {entries * factor:,.0f} | ≈ {row['megabytes'] * factor:,.0f} | "
                f"≈ {median * factor:,.0f} | | ≈ {peak * factor:.0f} | "
                f"{fava_year} | {fava_peak} | | |"
            )
    return "\n".join(lines)


def split_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| organizations × months | ledger entries | GL entries | GL bean-check s | GL Fava s "
        "| groups | largest sub-ledger entries | its bean-check s | split s | reconcile s "
        "| discrepancies |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        split = row.get("split")
        if not split:
            continue
        lines.append(
            f"| {row['organizations']:,} × {row['months']} | {row['check'][0]['entries']:,} | "
            f"{split['general_check']['entries']:,} | {split['general_check']['seconds']} | "
            f"{split['general_fava']['seconds']} | {split['groups']} | "
            f"{split['largest_check']['entries']:,} | {split['largest_check']['seconds']} | "
            f"{split['split_seconds']} | {split['reconcile_seconds']} | "
            f"{split['discrepancies']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]]) -> Path | None:
    """Seconds and peak memory against entries (log-log); extrapolated years hollow."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, (times, memory) = pyplot.subplots(1, 2, figsize=(13, 5.2))
    series = {"bean-check (load_file, no cache)": "check", "Fava first page": "fava",
              "beanbill post (next month)": "post"}  # fmt: skip
    for (label, key), color in zip(series.items(), ("C0", "C1", "C2"), strict=True):
        for x, y, gb in measured_points(rows, key):
            times.plot([x], [y], "o", color=color, label=label)
            if key != "post":
                memory.plot([x], [gb], "o", color=color, label=label)
        for x, low, high in spreads(rows, key):  # repeated runs: their spread
            times.plot([x, x], [low, high], "-", color=color, lw=4, alpha=0.35)
        for (x0, y0, gb0), (x, y, gb) in extrapolated_points(rows, key):
            times.plot([x0, x], [y0, y], ":o", mfc="none", color=color)
            if key != "post":
                memory.plot([x0, x], [gb0, gb], ":o", mfc="none", color=color)
    label_points(rows, times, memory)
    times.axhline(10, color="grey", ls="--", lw=1, label="10 s: Fava / bean-check target")
    memory.axhline(24, color="grey", ls="--", lw=1, label="24 GB: this machine")
    for axis, unit in ((times, "seconds"), (memory, "peak memory, GB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("entries in the ledger (hollow: a year extrapolated)")
        axis.set_ylabel(unit)
        axis.grid(True, which="both", alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axis.legend(unique.values(), unique.keys(), fontsize=8)
    times.set_title("One Beancount file, per-organization accounts (2 shared cores)")
    memory.set_title("Memory of one load")
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT, dpi=110)
    DOCS_PLOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PLOT, DOCS_PLOT)
    return PLOT


def measured_points(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float, float]]:
    """(entries, median seconds, peak GB) of each row that measured ``key``."""
    points = []
    for row in rows:
        value = row.get(key)
        if not value:
            continue
        runs = value if isinstance(value, list) else [value]
        seconds = sorted(float(run["seconds"]) for run in runs)
        peak = max(float(run.get("peak_gb", 0.0)) for run in runs)
        points.append((int(row["check"][0]["entries"]), seconds[len(seconds) // 2], peak))
    return sorted(points)


def spreads(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float, float]]:
    """(entries, fastest, slowest) of each row that measured ``key`` more than once."""
    found = []
    for row in rows:
        runs = row.get(key)
        if isinstance(runs, list) and len(runs) > 1:
            seconds = [float(run["seconds"]) for run in runs]
            found.append((int(row["check"][0]["entries"]), min(seconds), max(seconds)))
    return found


def extrapolated_points(
    rows: list[dict[str, Any]], key: str
) -> Iterator[tuple[tuple[int, float, float], tuple[float, float, float]]]:
    """(measured point, its year extrapolated) of the rows of fewer than 12 months."""
    for row in rows:
        if row["months"] >= 12 or key == "post":
            continue
        factor = year_of(row)
        for entries, seconds, gb in measured_points([row], key):
            yield (entries, seconds, gb), (entries * factor, seconds * factor, gb * factor)


def label_points(rows: list[dict[str, Any]], times: Any, memory: Any) -> None:
    """Each size named beside its bean-check point; the GL and sub-ledger points drawn."""
    for index, row in enumerate(rows):
        label = f"{row['organizations']:,} × {row['months']}"
        [(entries, seconds, gb)] = measured_points([row], "check")
        offset = (6, -12) if index % 2 else (6, 4)
        for axis, y in ((times, seconds), (memory, gb)):
            axis.annotate(label, (entries, y), textcoords="offset points", xytext=offset,
                          fontsize=8)  # fmt: skip
        for _, (x, y, year_gb) in extrapolated_points([row], "check"):
            for axis, value in ((times, y), (memory, year_gb)):
                axis.annotate(f"{row['organizations']:,} × 12, extrapolated", (x, value),
                              textcoords="offset points", xytext=(-130, 8), fontsize=8)  # fmt: skip
        split = row.get("split")
        if not split:
            continue
        for part, marker, color, name in (
            ("general_check", "*", "C3", "general ledger"),
            ("largest_check", "P", "C4", "largest sub-ledger"),
        ):
            x, y = split[part]["entries"], split[part]["seconds"]
            times.plot([x], [y], marker, ms=11, color=color, label=f"{name}: bean-check")
            times.annotate(f"{name}, {label}", (x, y), textcoords="offset points",
                           xytext=(6, -3), fontsize=7)  # fmt: skip


def report() -> None:
    rows = load_results()
    if not rows:
        sys.exit(f"bench_ledger_scale: no results in {RESULTS}")
    print(table(rows))
    if any(row.get("split") for row in rows):
        print()
        print(split_table(rows))
    path = plot(rows)
    if path is not None:
        print(f"\nCurve: {path} (and {DOCS_PLOT})")


MEASURES = ("check", "fava", "split", "post")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organizations", type=int, default=1_000)
    parser.add_argument("--months", type=int, help="generated months (default 12; 1 above 10k)")
    parser.add_argument(
        "--measure",
        help=f"comma-separated, of {','.join(MEASURES)} (default: check,fava; post up to 10k)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure bean-check this often")
    parser.add_argument("--reuse", action="store_true", help="measure the books already built")
    parser.add_argument("--report", action="store_true", help="print the table, draw the PNG")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measure, wait at most this long for a quiet machine",
    )
    arguments = parser.parse_args()
    if arguments.report:
        report()
        return
    count = arguments.organizations
    months = arguments.months or (12 if count <= 10_000 else 1)
    default = "check,fava,post" if count <= 10_000 else "check,fava"
    measures = (arguments.measure or default).split(",")
    if not 1 <= months <= 12 or count < 1 or arguments.repeat < 1:
        parser.error("--months is 1 to 12, --organizations and --repeat at least 1")
    if not set(measures) <= set(MEASURES):
        parser.error(f"--measure takes {', '.join(MEASURES)}")
    root = DATA / "ledger-scale" / f"{count}x{months}"
    ledger = root / "ledger.beancount"
    key = (count, months)
    previous = [r for r in load_results() if (r["organizations"], r["months"]) == key]
    if arguments.reuse and ledger.exists() and previous:
        row = previous[0]
    else:
        row = {"organizations": count, "months": months, "daily_share": 0.05}
        row |= build(root, count, months)
    measure(row, root, measures, arguments.repeat, arguments.quiet_wait)
    save_result(row)
    report()


def measure(
    row: dict[str, Any], root: Path, measures: list[str], repeat: int, quiet_wait: float
) -> None:
    """The measures asked for, into ``row`` (what was not asked for is kept as it was)."""
    ledger = root / "ledger.beancount"
    row["load_average_before"] = round(os.getloadavg()[0], 2)
    if "check" in measures or "check" not in row:
        row["check"] = [busy(lambda: check(ledger), quiet_wait) for _ in range(repeat)]
        print(f"  bean-check: {row['check']}", file=sys.stderr)
    if "fava" in measures:
        row["fava"] = busy(lambda: fava_first_page(ledger), quiet_wait)
        print(f"  fava: {row['fava']}", file=sys.stderr)
    if "split" in measures:
        row["split"] = measure_split(root, quiet_wait)
    if "post" in measures:
        row["post"] = post_and_undo(root, int(row["months"]), quiet_wait)
        print(f"  post: {row['post']}", file=sys.stderr)
    row["load_average_after"] = round(os.getloadavg()[0], 2)
    row["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


if __name__ == "__main__":
    main()
