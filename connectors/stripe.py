"""Stripe: issued invoices become finalized Stripe invoices; Stripe's money comes back as movements.

An invoice is pushed as a draft Stripe invoice (our number and organization in its
metadata), one invoice item per line of ours (plus one per VAT rate and one for prepaid
credits applied, so that Stripe's total is our amount due to the cent whatever Stripe's
own tax rounding would be), then finalized. Every call carries an idempotency key; before
creating anything the connector looks for it first (customers by metadata search, invoices
by listing the customer's, lines by listing the draft's), so a create that timed out after
reaching Stripe is found instead of duplicated, even after the 24 h key retention.

beanbill never voids an issued invoice (French law wants a credit note), so our credit
notes become Stripe credit notes on the invoice they correct.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

import stripe

from beanbill.ledger.accounts import ProcessorAccounts
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument
from beanbill.rating.config import StripeSettings
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

# Pinned: the shapes below (no invoice.charge, payments listed apart) are this version's.
STRIPE_API_VERSION = "2026-10-28.endive"
TARGET = "stripe"
MAX_LINES_PER_INVOICE = 250  # Stripe's limit of line items on one invoice
PAGE_SIZE = 100
MAX_LISTED = 10_000
MAX_WEBHOOK_BYTES = 512_000
MAX_TEXT_LENGTH = 255
CURRENCY_LENGTH = 3
NUMBER_KEY = "beanbill_number"
ORG_KEY = "beanbill_org"
LINE_KEY = "beanbill_line"

# The accounts this connector's movements post to; the ledger opens them on first use.
ACCOUNTS = ProcessorAccounts(
    clearing="Assets:Stripe:Balance",
    disputed="Assets:Stripe:Disputed",
    fees="Expenses:Fees:Stripe",
)

T = TypeVar("T")


class StripeMismatchError(PermanentError):
    """Stripe's total differs from ours: nothing is marked synced, a human must look."""


class StripeLine(NamedTuple):
    key: str
    description: str
    amount_minor: int


def stripe_lines(document: InvoiceDocument) -> list[StripeLine]:
    """Our lines, VAT per rate and credits applied: they sum to the amount due exactly."""
    lines = [
        StripeLine(f"line-{index}", line.description, line.net_minor)
        for index, line in enumerate(document.lines, start=1)
    ]
    lines += [
        StripeLine(
            f"vat-{entry.category}-{entry.rate_percent}",
            f"VAT {entry.rate_percent}% ({entry.category})",
            entry.tax_minor,
        )
        for entry in document.vat_breakdown()
        if entry.tax_minor
    ]
    if document.paid_minor:
        lines.append(StripeLine("prepaid", "Prepaid credits applied", -document.paid_minor))
    if sum(line.amount_minor for line in lines) != document.due_minor:
        raise PermanentError(f"{document.number}: Stripe lines do not sum to the amount due")
    return lines


def _error(error: stripe.StripeError) -> TransientError | PermanentError:
    if isinstance(error, stripe.APIConnectionError):
        return TransientError(f"network: {error.user_message or error}")
    headers = {str(k): str(v) for k, v in dict(error.headers or {}).items()}
    status = error.http_status or 0
    classified = classify(status, headers, str(error.user_message or error))
    if isinstance(classified, TransientError | PermanentError):
        return classified
    return PermanentError(f"HTTP {status}: {error}")  # an error the SDK raised on a 2xx


def _metadata(obj: Any) -> dict[str, str]:
    """An object's metadata as a plain dict (the SDK's objects are not dicts)."""
    value = getattr(obj, "metadata", None)
    return {str(k): str(v) for k, v in value.to_dict().items()} if value is not None else {}


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


def local_day(timestamp: int, timezone: str) -> date:
    return datetime.fromtimestamp(timestamp, UTC).astimezone(ZoneInfo(timezone)).date()


# Strict readers of Stripe objects: a field holds what Stripe's API reference says it
# holds (amounts and timestamps are integers), or the object is malformed.
MAX_AMOUNT_MINOR = 10**13  # 100 billion in a two-decimal currency: beyond any real charge
EARLIEST_TIMESTAMP = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())  # the books open
LATEST_TIMESTAMP = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())


def _integer(item: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = item.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedEvent(
            f"{item.get('id', '?')}: {field} is {value!r}, not an integer in [{low}, {high}]"
        )
    return value


def _amount(item: Mapping[str, Any], field: str) -> int:
    return _integer(item, field, 0, MAX_AMOUNT_MINOR)


def _day(item: Mapping[str, Any], field: str, timezone: str) -> date:
    return local_day(_integer(item, field, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP), timezone)


def _text(item: Mapping[str, Any], field: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_LENGTH:
        raise MalformedEvent(f"{item.get('id', '?')}: {field} is {value!r}, not an id")
    return value


def _currency(item: Mapping[str, Any]) -> str:
    value = item.get("currency")
    if not isinstance(value, str) or len(value) != CURRENCY_LENGTH or not value.isalpha():
        raise MalformedEvent(f"{item.get('id', '?')}: currency is {value!r}")
    return value.upper()


def _each(items: list[Any], read: Callable[[dict[str, Any]], Sequence[T]]) -> list[T | Malformed]:
    """Read each listed object; one that cannot be read is a Malformed in its place."""
    result: list[T | Malformed] = []
    for item in items:
        data = item.to_dict() if hasattr(item, "to_dict") else item
        try:
            result.extend(read(data))
        except MalformedEvent as error:
            result.append(Malformed(str(data.get("id", "?")), str(error)))
    return result


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
    ) -> None:
        if not api_key:
            raise PermanentError(f"no Stripe key: set {settings.api_key_env}")
        self.settings = settings
        self.webhook_secret = webhook_secret
        self.payment_days = payment_days
        self.timezone = timezone
        self.limiter = RateLimiter(settings.requests_per_second)
        self.calls = 0
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

    # --- push -----------------------------------------------------------------------------

    def push(self, document: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        if document.type is DocumentType.CREDIT_NOTE:
            return self._push_credit_note(document, known)
        return self._push_invoice(document, known)

    def _remote(self, invoice: stripe.Invoice, customer: str) -> RemoteDocument:
        return RemoteDocument(
            {"customer": customer, "invoice": str(invoice.id)},
            str(invoice.status),
            int(invoice.total),
        )

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
            self._add_missing_lines(document, str(invoice.id), customer, lines)
            invoice = self._call(
                lambda: self.client.v1.invoices.finalize_invoice(
                    str(invoice.id),
                    params={"auto_advance": False},
                    options={"idempotency_key": self._key(document, "finalize")},
                )
            )
        if int(invoice.total) != document.due_minor:
            raise StripeMismatchError(
                f"{document.number}: Stripe invoice {invoice.id} totals {invoice.total}, "
                f"ours {document.due_minor} (minor units)"
            )
        if self.settings.send_invoices and invoice.status == "open":
            self._call(
                lambda: self.client.v1.invoices.send_invoice(
                    str(invoice.id), options={"idempotency_key": self._key(document, "send")}
                )
            )
        return self._remote(invoice, customer)

    def _key(self, document: InvoiceDocument, operation: str) -> str:
        return idempotency_key(TARGET, document.number, operation)

    def _find_customer(self, org: str) -> str | None:
        query = f"metadata['{ORG_KEY}']:'{org}'"
        found = self._call(
            lambda: self.client.v1.customers.search(params={"query": query, "limit": 2})
        )
        ids = sorted(str(customer.id) for customer in found.data)
        if len(ids) > 1:
            raise PermanentError(f"organization {org} has {len(ids)} Stripe customers: {ids}")
        return ids[0] if ids else None

    def _find_or_create_customer(self, document: InvoiceDocument) -> str:
        org = document.buyer_reference or ""
        if not org:
            raise PermanentError(f"{document.number}: no buyer organization id")
        existing = self._find_customer(org)
        buyer = document.buyer
        if existing is not None:
            return existing
        created = self._call(
            lambda: self.client.v1.customers.create(
                params={
                    "name": buyer.name,
                    "email": buyer.email or "",
                    "metadata": {ORG_KEY: org},
                },
                options={"idempotency_key": idempotency_key(TARGET, org, "create-customer")},
            )
        )
        return str(created.id)

    def _find_invoice(self, customer: str, number: str) -> stripe.Invoice | None:
        found = [
            invoice
            for invoice in self._list(
                lambda: self.client.v1.invoices.list(
                    params={"customer": customer, "limit": PAGE_SIZE}
                )
            )
            if _metadata(invoice).get(NUMBER_KEY) == number
        ]
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
        collection = self.settings.collection_method
        return self._call(
            lambda: self.client.v1.invoices.create(
                params={
                    "customer": customer,
                    "currency": document.currency.lower(),
                    "collection_method": collection,
                    "auto_advance": False,
                    "pending_invoice_items_behavior": "exclude",
                    "description": f"Invoice {document.number}",
                    "metadata": {
                        NUMBER_KEY: document.number,
                        ORG_KEY: document.buyer_reference or "",
                    },
                    "days_until_due": self.payment_days,
                },
                options={"idempotency_key": self._key(document, "create-invoice")},
            )
        )

    def _add_missing_lines(
        self, document: InvoiceDocument, invoice: str, customer: str, lines: list[StripeLine]
    ) -> None:
        present = {
            _metadata(line).get(LINE_KEY)
            for line in self._list(
                lambda: self.client.v1.invoices.line_items.list(
                    invoice, params={"limit": PAGE_SIZE}
                )
            )
        }
        for line in lines:
            if line.key in present:
                continue
            self._call(
                lambda line=line: self.client.v1.invoice_items.create(  # type: ignore[misc]
                    params={
                        "customer": customer,
                        "invoice": invoice,
                        "amount": line.amount_minor,
                        "currency": document.currency.lower(),
                        "description": line.description,
                        "metadata": {LINE_KEY: line.key, NUMBER_KEY: document.number},
                    },
                    options={"idempotency_key": self._key(document, f"line:{line.key}")},
                )
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
            if _metadata(credit).get(NUMBER_KEY) == note.number
        ]
        credit = existing[0] if existing else self._create_credit_note(note, invoice_id)
        if int(credit.total) != note.due_minor:
            raise StripeMismatchError(
                f"{note.number}: Stripe credit note {credit.id} totals {credit.total}, "
                f"ours {note.due_minor} (minor units)"
            )
        ids = {"customer": customer, "invoice": invoice_id, "credit_note": str(credit.id)}
        return RemoteDocument(ids, str(credit.status), int(credit.total))

    def _create_credit_note(self, note: InvoiceDocument, invoice_id: str) -> stripe.CreditNote:
        invoice = self._call(lambda: self.client.v1.invoices.retrieve(invoice_id))
        # Credit notes on a paid invoice must say where the money goes: the customer's balance.
        settled = note.due_minor if invoice.status == "paid" else 0
        return self._call(
            lambda: self.client.v1.credit_notes.create(
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
                    "metadata": {NUMBER_KEY: note.number, ORG_KEY: note.buyer_reference or ""},
                    "credit_amount": settled,
                },
                options={"idempotency_key": self._key(note, "create-credit-note")},
            )
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
        data = event.payload.get("data", {})
        item = data.get("object", {}) if isinstance(data, dict) else {}
        if not isinstance(item, dict):
            return Interpretation((), ())
        handler = EVENT_HANDLERS.get(event.event_type)
        return handler(self, item) if handler else Interpretation((), ())

    def _invoice_paid(self, invoice: dict[str, Any]) -> Interpretation:
        payment = self.payment_of(invoice)
        return Interpretation((payment,) if payment else (), ())

    def payment_of(self, invoice: dict[str, Any]) -> Movement | None:
        metadata = invoice.get("metadata") or {}
        if invoice.get("status") != "paid":
            return None
        paid = _amount(invoice, "amount_paid")
        if paid == 0:
            return None
        transitions = invoice.get("status_transitions") or {}
        paid_at = transitions if transitions.get("paid_at") is not None else invoice
        identifier = _text(invoice, "id")
        return Movement(
            f"stripe-payment:{identifier}",
            MovementKind.PAYMENT,
            _day(paid_at, "paid_at" if paid_at is transitions else "created", self.timezone),
            paid,
            _currency(invoice),
            identifier,
            metadata.get(NUMBER_KEY),
            metadata.get(ORG_KEY),
            invoice.get("customer"),
        )

    def _payment_failed(self, invoice: dict[str, Any]) -> Interpretation:
        number = (invoice.get("metadata") or {}).get(NUMBER_KEY)
        change = StatusChange(str(invoice["id"]), "payment_failed", number, "payment failed")
        return Interpretation((), (change,))

    def _charge_refunded(self, charge: dict[str, Any]) -> Interpretation:
        refunds = (charge.get("refunds") or {}).get("data") or []
        return Interpretation(tuple(self.refund_of(refund, charge) for refund in refunds), ())

    def refund_of(self, refund: dict[str, Any], charge: dict[str, Any]) -> Movement:
        identifier = _text(refund, "id")
        return Movement(
            f"stripe-refund:{identifier}",
            MovementKind.REFUND,
            _day(refund, "created", self.timezone),
            _amount(refund, "amount"),
            _currency(refund),
            identifier,
            remote_customer=charge.get("customer"),
        )

    def _dispute(self, dispute: dict[str, Any]) -> Interpretation:
        movements = self.dispute_movements(dispute)
        change = StatusChange(
            str(dispute["id"]), f"dispute {dispute.get('status')}", None, str(dispute.get("reason"))
        )
        return Interpretation(tuple(movements), (change,))

    def dispute_movements(self, dispute: dict[str, Any]) -> list[Movement]:
        identifier = _text(dispute, "id")
        day = _day(dispute, "created", self.timezone)
        amount = _amount(dispute, "amount")
        currency = _currency(dispute)

        def movement(kind: MovementKind, suffix: str) -> Movement:
            return Movement(
                f"stripe-{suffix}:{identifier}",
                kind,
                day,
                amount,
                currency,
                identifier,
                remote_customer=dispute.get("customer"),
            )

        result = [movement(MovementKind.DISPUTE_HOLD, "dispute")]
        if dispute.get("status") == "won":
            result.append(movement(MovementKind.DISPUTE_WON, "dispute-won"))
        elif dispute.get("status") == "lost":
            result.append(movement(MovementKind.DISPUTE_LOST, "dispute-lost"))
        return result

    def _payout_paid(self, payout: dict[str, Any]) -> Interpretation:
        return Interpretation((self.payout_of(payout),), ())

    def payout_of(self, payout: dict[str, Any]) -> Movement:
        identifier = _text(payout, "id")
        when = "arrival_date" if payout.get("arrival_date") is not None else "created"
        return Movement(
            f"stripe-payout:{identifier}",
            MovementKind.PAYOUT,
            _day(payout, when, self.timezone),
            _amount(payout, "amount"),
            _currency(payout),
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
        result.extend(_each(invoices, lambda invoice: [self._remote_invoice(invoice)]))
        return result

    def _remote_invoice(self, invoice: dict[str, Any]) -> RemoteInvoice:
        metadata = invoice.get("metadata") or {}
        return RemoteInvoice(
            _text(invoice, "id"),
            metadata.get(NUMBER_KEY),
            metadata.get(ORG_KEY),
            str(invoice.get("status")),
            _amount(invoice, "total"),
            _amount(invoice, "amount_paid"),
            self.payment_of(invoice),
        )

    def movements_since(self, since: date) -> list[Movement | Malformed]:
        """Refunds, payouts, disputes and fees since ``since``, as the webhooks would say."""
        start = int(datetime.combine(since, datetime.min.time(), UTC).timestamp())
        v1 = self.client.v1

        def refund(item: dict[str, Any]) -> list[Movement]:
            charge = self._call(functools.partial(v1.charges.retrieve, _text(item, "charge")))
            return [self.refund_of(item, charge.to_dict())]

        def payout(item: dict[str, Any]) -> list[Movement]:
            return [self.payout_of(item)] if item.get("status") == "paid" else []

        refunds = self._list(
            lambda: v1.refunds.list(params={"created": {"gte": start}, "limit": PAGE_SIZE})
        )
        payouts = self._list(
            lambda: v1.payouts.list(params={"created": {"gte": start}, "limit": PAGE_SIZE})
        )
        disputes = self._list(
            lambda: v1.disputes.list(params={"created": {"gte": start}, "limit": PAGE_SIZE})
        )
        transactions = self._list(
            lambda: v1.balance_transactions.list(
                params={"created": {"gte": start}, "limit": PAGE_SIZE}
            )
        )
        movements: list[Movement | Malformed] = []
        movements.extend(_each(refunds, refund))
        movements.extend(_each(payouts, payout))
        movements.extend(_each(disputes, self.dispute_movements))
        movements.extend(_each(transactions, self._fee_of))
        return movements

    def _fee_of(self, transaction: dict[str, Any]) -> list[Movement]:
        fee = _amount(transaction, "fee")
        if fee == 0:
            return []
        identifier = _text(transaction, "id")
        return [
            Movement(
                f"stripe-fee:{identifier}",
                MovementKind.FEE,
                _day(transaction, "created", self.timezone),
                fee,
                _currency(transaction),
                identifier,
            )
        ]


EVENT_HANDLERS: dict[str, Callable[[StripeConnector, dict[str, Any]], Interpretation]] = {
    "invoice.paid": StripeConnector._invoice_paid,
    "invoice.payment_succeeded": StripeConnector._invoice_paid,
    "invoice.payment_failed": StripeConnector._payment_failed,
    "charge.refunded": StripeConnector._charge_refunded,
    "charge.dispute.created": StripeConnector._dispute,
    "charge.dispute.closed": StripeConnector._dispute,
    "payout.paid": StripeConnector._payout_paid,
}
