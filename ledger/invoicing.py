"""Invoices derived from the ledger, issued with gapless numbers, corrected by credit notes.

An invoice covers one billing organization (with the organizations it invoices centrally)
and one billing period. It is computed from the consumption transactions posted for that
period — not from the rating store — and the rated detail only explains them: detail
lines are allocated to each posting by largest remainder and must add up to it exactly,
or issuing fails.

- postpaid and prepaid: the period's consumption, VAT on all of it, credits drawn shown as
  prepaid (BT-113). Issuance moves the unbilled part to the receivable with the VAT.
- provisioned (the unified invoice): a credit provision for the coming period equal to
  the period's consumption, itemized (usage by family, each add-on, each one-shot
  service), plus the regularization of over-consumption. Issuance credits both to the
  credits account.

Issuing one invoice: assign its number (durable), render HTML, PDF/A-3 with Factur-X and
UBL into ``invoices/``, then append the issuance transaction (``^invoice-<number>``) and
``document`` entries to the ledger, then mark the number issued. A crash at any step is
finished by the next run, under the same number and date: no gap, no reuse.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import duckdb

from beanbill.ledger.books import (
    LOT_KEY,
    Books,
    OrganizationAccounts,
    load_books,
    organization_accounts,
)
from beanbill.ledger.documents import (
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    Party,
    document_json,
)
from beanbill.ledger.einvoice import cii_xml
from beanbill.ledger.entries import Document, Entry, Posting, Transaction, minor_digits
from beanbill.ledger.main_file import FAMILY_ACCOUNTS
from beanbill.ledger.numbering import Assigned, InvoiceNumbers
from beanbill.ledger.posting import reversal_entry
from beanbill.ledger.render import invoice_html, invoice_pdf
from beanbill.ledger.rounding import allocate_largest_remainder, to_minor
from beanbill.ledger.ubl import ubl_xml
from beanbill.ledger.vat import treatment
from beanbill.ledger.writer import LedgerWriter
from beanbill.rating.config import BillingMode, Customer, MeterKind
from beanbill.rating.errors import BeanbillError
from beanbill.rating.money import AMOUNT_SCALE, PRICE_SCALE, QUANTITY_SCALE
from beanbill.rating.periods import Month
from beanbill.rating.storage import write_bytes_atomically
from beanbill.rating.workspace import Workspace

VAT_ACCOUNT = "Liabilities:VAT:Output"
DISCOUNT_ACCOUNT = "Income:Discounts"
CRASH_ENVIRONMENT = "BEANBILL_CRASH_AFTER"
QUANTITY_DECIMALS = Decimal("0.0001")
PRICE_DECIMALS = Decimal("0.000001")
UNIT_CODES = {"GB": "E34", "vCPU": "HUR", "hour": "HUR"}
MAX_INVOICES_PER_RUN = 100_000
MAX_BASE_EXPONENT = 6
MAX_RENDER_WORKERS = 16


class InvoicingError(BeanbillError):
    """An invoice cannot be derived or issued as the ledger stands."""


def crash_point(step: str) -> None:
    """Test hook: die here, like a kill, when BEANBILL_CRASH_AFTER names this step."""
    if os.environ.get(CRASH_ENVIRONMENT) == step:
        os._exit(86)


def family_of(income_account: str) -> str:
    """The product family an income account books: the inverse of ``income_account``."""
    for family, account in FAMILY_ACCOUNTS.items():
        if account == income_account:
            return family
    return income_account.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Consumption:
    """One posted consumption transaction, read back from the ledger."""

    transaction: Transaction
    org: str
    period: str
    period_start: date
    period_end: date
    rated_file: str
    day: date | None

    def income_by_family(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for posting in self.transaction.postings:
            if posting.account.startswith("Income:"):
                family = family_of(posting.account)
                result[family] = result.get(family, 0) - posting.amount_minor
        return result

    def rated_atto_by_family(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for posting in self.transaction.postings:
            rated = dict(posting.meta).get("rated-amount")
            if posting.account.startswith("Income:") and isinstance(rated, Decimal):
                result[family_of(posting.account)] = int(rated.scaleb(AMOUNT_SCALE))
        return result

    def credits_drawn(self) -> int:
        return sum(p.amount_minor for p in self.transaction.postings if LOT_KEY in dict(p.meta))

    def over_consumption(self) -> int:
        return sum(
            p.amount_minor
            for p in self.transaction.postings
            if dict(p.meta).get("over-consumption")
        )

    def unbilled(self) -> int:
        return sum(
            p.amount_minor
            for p in self.transaction.postings
            if p.account.startswith("Assets:Unbilled:")
        )


@dataclass(frozen=True)
class DueInvoice:
    key: str
    customer: Customer
    period: str
    period_start: date
    period_end: date
    consumptions: tuple[Consumption, ...]


def consumptions(books: Books) -> list[Consumption]:
    active = {version.txn_id for version in books.usage_versions().values()}
    result = []
    for txn_id in sorted(active):
        transaction = books.transaction(txn_id)
        meta = dict(transaction.meta)
        result.append(
            Consumption(
                transaction=transaction,
                org=str(meta["org"]),
                period=str(meta["period"]),
                period_start=meta["period-start"],  # type: ignore[arg-type]
                period_end=meta["period-end"],  # type: ignore[arg-type]
                rated_file=str(meta["rated-lines"]),
                day=meta.get("day"),  # type: ignore[arg-type]
            )
        )
    return result


def issued_keys(books: Books) -> dict[str, str]:
    """invoice key → number, for invoices not cancelled by a credit note."""
    reversed_ids = {
        str(dict(t.meta).get("reverses"))
        for t in _transactions(books)
        if "reverses" in dict(t.meta)
    }
    keys: dict[str, str] = {}
    for transaction in _transactions(books):
        meta = dict(transaction.meta)
        if "invoice-key" in meta and transaction.txn_id not in reversed_ids:
            keys[str(meta["invoice-key"])] = str(meta["invoice-number"])
    return keys


def _transactions(books: Books) -> list[Transaction]:
    ids = [
        entry.meta["txn-id"]
        for entry in books.entries
        if "txn-id" in entry.meta
        and str(entry.meta["txn-id"]).startswith(("invoice:", "reversal:", "credit-note:"))
    ]
    return [books.transaction(str(txn_id)) for txn_id in ids]


def due_invoices(workspace: Workspace, books: Books, up_to: Month) -> list[DueInvoice]:
    """Posted periods ending by the end of ``up_to`` that no invoice in force covers yet."""
    customers = workspace.customers.by_id()
    issued = issued_keys(books)
    every_key = {
        str(dict(t.meta)["invoice-key"])
        for t in _transactions(books)
        if "invoice-key" in dict(t.meta)
    }
    groups: dict[tuple[str, str], list[Consumption]] = defaultdict(list)
    for consumption in consumptions(books):
        if consumption.period_end > up_to.next().first_day:
            continue
        payer = customers[consumption.org].parent or consumption.org
        groups[(payer, consumption.period)].append(consumption)
    due = []
    for (payer, period), items in sorted(groups.items()):
        base = f"invoice:{payer}:{period}"
        revisions = [k for k in every_key if k == base or k.startswith(f"{base}:r")]
        if any(k in issued for k in revisions):
            continue  # invoiced, and not cancelled by a credit note
        key = base if not revisions else f"{base}:r{len(revisions) + 1}"
        first = items[0]
        ordered = tuple(sorted(items, key=lambda c: (c.org, c.day or date.min)))
        due.append(
            DueInvoice(key, customers[payer], period, first.period_start, first.period_end, ordered)
        )
    return due


def _rated_groups(workspace: Workspace, consumption: Consumption) -> list[dict[str, object]]:
    """The consumption's rated detail, one row per meter, resource, band and price."""
    path = workspace.root / consumption.rated_file
    day_filter = "AND day = ?" if consumption.day else ""
    parameters: list[object] = [consumption.org, consumption.period]
    if consumption.day:
        parameters.append(consumption.day)
    rows = (
        duckdb.connect()
        .execute(
            f"""
        SELECT family, meter, resource, band, is_free, price_pico,
               sum(quantity_micro) AS quantity_micro, sum(amount_atto) AS amount_atto
        FROM read_parquet('{path}')
        WHERE org = ? AND period = ? {day_filter}
        GROUP BY ALL ORDER BY family, meter, resource, band
        """,
            parameters,
        )
        .fetchall()
    )
    columns = [
        "family",
        "meter",
        "resource",
        "band",
        "is_free",
        "price_pico",
        "quantity_micro",
        "amount_atto",
    ]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def plain(value: Decimal) -> Decimal:
    """Without exponent or trailing zeros: 1E+2 → 100, 2.500 → 2.5 (XML decimals)."""
    return Decimal(format(value.normalize(), "f"))


def price_per_base(price: Decimal) -> tuple[Decimal, Decimal]:
    """(unit price, base quantity) with at most six decimals (BR-FR-DEC-03), exact if possible.

    0.0000004 per request becomes 0.0004 per 1,000 requests rather than 0.000000.
    """
    for exponent in range(MAX_BASE_EXPONENT + 1):
        scaled = price.scaleb(exponent)
        if scaled == scaled.quantize(PRICE_DECIMALS):
            return plain(scaled.quantize(PRICE_DECIMALS)), Decimal(10) ** exponent
    scaled = price.scaleb(MAX_BASE_EXPONENT)
    return plain(scaled.quantize(PRICE_DECIMALS, rounding=ROUND_HALF_EVEN)), Decimal(
        10
    ) ** MAX_BASE_EXPONENT


def _line_quantity(
    workspace: Workspace, meter_id: str, quantity_micro: int, price_pico: int
) -> tuple[Decimal, str, Decimal, Decimal]:
    """(quantity, unit code, unit price, base quantity); per-second meters are priced per hour."""
    meters = {meter.id: meter for meter in workspace.catalog.rated_meters()}
    meter = meters.get(meter_id)
    quantity = Decimal(quantity_micro).scaleb(-QUANTITY_SCALE)
    price = Decimal(price_pico).scaleb(-PRICE_SCALE)
    if meter is not None and meter.kind is MeterKind.INTERVAL:
        hours = (quantity / 3600).quantize(QUANTITY_DECIMALS, rounding=ROUND_HALF_EVEN)
        unit_price, base = price_per_base(price * 3600)
        return plain(hours), "HUR", unit_price, base
    unit = UNIT_CODES.get(meter.unit if meter else "", "C62")
    unit_price, base = price_per_base(price)
    return plain(quantity), unit, unit_price, base


def detail_lines(
    workspace: Workspace, consumption: Consumption, digits: int
) -> list[tuple[str, str, Decimal, str, Decimal, Decimal, int]]:
    """(family, description, quantity, unit, unit price, base quantity, net minor) per rated group.

    Each family's lines are allocated its posted amount by largest remainder; the rated
    total must equal the posting's ``rated-amount`` to the last digit.
    """
    names = {meter.id: meter.name for meter in workspace.catalog.rated_meters()}
    names |= {addon.id: addon.name for addon in workspace.catalog.addon}
    groups = _rated_groups(workspace, consumption)
    posted = consumption.income_by_family()
    rated = consumption.rated_atto_by_family()
    result = []
    by_family: dict[str, list[dict[str, object]]] = defaultdict(list)
    for group in groups:
        by_family[str(group["family"])].append(group)
    for family, amount_minor in sorted(posted.items()):
        rows = by_family.get(family, [])
        total_atto = sum(int(str(row["amount_atto"])) for row in rows)
        if total_atto != rated.get(family):
            raise InvoicingError(
                f"{consumption.transaction.txn_id}: the rated detail of {family} "
                f"({total_atto} atto) no longer explains the posting ({rated.get(family)} atto); "
                "re-post with `beanbill post --correct` first"
            )
        shares = allocate_largest_remainder(
            amount_minor, [to_minor(int(str(row["amount_atto"])), digits) for row in rows]
        )
        for row, share in zip(rows, shares, strict=True):
            meter = str(row["meter"])
            quantity, unit, price, base = _line_quantity(
                workspace, meter, int(str(row["quantity_micro"])), int(str(row["price_pico"]))
            )
            label = f"{names.get(meter, meter)} - {row['resource']}"
            if row["is_free"]:
                label += " (free allowance)"
            result.append((family, label, quantity, unit, price, base, share))
    return result


def _party(customer: Customer) -> Party:
    return Party(
        customer.name,
        tuple(customer.address),
        customer.country,
        customer.vat_id,
        customer.siren,
        customer.email,
    )


def seller_party(workspace: Workspace) -> Party:
    seller = workspace.settings.seller
    return Party(
        seller.legal_name,
        tuple(seller.address),
        seller.country,
        seller.vat_id,
        seller.siren,
        seller.email,
    )


def seller_legal_line(workspace: Workspace) -> str:
    seller = workspace.settings.seller
    parts = [
        seller.legal_form,
        f"capital {seller.share_capital}" if seller.share_capital else None,
        seller.registration,
    ]
    return " - ".join(part for part in parts if part)


@dataclass(frozen=True)
class Derived:
    """An invoice document and what issuing it moves in the ledger."""

    document: InvoiceDocument
    unbilled_minor: tuple[tuple[str, int], ...]  # per org, leaves Assets:Unbilled
    credits_minor: tuple[tuple[str, int], ...]  # per org, to Liabilities:Credits (provisioned)
    discount_minor: int = 0  # coupons: to Income:Discounts (contra revenue)


def derive(workspace: Workspace, due: DueInvoice, number: str, issue_date: date) -> Derived:
    currency = workspace.settings.billing.currency
    digits = minor_digits(currency)
    invoicing = workspace.settings.invoicing
    customer = due.customer
    vat = treatment(
        workspace.settings.seller.country,
        customer.country,
        customer.vat_id,
        invoicing.vat_rate_percent,
    )
    lines: list[InvoiceLine] = []
    paid = discount_minor = 0
    unbilled: dict[str, int] = defaultdict(int)
    credits: dict[str, int] = defaultdict(int)
    central = len({c.org for c in due.consumptions}) > 1 or due.consumptions[0].org != customer.id
    if customer.billing_mode is BillingMode.PROVISIONED:
        provision: dict[str, int] = defaultdict(int)
        over = 0
        for consumption in due.consumptions:
            for family, amount in consumption.income_by_family().items():
                provision[family] += amount
                credits[consumption.org] += amount
            over += consumption.over_consumption()
            credits[consumption.org] += consumption.over_consumption()
        for family, amount in sorted(provision.items()):
            lines.append(
                InvoiceLine(
                    str(len(lines) + 1),
                    f"Credit provision for the next period: {family} (as consumed in {due.period})",
                    Decimal(1),
                    "C62",
                    Decimal(amount).scaleb(-digits),
                    Decimal(1),
                    amount,
                    vat,
                )
            )
        if over:
            lines.append(
                InvoiceLine(
                    str(len(lines) + 1),
                    f"Regularization of over-consumption in {due.period}",
                    Decimal(1),
                    "C62",
                    Decimal(over).scaleb(-digits),
                    Decimal(1),
                    over,
                    vat,
                )
            )
    else:
        families: list[str] = []
        for consumption in due.consumptions:
            for family, label, quantity, unit, price, base, net in detail_lines(
                workspace, consumption, digits
            ):
                families.append(family)
                if central:
                    label = f"[{consumption.org}] {label}"
                if consumption.day:
                    label = f"{label} ({consumption.day.isoformat()})"
                lines.append(
                    InvoiceLine(str(len(lines) + 1), label, quantity, unit, price, base, net, vat)
                )
            paid += consumption.credits_drawn()
            unbilled[consumption.org] += consumption.unbilled()
        discounts = coupon_lines(customer, due, lines, families, sum(unbilled.values()), digits)
        lines += [
            replace(line, line_id=str(len(lines) + index + 1), vat=vat)
            for index, line in enumerate(discounts)
        ]
        discount_minor = -sum(line.net_minor for line in discounts)
    notes = (
        ("PMD", invoicing.late_penalty_note),
        ("PMT", invoicing.recovery_indemnity_note),
        ("AAB", invoicing.early_payment_note),
    )
    document = InvoiceDocument(
        number=number,
        type=DocumentType.INVOICE,
        issue_date=issue_date,
        due_date=issue_date + timedelta(days=invoicing.payment_days),
        period_start=due.period_start,
        period_end=due.period_end - timedelta(days=1),
        currency=currency,
        seller=seller_party(workspace),
        buyer=_party(customer),
        lines=tuple(lines),
        notes=notes,
        buyer_reference=customer.id,
        paid_minor=paid,
    )
    net = document.net_minor
    moved = sum(unbilled.values()) + sum(credits.values())
    if net - paid + discount_minor != moved:
        raise InvoicingError(f"{due.key}: lines net {net} - credits {paid} != ledger {moved}")
    return Derived(
        document, tuple(sorted(unbilled.items())), tuple(sorted(credits.items())), discount_minor
    )


def coupon_lines(
    customer: Customer,
    due: DueInvoice,
    lines: list[InvoiceLine],
    families: list[str],
    unbilled_minor: int,
    digits: int,
) -> list[InvoiceLine]:
    """Negative lines for the customer's coupons valid in the period, in their listed order.

    A percentage is of the lines of its family (or all), rounded half-even once; a fixed
    amount is at most that base. Discounts never exceed what credits left to pay: prepaid
    credits already settled the rest.
    """
    last_day = due.period_end - timedelta(days=1)
    left = unbilled_minor
    result: list[InvoiceLine] = []
    for coupon in customer.coupons:
        if not coupon.applies_to(due.period_start, last_day) or left <= 0:
            continue
        base = sum(
            line.net_minor
            for line, family in zip(lines, families, strict=True)
            if coupon.family is None or coupon.family == family
        )
        if coupon.percent is not None:
            wanted = int((Decimal(base) * coupon.percent / 100).to_integral_value(ROUND_HALF_EVEN))
            label = (
                f"Discount {coupon.id}: {plain(coupon.percent)} % of {coupon.family or 'all usage'}"
            )
        else:
            wanted = min(base, int((coupon.amount or Decimal(0)).scaleb(digits)))
            label = f"Discount {coupon.id} on {coupon.family or 'all usage'}"
        amount = min(wanted, left)
        if amount <= 0:
            continue
        left -= amount
        # BR-27: a net price is never negative; a discount line has quantity -1 instead.
        price = Decimal(amount).scaleb(-digits)
        result.append(
            InvoiceLine("0", label, Decimal(-1), "C62", price, Decimal(1), -amount, lines[0].vat)
        )
    return result


def issuance_entries(
    derived: Derived,
    accounts: dict[str, OrganizationAccounts],
    payer: str,
    key: str,
    files: dict[str, str],
) -> list[Entry]:
    document = derived.document
    currency = document.currency
    link = f"invoice-{document.number}"
    postings = [Posting(accounts[payer].receivable, document.due_minor, currency)]
    postings += [
        Posting(accounts[org].unbilled, -amount, currency)
        for org, amount in derived.unbilled_minor
        if amount
    ]
    postings += [
        Posting(accounts[org].credits, -amount, currency)
        for org, amount in derived.credits_minor
        if amount
    ]
    if derived.discount_minor:
        postings.append(Posting(DISCOUNT_ACCOUNT, derived.discount_minor, currency))
    if document.tax_minor:
        postings.append(Posting(VAT_ACCOUNT, -document.tax_minor, currency))
    transaction = Transaction(
        date=document.issue_date,
        txn_id=f"invoice:{document.number}",
        narration=f"Invoice {document.number} for {document.buyer.name}",
        postings=tuple(postings),
        links=(link,),
        meta=(
            ("invoice-key", key),
            ("invoice-number", document.number),
            ("org", document.buyer_reference or ""),
            ("net", Decimal(document.net_minor).scaleb(-minor_digits(currency))),
            ("due-date", document.due_date),
        ),
    )
    documents: list[Entry] = [
        Document(
            document.issue_date,
            accounts[payer].receivable,
            path,
            f"document:{document.number}:{kind}",
            (link,),
        )
        for kind, path in sorted(files.items())
    ]
    return [transaction, *documents]


def write_documents(workspace: Workspace, document: InvoiceDocument) -> dict[str, str]:
    """HTML, PDF/A-3 with Factur-X, CII and UBL XML under invoices/, named by number."""
    folder = workspace.invoices_dir
    legal = seller_legal_line(workspace)
    outputs = {
        "html": (f"{document.number}.html", invoice_html(document, legal).encode("utf-8")),
        "pdf": (f"{document.number}.pdf", invoice_pdf(document, legal)),
        "cii": (f"{document.number}.cii.xml", cii_xml(document)),
    }
    if document.type is DocumentType.INVOICE:
        outputs["ubl"] = (f"{document.number}.ubl.xml", ubl_xml(document))
    write_bytes_atomically(folder / f"{document.number}.json", document_json(document))
    paths = {}
    for kind, (name, data) in outputs.items():
        write_bytes_atomically(folder / name, data)
        paths[kind] = str((folder / name).relative_to(workspace.ledger_path.parent))
    return paths


def _relative_to(workspace: Workspace, ledger_file: str, paths: dict[str, str]) -> dict[str, str]:
    """Document paths as Beancount reads them: relative to the file that holds the entry."""
    folder = (workspace.ledger_path.parent / ledger_file).parent
    return {
        kind: os.path.relpath(workspace.ledger_path.parent / path, folder)
        for kind, path in paths.items()
    }


def series_name(template: str, issue_date: date) -> str:
    return template.replace("{year}", str(issue_date.year))


@dataclass(frozen=True)
class IssueSummary:
    issued: tuple[str, ...]
    files: tuple[Path, ...]


def issue(workspace: Workspace, up_to: Month, issue_date: date) -> IssueSummary:
    """Issue every invoice due by the end of ``up_to``; finish any interrupted one first."""
    currency = workspace.settings.billing.currency
    numbers = InvoiceNumbers(workspace.state_dir)
    issued: list[str] = []
    files: list[Path] = []
    with workspace.writing():
        writer = LedgerWriter(workspace.ledger_path)
        books = load_books(workspace.ledger_path, currency)
        accounts = organization_accounts(workspace.customers.customer)
        due = due_invoices(workspace, books, up_to)
        by_key = {item.key: item for item in due}
        pending = {assigned.document_key: assigned for assigned in numbers.pending()}
        in_ledger = issued_keys(books)
        for key, assigned in pending.items():
            if key in in_ledger:  # posted before the crash: only the bookkeeping is left
                numbers.mark_issued(assigned.number)
                issued.append(assigned.number)
            elif key not in by_key and not key.startswith("credit-note:"):
                raise InvoicingError(
                    f"number {assigned.number} was assigned to {key}, which is no longer due"
                )
        if len(due) > MAX_INVOICES_PER_RUN:
            raise InvoicingError(f"{len(due)} invoices due: at most {MAX_INVOICES_PER_RUN} per run")
        ordered = sorted(due, key=lambda item: (item.key not in pending, item.key))
        series = series_name(workspace.settings.invoicing.invoice_series, issue_date)
        # Derive everything before numbering anything: an invoice that cannot be derived
        # (its rated detail drifted, say) must not hold a number while it waits.
        drafts = {item.key: derive(workspace, item, "PENDING", issue_date) for item in ordered}
        numbered = [(item, numbers.assign(series, item.key, issue_date)) for item in ordered]
        crash_point("assign")
        derived_all = [
            _numbered(drafts[item.key], assigned)
            if assigned.issue_date == issue_date
            else derive(workspace, item, assigned.number, assigned.issue_date)
            for item, assigned in numbered
        ]
        rendered = _render_all(workspace, derived_all)
        crash_point("render")
        by_file: dict[str, list[Entry]] = defaultdict(list)
        for (item, assigned), (derived, paths) in zip(numbered, rendered, strict=True):
            target = f"books/{assigned.issue_date:%Y-%m}/invoices.beancount"
            relative = _relative_to(workspace, target, paths)
            by_file[target] += issuance_entries(
                derived, accounts, item.customer.id, item.key, relative
            )
        for target, entries in sorted(by_file.items()):
            writer.append(target, entries)
        crash_point("ledger")
        for _, assigned in numbered:
            numbers.mark_issued(assigned.number)
            issued.append(assigned.number)
            files.append(workspace.invoices_dir / f"{assigned.number}.pdf")
    return IssueSummary(tuple(issued), tuple(files))


def _numbered(draft: Derived, assigned: Assigned) -> Derived:
    document = replace(draft.document, number=assigned.number)
    return replace(draft, document=document)


def _render_one(workspace: Workspace, derived: Derived) -> tuple[Derived, dict[str, str]]:
    return derived, write_documents(workspace, derived.document)


def _render_all(
    workspace: Workspace, derived_all: list[Derived]
) -> list[tuple[Derived, dict[str, str]]]:
    """Render on every core: documents are independent once numbered."""
    workers = min(os.cpu_count() or 1, MAX_RENDER_WORKERS)
    if len(derived_all) < 2 or workers < 2:
        return [_render_one(workspace, derived) for derived in derived_all]
    # Not "fork": a child forked from a process that already used WeasyPrint (Pango,
    # HarfBuzz) can crash collecting the inherited objects. The fork server is a clean
    # process started once, with the rendering stack preloaded, that forks the workers.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["beanbill.ledger.invoicing"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_render_one, workspace, derived) for derived in derived_all]
        return [future.result() for future in futures]


def preview(workspace: Workspace, up_to: Month, issue_date: date) -> list[InvoiceDocument]:
    """Draft invoices without numbers: nothing is assigned, rendered or posted."""
    books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
    return [
        derive(workspace, item, f"DRAFT-{item.customer.id}-{item.period}", issue_date).document
        for item in due_invoices(workspace, books, up_to)
    ]


def credit_note(workspace: Workspace, number: str, issue_date: date) -> tuple[str, Path]:
    """Cancel an issued invoice with a credit note of its own series; the period is due again."""
    currency = workspace.settings.billing.currency
    numbers = InvoiceNumbers(workspace.state_dir)
    original = numbers.by_number(number)
    if original is None or not original.issued:
        raise InvoicingError(f"no issued invoice {number}")
    with workspace.writing():
        books = load_books(workspace.ledger_path, currency)
        issuance = books.transaction(f"invoice:{number}")
        meta = dict(issuance.meta)
        key = str(meta["invoice-key"])
        if key not in issued_keys(books):
            raise InvoicingError(f"invoice {number} is already cancelled")
        customer = workspace.customers.by_id()[str(meta["org"])]
        due = _due_for_issued(workspace, books, key, customer)
        derived = derive(workspace, due, number, original.issue_date)
        series = series_name(workspace.settings.invoicing.credit_note_series, issue_date)
        assigned: Assigned = numbers.assign(series, f"credit-note:{number}", issue_date)
        note = replace(
            derived.document,
            number=assigned.number,
            type=DocumentType.CREDIT_NOTE,
            issue_date=assigned.issue_date,
            preceding_number=number,
            preceding_issue_date=original.issue_date,
        )
        paths = write_documents(workspace, note)
        reversal = reversal_entry(issuance, assigned.issue_date)
        reversal = reversal._replace(
            txn_id=f"credit-note:{assigned.number}",
            narration=f"Credit note {assigned.number} cancelling invoice {number}",
            links=(*reversal.links, f"credit-note-{assigned.number}"),
        )
        accounts = organization_accounts([customer])[customer.id]
        target = f"books/{assigned.issue_date:%Y-%m}/invoices.beancount"
        paths = _relative_to(workspace, target, paths)
        documents: list[Entry] = [
            Document(
                assigned.issue_date,
                accounts.receivable,
                path,
                f"document:{assigned.number}:{kind}",
                (f"credit-note-{assigned.number}",),
            )
            for kind, path in sorted(paths.items())
        ]
        LedgerWriter(workspace.ledger_path).append(target, [reversal, *documents])
        numbers.mark_issued(assigned.number)
    return assigned.number, workspace.invoices_dir / f"{assigned.number}.pdf"


def _due_for_issued(workspace: Workspace, books: Books, key: str, customer: Customer) -> DueInvoice:
    parts = key.split(":")
    period = parts[2]
    items = [
        c
        for c in consumptions(books)
        if c.period == period
        and (workspace.customers.by_id()[c.org].parent or c.org) == customer.id
    ]
    if not items:
        raise InvoicingError(f"{key}: its consumption is no longer in the ledger")
    first = items[0]
    return DueInvoice(
        key,
        customer,
        period,
        first.period_start,
        first.period_end,
        tuple(sorted(items, key=lambda c: (c.org, c.day or date.min))),
    )
