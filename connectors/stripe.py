"""Stripe: issued invoices become finalized Stripe invoices; Stripe's money comes back as movements.

Written against Stripe's API version ``2026-10-28.endive`` (the one stripe-python 16 pins),
as Stripe documents it, not as a test peer happens to behave:

- An invoice is a one-off draft carrying **our number** (``number``; one invoice, one
  number in both systems), our lines as invoice lines with **VAT as tax**
  (``tax_amounts`` per line, allocated so that each rate's tax is ours to the cent), and
  prepaid credits as a negative untaxed line; then it is finalized. Stripe's total is
  checked against our amount due. ``days_until_due`` is sent only with
  ``collection_method = "send_invoice"``, the only method Stripe accepts it with.
- At finalization Stripe applies the customer's balance, and marks an amount due under
  the currency's minimum charge paid and carries it to the balance. Both change the
  customer balance, which the books mirror per organization in its unapplied account
  (``Liabilities:Unapplied:<Org>``): explicit entries, no invoice left open.
- Every mutation carries an idempotency key prefixed by the workspace id; before creating
  anything the connector looks for it (customers by metadata search, which Stripe makes
  eventually consistent, so an id it already knows is used first; invoices by listing the
  customer's, lines by listing the draft's).
- beanbill never voids an issued invoice (French law wants a credit note), so our credit
  notes become Stripe credit notes, split as Stripe splits them: the part up to the
  invoice's ``amount_remaining`` reduces what is still due, the rest is credited to the
  customer balance (``credit_amount``).
- Money comes back from ``invoice.*``, ``refund.*`` and ``charge.dispute.*`` events, and
  from listings when reconciling; both give each fact the same txn-id. Refunds come from
  refund objects (a charge does not include its refunds unless expanded, since API
  2022-11-15); a dispute has no customer (its charge does); inquiries (``warning_*``)
  move no money; the withdrawal, its fee and the reinstatement are the dispute's
  balance transactions. Every fee-bearing balance transaction is booked, Stripe's own
  billing fees (type ``stripe_fee``, ``fee = 0``, the amount in ``amount``) included.
- Events of another API version than the pinned one are refused with the fix (create the
  webhook endpoint with the pinned version), never read with the wrong shape.

Every field read from a Stripe object goes through ``Fields``, which refuses a field the
SDK's resource type for the pinned version does not declare: reading ``Dispute.customer``
is an error in the test suite, not a silent ``None`` in production.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

import stripe
from stripe.params import InvoicePaymentListParams

from beanbill.ledger.accounts import ProcessorAccounts
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument
from beanbill.ledger.invoicing.vat import VatCategory
from beanbill.rating.config import StripeSettings
from beanbill.rating.errors import BeanbillError
from beanbill.sync.interface import (
    Interpretation,
    Malformed,
    MalformedEvent,
    Movement,
    MovementKind,
    RemoteDocument,
    RemoteInvoice,
    StatusChange,
    WebhookEvent,
    WebhookRejected,
    idempotency_key,
)
from beanbill.sync.limits import RateLimiter
from beanbill.sync.retry import PermanentError, TransientError, classify

# Pinned: stripe-python 16 is generated for this version (a test checks they agree).
STRIPE_API_VERSION = "2026-10-28.endive"
TARGET = "stripe"
MAX_LINES_PER_INVOICE = 250  # Stripe's limit of line items on one invoice
LINES_PER_REQUEST = 50  # lines added per add_lines call
MAX_TAX_AMOUNTS_PER_LINE = 20  # Stripe: "a list of up to 20 tax amounts"
PAGE_SIZE = 100
MAX_LISTED = 10_000
MAX_WEBHOOK_BYTES = 512_000
MAX_TEXT_LENGTH = 255
CURRENCY_LENGTH = 3
NUMBER_KEY = "beanbill_number"
ORG_KEY = "beanbill_org"
WORKSPACE_KEY = "beanbill_workspace"
LINE_KEY = "beanbill_line"
CUSTOMER_OPERATION = "create-customer"
SEND_OPERATION = "send"
# Operations whose key survives a server error: a customer search that lags writes, and a
# send that nothing can look up first, must not be repeated under another key.
KEPT_KEYS = frozenset({CUSTOMER_OPERATION, SEND_OPERATION})
# Refund statuses in which the money has left (or is leaving) the Stripe balance; a
# refund that fails later comes back (Stripe books a ``refund_failure`` transaction).
REFUND_MOVED = frozenset({"pending", "requires_action", "succeeded"})
REFUND_UNDONE = frozenset({"failed", "canceled"})
# Dispute statuses of inquiries: "no funds are withdrawn" (Stripe, Disputes: inquiries).
INQUIRY_STATUSES = frozenset({"warning_needs_response", "warning_under_review", "warning_closed"})
# Balance transaction types that are Stripe's own charges to us, with ``fee = 0`` and the
# amount (negative) in ``amount``: Billing, Tax and other product fees.
STRIPE_FEE_TYPES = frozenset({"stripe_fee", "stripe_fx_fee", "tax_fee"})
# Balance transactions of a card payment: their source is the charge
# (https://docs.stripe.com/api/balance_transactions/object, ``type``).
PAYMENT_TRANSACTION_TYPES = frozenset({"charge", "payment"})
TAXABILITY = {  # why a line bears no VAT, in Stripe's taxability reasons
    VatCategory.REVERSE_CHARGE: "reverse_charge",
    VatCategory.OUTSIDE_SCOPE: "not_subject_to_tax",
    VatCategory.EXPORT: "not_subject_to_tax",
}

# The accounts this connector's movements post to; the ledger opens them on first use.
ACCOUNTS = ProcessorAccounts(
    clearing="Assets:Stripe:Balance",
    disputed="Assets:Stripe:Disputed",
    fees="Expenses:Fees:Stripe",
)

T = TypeVar("T")


class StripeMismatchError(PermanentError):
    """Stripe's total differs from ours: nothing is marked synced, a human must look."""


class UndeclaredStripeField(BeanbillError):
    """The connector read a field Stripe's pinned API does not have: a defect of beanbill,
    never taken for a malformed event (it stops the batch and fails the tests)."""


# --- reading Stripe objects strictly --------------------------------------------------------

# Strict readers: a field holds what Stripe's API reference says it holds (amounts and
# timestamps are integers), or the object is malformed.
MAX_AMOUNT_MINOR = 10**13  # 100 billion in a two-decimal currency: beyond any real charge
EARLIEST_TIMESTAMP = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())  # the books open
LATEST_TIMESTAMP = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())


@functools.cache
def declared_fields(resource: type) -> frozenset[str]:
    """The fields the stripe SDK's generated type for ``resource`` declares."""
    names: set[str] = set()
    for klass in resource.__mro__:
        names.update(getattr(klass, "__annotations__", {}))
    return frozenset(names)


def local_day(timestamp: int, timezone: str) -> date:
    return datetime.fromtimestamp(timestamp, UTC).astimezone(ZoneInfo(timezone)).date()


class Fields:
    """One Stripe object (a JSON dict) read field by field, typed by its SDK resource."""

    def __init__(self, resource: type, data: Any) -> None:
        if hasattr(data, "to_dict"):
            data = data.to_dict()
        if not isinstance(data, dict):
            raise MalformedEvent(f"a {resource.__name__} that is not an object: {data!r:.80}")
        self.resource = resource
        self.data: dict[str, Any] = data
        self.id = str(data.get("id", "?"))

    def get(self, field: str) -> Any:
        if field not in declared_fields(self.resource):
            raise UndeclaredStripeField(
                f"{self.resource.__name__}.{field} does not exist in Stripe API "
                f"{STRIPE_API_VERSION}"
            )
        return self.data.get(field)

    def integer(self, field: str, low: int, high: int) -> int:
        value = self.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise MalformedEvent(
                f"{self.id}: {field} is {value!r}, not an integer in [{low}, {high}]"
            )
        return value

    def amount(self, field: str) -> int:
        return self.integer(field, 0, MAX_AMOUNT_MINOR)

    def signed_amount(self, field: str) -> int:
        return self.integer(field, -MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR)

    def day(self, field: str, timezone: str) -> date:
        return local_day(self.integer(field, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP), timezone)

    def text(self, field: str) -> str:
        value = self.get(field)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT_LENGTH:
            raise MalformedEvent(f"{self.id}: {field} is {value!r}, not an id")
        return value

    def reference(self, field: str) -> str | None:
        """An id, or the id of an expanded object, or None."""
        value = self.get(field)
        if isinstance(value, dict):
            value = value.get("id")
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT_LENGTH:
            raise MalformedEvent(f"{self.id}: {field} is {value!r}, not an id")
        return value

    def currency(self) -> str:
        value = self.get("currency")
        if not isinstance(value, str) or len(value) != CURRENCY_LENGTH or not value.isalpha():
            raise MalformedEvent(f"{self.id}: currency is {value!r}")
        return value.upper()

    def metadata(self) -> dict[str, str]:
        value = self.get("metadata") or {}
        if not isinstance(value, dict):
            raise MalformedEvent(f"{self.id}: metadata is {value!r:.80}")
        return {str(k): str(v) for k, v in value.items()}

    def nested(self, field: str, resource: type) -> Fields:
        return Fields(resource, self.get(field) or {})

    def each(self, field: str, resource: type) -> list[Fields]:
        value = self.get(field) or []
        if isinstance(value, dict):  # a list object: {"object": "list", "data": [...]}
            value = value.get("data") or []
        if not isinstance(value, list):
            raise MalformedEvent(f"{self.id}: {field} is {value!r:.80}, not a list")
        return [Fields(resource, item) for item in value]


def _error(error: stripe.StripeError) -> TransientError | PermanentError:
    if isinstance(error, stripe.APIConnectionError):
        return TransientError(f"network: {error.user_message or error}")
    headers = {str(k): str(v) for k, v in dict(error.headers or {}).items()}
    status = error.http_status or 0
    if status >= 500:
        # Stripe saves a 5xx under its idempotency key and says "do not retry" (the same
        # key would replay it). The operation may or may not have happened: the next try
        # looks first, and asks again under a fresh key only where looking is reliable.
        return TransientError(f"HTTP {status}: {error.user_message or error}")
    classified = classify(status, headers, str(error.user_message or error))
    if isinstance(classified, TransientError | PermanentError):
        return classified
    return PermanentError(f"HTTP {status}: {error}")  # an error the SDK raised on a 2xx


def _no_constant(name: str) -> Any:
    """JSON's non-standard NaN and Infinity: no amount or date may be one."""
    raise ValueError(f"{name} is not a JSON number Stripe sends")


def _signed_at(signature: str) -> int:
    """The ``t=`` timestamp of a Stripe-Signature header (verified before this is asked)."""
    for part in signature.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0


def _each(
    items: list[Any], resource: type, read: Callable[[Fields], Sequence[T]]
) -> list[T | Malformed]:
    """Read each listed object; one that cannot be read is a Malformed in its place."""
    result: list[T | Malformed] = []
    for item in items:
        try:
            fields = Fields(resource, item)
            result.extend(read(fields))
        except MalformedEvent as error:
            data = item.to_dict() if hasattr(item, "to_dict") else item
            identifier = data.get("id", "?") if isinstance(data, dict) else "?"
            result.append(Malformed(str(identifier), str(error)))
    return result


# --- our invoice as Stripe lines ------------------------------------------------------------


class StripeLine(NamedTuple):
    key: str
    description: str
    amount_minor: int
    tax: tuple[dict[str, Any], ...] = ()  # Stripe ``tax_amounts`` of this line

    @property
    def tax_minor(self) -> int:
        return sum(int(entry["amount"]) for entry in self.tax)


def _allocate(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (all > 0), largest remainder first."""
    whole = sum(weights)
    shares = [total * weight // whole for weight in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for index in remainders[: total - sum(shares)]:
        shares[index] += 1
    return shares


def _tax_rate_data(category: VatCategory, rate_percent: Decimal, country: str) -> dict[str, Any]:
    # Stripe: percentage "accepts decimal values between 0 and 100 with at most 4 decimal
    # places"; sent as the decimal's exact text, never through a float.
    return {
        "display_name": "VAT",
        "inclusive": False,
        "percentage": format(rate_percent.normalize(), "f"),
        "country": country,
        "tax_type": "vat",
        "description": f"VAT category {category.value}",
    }


def stripe_lines(document: InvoiceDocument) -> list[StripeLine]:
    """Our lines with their VAT as Stripe tax amounts, and credits applied: they sum to
    the amount due exactly, and each rate's tax is the rate's tax on our invoice."""
    taxes: dict[int, list[dict[str, Any]]] = {index: [] for index in range(len(document.lines))}
    for entry in document.vat_breakdown():
        members = [
            index
            for index, line in enumerate(document.lines)
            if (line.vat.category, line.vat.rate_percent) == (entry.category, entry.rate_percent)
            and line.net_minor > 0
        ]
        if entry.tax_minor < 0 or (entry.tax_minor and not members):
            raise PermanentError(f"{document.number}: VAT {entry} cannot be carried to Stripe")
        if not members:
            continue
        shares = _allocate(entry.tax_minor, [document.lines[i].net_minor for i in members])
        # Whose VAT it is: the buyer's country when charged at its rate (OSS), else the
        # seller's (reverse charge and services outside the EU charge none).
        vat = document.lines[members[0]].vat
        charged = vat.category is VatCategory.STANDARD and vat.country
        country = vat.country if charged else document.seller.country
        rate = _tax_rate_data(entry.category, entry.rate_percent, country)
        for index, share in zip(members, shares, strict=True):
            tax: dict[str, Any] = {
                "amount": share,
                "taxable_amount": document.lines[index].net_minor,
                "tax_rate_data": rate,
            }
            if entry.category in TAXABILITY:
                tax["taxability_reason"] = TAXABILITY[entry.category]
            taxes[index].append(tax)
    lines = [
        StripeLine(f"line-{index}", line.description, line.net_minor, tuple(taxes[index - 1]))
        for index, line in enumerate(document.lines, start=1)
    ]
    if document.paid_minor:
        lines.append(StripeLine("prepaid", "Prepaid credits applied", -document.paid_minor))
    if sum(line.amount_minor + line.tax_minor for line in lines) != document.due_minor:
        raise PermanentError(f"{document.number}: Stripe lines do not sum to the amount due")
    return lines


def _line_params(line: StripeLine, number: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "amount": line.amount_minor,
        "description": line.description,
        "metadata": {LINE_KEY: line.key, NUMBER_KEY: number},
    }
    if line.tax:
        params["tax_amounts"] = list(line.tax)
    return params


def credit_note_split(amount_minor: int, invoice: Fields) -> tuple[int, int]:
    """(pre-payment, post-payment) parts of a credit note, as Stripe splits them: up to the
    invoice's ``amount_remaining`` it reduces what is still due; the rest was paid."""
    total = invoice.amount("total")
    credited = invoice.amount("pre_payment_credit_notes_amount") + invoice.amount(
        "post_payment_credit_notes_amount"
    )
    if amount_minor > total - credited:
        raise PermanentError(
            f"credit note of {amount_minor} on Stripe invoice {invoice.id}: only "
            f"{total - credited} is left to credit (minor units)"
        )
    remaining = invoice.amount("amount_remaining") if invoice.get("status") != "paid" else 0
    pre_payment = min(amount_minor, remaining)
    return pre_payment, amount_minor - pre_payment


class StripeConnector:
    name = TARGET
    accounts = ACCOUNTS

    def __init__(
        self,
        settings: StripeSettings,
        api_key: str,
        webhook_secret: str | None,
        payment_days: int,
        timezone: str,
        workspace_id: str,
    ) -> None:
        if not api_key:
            raise PermanentError(f"no Stripe key: set {settings.api_key_env}")
        self.settings = settings
        self.webhook_secret = webhook_secret
        self.payment_days = payment_days
        self.timezone = timezone
        self.workspace_id = workspace_id
        self.limiter = RateLimiter(settings.requests_per_second)
        self.calls = 0
        self._generations: dict[str, int] = {}  # key → keys spent by server errors
        # PaymentIntent → (our invoice number, organization): what a refund or a fee
        # paid back or cost belongs to; asked once per run.
        self._invoice_of_intent: dict[str, tuple[str | None, str | None]] = {}
        self.client = stripe.StripeClient(
            api_key,
            stripe_version=STRIPE_API_VERSION,
            base_addresses={"api": settings.api_base} if settings.api_base else None,
            max_network_retries=0,  # ours retry, after looking before creating again
            http_client=stripe.HTTPXClient(
                timeout=settings.timeout_seconds, allow_sync_methods=True
            ),
        )

    def _call(self, operation: Callable[[], T]) -> T:
        self.limiter.wait()
        self.calls += 1
        try:
            return operation()
        except stripe.StripeError as error:
            raise _error(error) from error

    def _key(self, number: str, operation: str) -> str:
        base = idempotency_key(self.workspace_id, TARGET, number, operation)
        generation = self._generations.get(base, 0)
        return base if generation == 0 else f"{base}:after-5xx-{generation}"

    def _mutate(self, number: str, operation: str, call: Callable[[str], T]) -> T:
        """One mutation under its idempotency key. After a server error the key is spent
        (Stripe replays the error for 24 h), so the next try, which has looked and not
        found the result, uses the next key. Customers are the exception: search lags
        writes, so not finding one proves nothing; their key is kept (a replayed error
        then waits until search sees the customer, never a second customer)."""
        key = self._key(number, operation)
        try:
            return self._call(lambda: call(key))
        except TransientError as error:
            cause = error.__cause__
            server_error = isinstance(cause, stripe.StripeError) and (cause.http_status or 0) >= 500
            if server_error and operation not in KEPT_KEYS:
                base = idempotency_key(self.workspace_id, TARGET, number, operation)
                self._generations[base] = self._generations.get(base, 0) + 1
            raise

    def _ours(self, metadata: Mapping[str, str]) -> bool:
        """Made by this workspace (objects made before workspace ids carry none)."""
        return metadata.get(WORKSPACE_KEY, self.workspace_id) == self.workspace_id

    # --- push -----------------------------------------------------------------------------

    def push(self, document: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        if document.type is DocumentType.CREDIT_NOTE:
            return self._push_credit_note(document, known)
        return self._push_invoice(document, known)

    def _push_invoice(self, document: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        lines = stripe_lines(document)
        if len(lines) > MAX_LINES_PER_INVOICE:
            raise PermanentError(
                f"{document.number}: {len(lines)} lines, Stripe takes {MAX_LINES_PER_INVOICE}"
            )
        customer = known.get("customer") or self._find_or_create_customer(document)
        invoice = self._find_invoice(customer, document.number) or self._create_invoice(
            document, customer
        )
        if invoice.status == "draft":
            self._add_missing_lines(document, str(invoice.id), lines)
            invoice = self._mutate(
                document.number,
                "finalize",
                lambda key: self.client.v1.invoices.finalize_invoice(
                    str(invoice.id),
                    # Stripe collects a charge_automatically invoice only if it advances.
                    params={"auto_advance": self.settings.collection_method != "send_invoice"},
                    options={"idempotency_key": key},
                ),
            )
        read = Fields(stripe.Invoice, invoice)
        if read.amount("total") != document.due_minor or read.get("number") != document.number:
            raise StripeMismatchError(
                f"{document.number}: Stripe invoice {invoice.id} is number "
                f"{read.get('number')} totalling {read.get('total')}, ours "
                f"{document.due_minor} (minor units)"
            )
        if self.settings.send_invoices and invoice.status == "open":
            self._mutate(
                document.number,
                SEND_OPERATION,
                lambda key: self.client.v1.invoices.send_invoice(
                    str(invoice.id), options={"idempotency_key": key}
                ),
            )
        ids = {"customer": customer, "invoice": str(invoice.id)}
        url = read.get("hosted_invoice_url")
        if isinstance(url, str) and url:
            ids["hosted_invoice_url"] = url  # the page the customer pays on (e-mails link it)
        return RemoteDocument(ids, str(invoice.status), read.amount("total"))

    def _find_customer(self, org: str) -> str | None:
        query = f"metadata['{ORG_KEY}']:'{org}'"
        found = self._call(
            lambda: self.client.v1.customers.search(params={"query": query, "limit": 10})
        )
        ids = sorted(
            str(customer.id)
            for customer in found.data
            if self._ours(Fields(stripe.Customer, customer).metadata())
        )
        if len(ids) > 1:
            raise PermanentError(f"organization {org} has {len(ids)} Stripe customers: {ids}")
        return ids[0] if ids else None

    def _find_or_create_customer(self, document: InvoiceDocument) -> str:
        org = document.buyer_reference or ""
        if not org:
            raise PermanentError(f"{document.number}: no buyer organization id")
        existing = self._find_customer(org)
        if existing is not None:
            return existing
        # Search lags writes (Stripe: "up to a minute"): a customer created by a push that
        # timed out may not be found yet. The create carries a key stable for the
        # organization, so within Stripe's key retention the same customer comes back.
        buyer = document.buyer
        created = self._mutate(
            org,
            CUSTOMER_OPERATION,
            lambda key: self.client.v1.customers.create(
                params={
                    "name": buyer.name,
                    "email": buyer.email or "",
                    "metadata": {ORG_KEY: org, WORKSPACE_KEY: self.workspace_id},
                },
                options={"idempotency_key": key},
            ),
        )
        return str(created.id)

    def _find_invoice(self, customer: str, number: str) -> stripe.Invoice | None:
        found = []
        for invoice in self._list(
            lambda: self.client.v1.invoices.list(params={"customer": customer, "limit": PAGE_SIZE})
        ):
            metadata = Fields(stripe.Invoice, invoice).metadata()
            if metadata.get(NUMBER_KEY) == number and self._ours(metadata):
                found.append(invoice)
        if len(found) > 1:
            raise PermanentError(f"{number} is {len(found)} Stripe invoices: look at {customer}")
        return found[0] if found else None

    def _list(self, first_page: Callable[[], Any]) -> list[Any]:
        """Every object of a listing, pages fetched by the SDK; bounded like everything."""
        page = self._call(first_page)
        items: list[Any] = []
        try:
            for item in page.auto_paging_iter():
                items.append(item)
                if len(items) > MAX_LISTED:
                    raise PermanentError(f"more than {MAX_LISTED} objects in one listing")
        except stripe.StripeError as error:
            raise _error(error) from error
        return items

    def _create_invoice(self, document: InvoiceDocument, customer: str) -> stripe.Invoice:
        params: dict[str, Any] = {
            "customer": customer,
            "number": document.number,
            "currency": document.currency.lower(),
            "collection_method": self.settings.collection_method,
            "auto_advance": False,
            # Our tax amounts, never Stripe Tax: Stripe refuses tax_amounts with it on.
            "automatic_tax": {"enabled": False},
            "pending_invoice_items_behavior": "exclude",
            "description": f"Invoice {document.number}",
            # Our issue date as Stripe's "Date of issue" (its local midnight), not the
            # moment the push finalized it: one invoice, one number, one date.
            "effective_at": int(
                datetime.combine(
                    document.issue_date, datetime.min.time(), ZoneInfo(self.timezone)
                ).timestamp()
            ),
            "metadata": {
                NUMBER_KEY: document.number,
                ORG_KEY: document.buyer_reference or "",
                WORKSPACE_KEY: self.workspace_id,
            },
        }
        if self.settings.collection_method == "send_invoice":
            # Stripe: "days_until_due ... only if collection_method is send_invoice".
            params["days_until_due"] = self.payment_days
        return self._mutate(
            document.number,
            "create-invoice",
            lambda key: self.client.v1.invoices.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            ),
        )

    def _add_missing_lines(
        self, document: InvoiceDocument, invoice: str, lines: list[StripeLine]
    ) -> None:
        present = {
            Fields(stripe.InvoiceLineItem, line).metadata().get(LINE_KEY)
            for line in self._list(
                lambda: self.client.v1.invoices.line_items.list(
                    invoice, params={"limit": PAGE_SIZE}
                )
            )
        }
        missing = [line for line in lines if line.key not in present]
        for start in range(0, len(missing), LINES_PER_REQUEST):
            batch = missing[start : start + LINES_PER_REQUEST]
            # The key names the lines it adds: a retry of the same batch replays, and a
            # batch recomputed after a partial success carries other lines, so another key.
            operation = f"add-lines:{batch[0].key}..{batch[-1].key}:{len(batch)}"
            params: Any = {"lines": [_line_params(line, document.number) for line in batch]}
            self._mutate(
                document.number,
                operation,
                lambda key, params=params: self.client.v1.invoices.add_lines(  # type: ignore[misc]
                    invoice, params=params, options={"idempotency_key": key}
                ),
            )

    def _push_credit_note(self, note: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        invoice_id = known.get("invoice")
        if not invoice_id:
            raise TransientError(f"{note.number}: invoice {note.preceding_number} not pushed yet")
        customer = known.get("customer", "")
        if note.due_minor == 0:  # nothing was due: there is nothing to credit remotely
            return RemoteDocument({"customer": customer, "invoice": invoice_id}, "nothing due", 0)
        existing = [
            credit
            for credit in self._list(
                lambda: self.client.v1.credit_notes.list(
                    params={"invoice": invoice_id, "limit": PAGE_SIZE}
                )
            )
            if Fields(stripe.CreditNote, credit).metadata().get(NUMBER_KEY) == note.number
        ]
        credit = existing[0] if existing else self._create_credit_note(note, invoice_id)
        total = Fields(stripe.CreditNote, credit).amount("total")
        if total != note.due_minor:
            raise StripeMismatchError(
                f"{note.number}: Stripe credit note {credit.id} totals {total}, "
                f"ours {note.due_minor} (minor units)"
            )
        ids = {"customer": customer, "invoice": invoice_id, "credit_note": str(credit.id)}
        return RemoteDocument(ids, str(credit.status), total)

    def _create_credit_note(self, note: InvoiceDocument, invoice_id: str) -> stripe.CreditNote:
        invoice = Fields(
            stripe.Invoice, self._call(lambda: self.client.v1.invoices.retrieve(invoice_id))
        )
        # Stripe: refund + credit + out-of-band amounts must equal the post-payment amount.
        # What was paid goes to the customer balance, which the next invoice consumes.
        _, post_payment = credit_note_split(note.due_minor, invoice)
        # The split is in the key: the invoice may be paid between two tries, and the same
        # key with other parameters is an idempotency error.
        return self._mutate(
            note.number,
            f"create-credit-note:{post_payment}",
            lambda key: self.client.v1.credit_notes.create(
                params={
                    "invoice": invoice_id,
                    "lines": [
                        {
                            "type": "custom_line_item",
                            "description": f"Credit note {note.number} cancelling "
                            f"{note.preceding_number}",
                            "quantity": 1,
                            "unit_amount": note.due_minor,
                        }
                    ],
                    "memo": f"Credit note {note.number}",
                    "metadata": {
                        NUMBER_KEY: note.number,
                        ORG_KEY: note.buyer_reference or "",
                        WORKSPACE_KEY: self.workspace_id,
                    },
                    "credit_amount": post_payment,
                },
                options={"idempotency_key": key},
            ),
        )

    # --- webhooks -------------------------------------------------------------------------

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        if not self.webhook_secret:
            raise WebhookRejected(f"no webhook secret: set {self.settings.webhook_secret_env}")
        if len(body) > MAX_WEBHOOK_BYTES:
            raise WebhookRejected(f"body over {MAX_WEBHOOK_BYTES} bytes")
        signature = {k.lower(): v for k, v in headers.items()}.get("stripe-signature")
        tolerance = self.settings.webhook_tolerance_seconds
        try:
            stripe.WebhookSignature.verify_header(body, signature, self.webhook_secret, tolerance)
            payload = json.loads(body, parse_constant=_no_constant)
        except (stripe.SignatureVerificationError, ValueError) as error:
            raise WebhookRejected(f"rejected: {error}") from error
        # The SDK refuses only timestamps older than the tolerance; one from the future is
        # as suspect (a replay prepared in advance), so the window is symmetric.
        if _signed_at(signature or "") > time.time() + tolerance:
            raise WebhookRejected("rejected: the signature's timestamp is in the future")
        if not isinstance(payload, dict):
            raise WebhookRejected("rejected: the body is not an event object")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise WebhookRejected("rejected: the event has no id or type")
        return WebhookEvent(event_id, event_type, payload)

    def interpret(self, event: WebhookEvent) -> Interpretation:
        handler = EVENT_HANDLERS.get(event.event_type)
        if handler is None:
            return Interpretation((), ())
        read = Fields(stripe.Event, event.payload)
        version = read.get("api_version")
        if version != STRIPE_API_VERSION:
            # Stripe shapes a webhook payload by the endpoint's API version: another
            # version's objects are not the ones this code reads. Kept, never posted.
            raise MalformedEvent(
                f"event {event.event_id} is API version {version!r}, beanbill reads "
                f"{STRIPE_API_VERSION}: create the webhook endpoint with "
                f"api_version={STRIPE_API_VERSION}; `beanbill sync reconcile` books what the "
                "event said"
            )
        data = read.nested("data", stripe.Event.Data)
        return handler(self, data.get("object"))

    def _invoice_event(self, invoice: Any) -> Interpretation:
        read = Fields(stripe.Invoice, invoice)
        if not self._ours(read.metadata()):
            return Interpretation((), ())  # another workspace's, on the same account
        movements = [m for m in (self.balance_of(read), self.payment_of(read)) if m]
        return Interpretation(tuple(movements), ())

    def _invoice_movement(
        self, invoice: Fields, txn: str, kind: MovementKind, day: date, amount: int, applied: int
    ) -> Movement:
        metadata = invoice.metadata()
        identifier = invoice.text("id")
        return Movement(
            f"{txn}:{identifier}",
            kind,
            day,
            amount,
            invoice.currency(),
            identifier,
            metadata.get(NUMBER_KEY),
            metadata.get(ORG_KEY),
            invoice.reference("customer"),
            applied,
        )

    def balance_applied(self, invoice: Fields) -> int:
        """How much of the invoice the customer balance settled (> 0) or added (< 0)."""
        if invoice.get("ending_balance") is None:  # not finalized yet
            return 0
        return invoice.signed_amount("ending_balance") - invoice.signed_amount("starting_balance")

    def balance_of(self, invoice: Fields) -> Movement | None:
        """The customer-balance change finalization made: a credit consumed or an amount
        under the minimum charge carried (> 0), or a carried amount added (< 0)."""
        applied = self.balance_applied(invoice)
        if not applied:
            return None
        transitions = invoice.nested("status_transitions", stripe.Invoice.StatusTransitions)
        finalized = transitions if transitions.get("finalized_at") is not None else invoice
        field = "finalized_at" if finalized is transitions else "created"
        kind = MovementKind.BALANCE_SETTLED if applied > 0 else MovementKind.BALANCE_CHARGED
        day = finalized.day(field, self.timezone)
        return self._invoice_movement(invoice, "stripe-balance", kind, day, abs(applied), 0)

    def payment_of(self, invoice: Fields) -> Movement | None:
        if invoice.get("status") != "paid":
            return None
        # Paid outside Stripe (marked paid by hand): not in the Stripe balance; the bank's
        # own import books it.
        off_stripe = (
            invoice.amount("amount_paid_off_stripe") if invoice.get("amount_paid_off_stripe") else 0
        )
        paid = invoice.amount("amount_paid") - off_stripe
        if paid <= 0:  # settled by the balance, a credit note or off Stripe
            return None
        transitions = invoice.nested("status_transitions", stripe.Invoice.StatusTransitions)
        at = transitions if transitions.get("paid_at") is not None else invoice
        day = at.day("paid_at" if at is transitions else "created", self.timezone)
        applied = self.balance_applied(invoice)
        return self._invoice_movement(
            invoice, "stripe-payment", MovementKind.PAYMENT, day, paid, applied
        )

    def _payment_failed(self, invoice: Any) -> Interpretation:
        read = Fields(stripe.Invoice, invoice)
        number = read.metadata().get(NUMBER_KEY)
        change = StatusChange(read.text("id"), "payment_failed", number, "payment failed")
        return Interpretation((), (change,))

    def _refund_event(self, refund: Any) -> Interpretation:
        read = Fields(stripe.Refund, refund)
        customer = None
        if read.get("customer") is None:  # a refund may name no customer: its charge does
            customer = self._customer_of_charge(read.reference("charge"))
        return Interpretation(tuple(self.refund_movements(read, customer)), ())

    def refund_movements(self, refund: Fields, customer: str | None = None) -> list[Movement]:
        """A refund moved money out unless it failed; one that failed after moving comes
        back. ``Refund.customer`` exists in the pinned version; ``customer`` is the
        charge's, for a refund that names none."""
        identifier = refund.text("id")
        status = refund.get("status")
        if status not in REFUND_MOVED | REFUND_UNDONE:
            raise MalformedEvent(f"{identifier}: refund status {status!r}")
        day = refund.day("created", self.timezone)

        number, org = self.invoice_of_payment(refund.reference("payment_intent"))

        def movement(kind: MovementKind, prefix: str) -> Movement:
            return Movement(
                f"{prefix}:{identifier}",
                kind,
                day,
                refund.amount("amount"),
                refund.currency(),
                identifier,
                number,
                org,
                remote_customer=refund.reference("customer") or customer,
            )

        result = [movement(MovementKind.REFUND, "stripe-refund")]
        if status in REFUND_UNDONE:
            if refund.get("failure_balance_transaction") is None:
                return []  # failed before any money moved
            result.append(movement(MovementKind.REFUND_FAILED, "stripe-refund-failed"))
        return result

    def _dispute_event(self, dispute: Any) -> Interpretation:
        read = Fields(stripe.Dispute, dispute)
        movements = self.dispute_movements(read)
        change = StatusChange(
            read.text("id"), f"dispute {read.get('status')}", None, str(read.get("reason"))
        )
        return Interpretation(tuple(movements), (change,))

    def dispute_movements(self, dispute: Fields) -> list[Movement]:
        """What a dispute moved, from its balance transactions: the withdrawal (held) and
        its fee, the reinstatement; a lost dispute makes the amount due again."""
        identifier = dispute.text("id")
        status = dispute.get("status")
        if status in INQUIRY_STATUSES:
            return []  # an inquiry moves no money
        # Ids by dispute (a dispute has at most one withdrawal and one reinstatement, and
        # the books of earlier versions name them so); fees by balance transaction, as
        # the listing of balance transactions names them.
        result: list[Movement] = []
        withdrawn = 0
        number, org = self.invoice_of_payment(dispute.reference("payment_intent"))
        for transaction in dispute.each("balance_transactions", stripe.BalanceTransaction):
            amount = transaction.signed_amount("amount")
            withdrawn += -amount if amount < 0 else 0
            kind = MovementKind.DISPUTE_HOLD if amount < 0 else MovementKind.DISPUTE_WON
            prefix = "stripe-dispute" if amount < 0 else "stripe-dispute-won"
            if amount:
                result.append(
                    Movement(
                        f"{prefix}:{identifier}",
                        kind,
                        transaction.day("created", self.timezone),
                        abs(amount),
                        transaction.currency(),
                        identifier,
                        number,
                        org,
                    )
                )
            result.extend(
                fee._replace(document=number, org=org) for fee in self.fee_of(transaction)
            )
        if status == "lost":
            result.append(  # what was withdrawn (in the balance's currency) is owed again
                Movement(
                    f"stripe-dispute-lost:{identifier}",
                    MovementKind.DISPUTE_LOST,
                    dispute.day("created", self.timezone),
                    withdrawn or dispute.amount("amount"),
                    dispute.currency(),
                    identifier,
                    number,
                    org,
                    remote_customer=self._customer_of_charge(dispute.reference("charge")),
                )
            )
        return result

    def invoice_of_payment(self, intent: str | None) -> tuple[str | None, str | None]:
        """(our invoice number, organization) a PaymentIntent paid, or (None, None).

        Since API 2025-03-31.basil neither Charge nor PaymentIntent names its invoice; the
        InvoicePayment does (https://docs.stripe.com/api/invoice-payment/list, filtered by
        ``payment[payment_intent]``, the invoice expanded): one call per payment, once.
        """
        if intent is None:
            return None, None
        if intent not in self._invoice_of_intent:
            params: InvoicePaymentListParams = {
                "payment": {"type": "payment_intent", "payment_intent": intent},
                "limit": 1,
                "expand": ["data.invoice"],
            }
            listing = self._call(
                functools.partial(self.client.v1.invoice_payments.list, params=params)
            )
            found: tuple[str | None, str | None] = (None, None)
            for item in listing.data:
                invoice = Fields(stripe.InvoicePayment, item).nested("invoice", stripe.Invoice)
                metadata = invoice.metadata()
                if self._ours(metadata) and metadata.get(NUMBER_KEY):
                    found = (metadata.get(NUMBER_KEY), metadata.get(ORG_KEY))
            self._invoice_of_intent[intent] = found
        return self._invoice_of_intent[intent]

    def _intent_of_charge(self, charge: str) -> str | None:
        found = self._call(functools.partial(self.client.v1.charges.retrieve, charge))
        return Fields(stripe.Charge, found).reference("payment_intent")

    def _customer_of_charge(self, charge: str | None) -> str | None:
        """A dispute names no customer: its charge does (one call, when money is owed)."""
        if charge is None:
            return None
        found = self._call(functools.partial(self.client.v1.charges.retrieve, charge))
        return Fields(stripe.Charge, found).reference("customer")

    def _credit_note_event(self, credit_note: Any) -> Interpretation:
        read = Fields(stripe.CreditNote, credit_note)
        movement = self.credit_balance_of(read) if self._ours(read.metadata()) else None
        return Interpretation((movement,) if movement else (), ())

    def credit_balance_of(self, credit_note: Fields) -> Movement | None:
        """The part of a credit note Stripe credited to the customer balance: the
        post-payment amount less what was refunded or settled out of band."""
        post_payment = credit_note.amount("post_payment_amount")
        refunded = sum(
            item.amount("amount_refunded")
            for item in credit_note.each("refunds", stripe.CreditNote.Refund)
        )
        out_of_band = (
            credit_note.amount("out_of_band_amount") if credit_note.get("out_of_band_amount") else 0
        )
        credited = post_payment - refunded - out_of_band
        if credited <= 0:
            return None
        metadata = credit_note.metadata()
        identifier = credit_note.text("id")
        return Movement(
            f"stripe-credit-balance:{identifier}",
            MovementKind.BALANCE_CHARGED,
            credit_note.day("created", self.timezone),
            credited,
            credit_note.currency(),
            identifier,
            metadata.get(NUMBER_KEY),
            metadata.get(ORG_KEY),
            credit_note.reference("customer"),
        )

    def _payout_paid(self, payout: Any) -> Interpretation:
        return Interpretation((self.payout_of(Fields(stripe.Payout, payout)),), ())

    def payout_of(self, payout: Fields) -> Movement:
        identifier = payout.text("id")
        when = "arrival_date" if payout.get("arrival_date") is not None else "created"
        return Movement(
            f"stripe-payout:{identifier}",
            MovementKind.PAYOUT,
            payout.day(when, self.timezone),
            payout.amount("amount"),
            payout.currency(),
            identifier,
        )

    # --- reconciliation -------------------------------------------------------------------

    def remote_invoices(self, since: date) -> list[RemoteInvoice | Malformed]:
        start = int(datetime.combine(since, datetime.min.time(), UTC).timestamp())
        invoices = self._list(
            lambda: self.client.v1.invoices.list(
                params={"created": {"gte": start}, "limit": PAGE_SIZE}
            )
        )
        result: list[RemoteInvoice | Malformed] = []
        result.extend(_each(invoices, stripe.Invoice, self._remote_invoice))
        return result

    def _remote_invoice(self, invoice: Fields) -> list[RemoteInvoice]:
        """The invoice as reconciliation compares it; none for another workspace's."""
        metadata = invoice.metadata()
        if not self._ours(metadata):
            return []
        remote = RemoteInvoice(
            invoice.text("id"),
            metadata.get(NUMBER_KEY),
            metadata.get(ORG_KEY),
            str(invoice.get("status")),
            invoice.amount("total"),
            invoice.amount("amount_paid"),
            self.payment_of(invoice),
            self.balance_applied(invoice),
        )
        return [remote]

    def movements_since(self, since: date) -> list[Movement | Malformed]:
        """Balance changes of invoices, refunds, payouts, disputes, credit notes and fees
        since ``since``, as the webhooks would say."""
        start = int(datetime.combine(since, datetime.min.time(), UTC).timestamp())
        v1 = self.client.v1
        created = {"created": {"gte": start}, "limit": PAGE_SIZE}

        def refund(item: Fields) -> list[Movement]:
            customer = None
            if item.get("customer") is None and item.reference("charge"):
                charge = self._call(functools.partial(v1.charges.retrieve, item.text("charge")))
                customer = Fields(stripe.Charge, charge).reference("customer")
            return self.refund_movements(item, customer)

        def payout(item: Fields) -> list[Movement]:
            return [self.payout_of(item)] if item.get("status") == "paid" else []

        def balance(item: Fields) -> list[Movement]:
            movement = self.balance_of(item) if self._ours(item.metadata()) else None
            return [movement] if movement else []

        def credit(item: Fields) -> list[Movement]:
            movement = self.credit_balance_of(item) if self._ours(item.metadata()) else None
            return [movement] if movement else []

        invoices = self._list(lambda: v1.invoices.list(params=created))  # type: ignore[arg-type]
        refunds = self._list(lambda: v1.refunds.list(params=created))  # type: ignore[arg-type]
        payouts = self._list(lambda: v1.payouts.list(params=created))  # type: ignore[arg-type]
        disputes = self._list(lambda: v1.disputes.list(params=created))  # type: ignore[arg-type]
        notes = self._list(lambda: v1.credit_notes.list(params={"limit": PAGE_SIZE}))
        # the charge inline: a fee names the invoice its payment paid, one call fewer
        with_source = {**created, "expand": ["data.source"]}
        transactions = self._list(
            lambda: v1.balance_transactions.list(params=with_source)  # type: ignore[arg-type]
        )
        movements: list[Movement | Malformed] = []
        movements.extend(_each(invoices, stripe.Invoice, balance))
        movements.extend(_each(refunds, stripe.Refund, refund))
        movements.extend(_each(payouts, stripe.Payout, payout))
        movements.extend(_each(disputes, stripe.Dispute, self.dispute_movements))
        movements.extend(_each(notes, stripe.CreditNote, credit))
        movements.extend(_each(transactions, stripe.BalanceTransaction, self.fee_of))
        return movements

    def fee_of(self, transaction: Fields) -> list[Movement]:
        """The fee a balance transaction bears: its ``fee``, or, for Stripe's own charges
        (``stripe_fee`` and the like, ``fee = 0``), its amount."""
        fee = transaction.signed_amount("fee")  # negative when returned (a dispute won)
        if transaction.get("type") in STRIPE_FEE_TYPES:
            fee += -transaction.signed_amount("amount")
        if fee == 0:
            return []
        identifier = transaction.text("id")
        number, org = self.invoice_of_payment(self._intent_of_source(transaction))
        return [
            Movement(
                f"stripe-fee:{identifier}",
                MovementKind.FEE if fee > 0 else MovementKind.FEE_RETURNED,
                transaction.day("created", self.timezone),
                abs(fee),
                transaction.currency(),
                identifier,
                number,
                org,
            )
        ]

    def _intent_of_source(self, transaction: Fields) -> str | None:
        """The PaymentIntent of a card payment's balance transaction (its ``source`` is
        the charge: expanded by the listing, else asked for); None for other sources."""
        if transaction.get("type") not in PAYMENT_TRANSACTION_TYPES:
            return None
        source = transaction.get("source")
        if isinstance(source, dict):
            return Fields(stripe.Charge, source).reference("payment_intent")
        charge = transaction.reference("source")
        return self._intent_of_charge(charge) if charge else None

    def customer_balances_minor(self, currency: str) -> dict[str, int]:
        """Stripe's customer balances (``Customer.balance``, the invoice credit balance) of
        this workspace's customers, by organization."""
        balances: dict[str, int] = {}
        for found in self._list(lambda: self.client.v1.customers.list(params={"limit": PAGE_SIZE})):
            customer = Fields(stripe.Customer, found)
            metadata = customer.metadata()
            org = metadata.get(ORG_KEY)
            if org and WORKSPACE_KEY in metadata and self._ours(metadata):
                balances[org] = customer.signed_amount("balance") if customer.get("balance") else 0
        return balances

    def clearing_balance_minor(self, currency: str) -> int:
        """What the clearing account should hold: Stripe's balance in ``currency``
        (available + pending) plus payouts on their way to the bank, which Stripe took
        from the balance at creation and the books move to the bank when paid."""
        in_transit = sum(
            Fields(stripe.Payout, payout).amount("amount")
            for payout in self._list(
                lambda: self.client.v1.payouts.list(params={"limit": PAGE_SIZE})
            )
            if payout.status in ("pending", "in_transit")
            and str(payout.currency).upper() == currency.upper()
        )
        found = self._call(lambda: self.client.v1.balance.retrieve())
        read = Fields(stripe.Balance, found)
        total = 0
        parts: tuple[tuple[str, type], ...] = (
            ("available", stripe.Balance.Available),
            ("pending", stripe.Balance.Pending),
        )
        for part, resource in parts:
            for funds in read.each(part, resource):
                if funds.currency() == currency.upper():
                    total += funds.signed_amount("amount")
        return total + in_transit


EVENT_HANDLERS: dict[str, Callable[[StripeConnector, Any], Interpretation]] = {
    "invoice.finalized": StripeConnector._invoice_event,
    "invoice.paid": StripeConnector._invoice_event,
    "invoice.payment_succeeded": StripeConnector._invoice_event,
    "invoice.payment_failed": StripeConnector._payment_failed,
    "refund.created": StripeConnector._refund_event,
    "refund.updated": StripeConnector._refund_event,
    "refund.failed": StripeConnector._refund_event,
    "charge.refund.updated": StripeConnector._refund_event,
    "charge.dispute.created": StripeConnector._dispute_event,
    "charge.dispute.updated": StripeConnector._dispute_event,
    "charge.dispute.funds_withdrawn": StripeConnector._dispute_event,
    "charge.dispute.funds_reinstated": StripeConnector._dispute_event,
    "charge.dispute.closed": StripeConnector._dispute_event,
    "credit_note.created": StripeConnector._credit_note_event,
    "payout.paid": StripeConnector._payout_paid,
}
