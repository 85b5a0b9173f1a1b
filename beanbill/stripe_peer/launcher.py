"""Start localstripe (the real PyPI package) on 127.0.0.1 only, patched to behave like Stripe.

localstripe's own CLI binds every interface and saves its state to a fixed
/tmp/localstripe.pickle after each change; two test runs would share it. This launcher
serves the same aiohttp application on loopback and keeps the state in memory only.

localstripe is a stateful fake of Stripe's 2017-2020 API. This file moves it to what Stripe
documents for API 2026-10-28.endive (the version stripe-python 16.1 pins), with the smallest
patches that do so, never by mocking the stripe SDK. The rule: fail the way Stripe fails,
never accept what Stripe refuses. Each behaviour cites its Stripe source next to the code;
the SDK's generated resource annotations and ``stripe.params`` TypedDicts are the spec of
the objects' shapes.

- Shapes: objects carry only the fields the SDK declares for this API version (a Dispute
  has no ``customer``); a Charge has no ``refunds`` unless ``expand[]=refunds``; a
  PaymentIntent's ``latest_charge`` is an id unless expanded; events carry ``api_version``.
- Request log: with ``BEANBILL_STRIPE_PEER_REQUEST_LOG`` set, one JSON line per ``/v1/``
  request not made with the driver key: ``{"method", "path", "query", "body"}`` (raw query
  string and raw form body), flushed per line.
- Customers: ``balance`` (negative: credit), ``invoice_prefix``, ``GET /v1/customers/search``
  for ``metadata['key']:'value'`` queries, eventually consistent (``search_lag_seconds``).
- Invoices: one-off ``POST /v1/invoices`` (``number`` unique across the account;
  ``days_until_due``/``due_date`` only with ``send_invoice``, which needs one of them;
  unknown parameters refused); ``add_lines`` (amount, description, metadata, period,
  up to 20 exclusive ``tax_amounts`` each; drafts only); line items in the 2026 shape
  (``parent``, ``taxes``); totals (``subtotal``, ``total_taxes``, ``total``,
  ``total_excluding_tax``); ``finalize`` (number from the customer's sequence,
  ``hosted_invoice_url``, customer balance applied, the currency's minimum charge: below it
  the invoice is paid and the amount carried to the balance); ``pay`` (charges
  ``amount_remaining``; a declined card is a 402 ``card_error``); ``send`` (``send_invoice``
  only); ``void`` (open only); ``invoice.paid`` next to ``invoice.payment_succeeded``.
- Credit notes: Stripe's split (pre-payment up to ``amount_remaining``, the rest
  post-payment), refund + credit + out-of-band must equal the post-payment amount, never
  more than is still creditable, ``credit_amount`` credits the customer balance,
  ``refund_amount`` refunds the invoice's charge; ``credit_note.created``.
- Invoice payments: ``GET /v1/invoice_payments`` (by ``invoice`` or by
  ``payment[type]=payment_intent`` and ``payment[payment_intent]``, ``expand[]=data.invoice``):
  the mapping from a payment (what refunds and fees name) to the invoice it paid; since API
  2025-03-31.basil neither Charge nor PaymentIntent carries ``invoice``.
- Refunds: ``refund.created`` (the Refund, with ``customer``) and ``charge.refunded``;
  never more than the charge's unrefunded amount; ``GET /v1/refunds?charge=``.
- Disputes (test-only ``POST /_beanbill/disputes``, ``/_beanbill/disputes/{id}/close``, as
  test card 4000000000000259 would): withdrawal with Stripe's dispute fee, inquiries move no
  funds, a won dispute reinstates the amount; ``charge.dispute.*`` events.
- Balance: balance transactions for charges (card fee), refunds, disputes, payouts and
  Stripe's own billing fees (test-only ``POST /_beanbill/billing_fee``); ``GET /v1/balance``
  sums their ``net`` (everything counted as available).
- Idempotency like Stripe: same key on another endpoint or with other parameters is a 400
  ``idempotency_error``; a result is saved once the endpoint started executing (5xx too,
  replayed with ``Idempotent-Replayed: true``); validation failures (400) are not saved.
  Test-only ``POST /_beanbill/fail_next`` (form ``path``) makes the next POST to that path
  execute, then answer 500.
- ``created[gte]`` on listings; webhooks: the payload is taken when the event happens, signed
  at delivery time, retried on failure like Stripe does; ``POST /_beanbill/redeliver``
  sends every event again (Stripe's "resend").
- Runtime settings: ``POST /_beanbill/config`` (``search_lag_seconds``, ``api_version``);
  ``DELETE /_config/data`` wipes the account and restores the defaults.

    python -m beanbill.stripe_peer.launcher PORT

It runs only in its own process (started by ``beanbill.stripe_peer.running_localstripe``):
importing it patches localstripe's classes, which must never happen in beanbill's process.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import IO, Any, NamedTuple

import aiohttp
import stripe
from aiohttp import web
from localstripe import resources, server, webhooks
from localstripe.errors import UserError
from localstripe.resources import (
    BalanceTransaction,
    Charge,
    Customer,
    Event,
    Invoice,
    InvoiceItem,
    InvoiceLineItem,
    List,
    PaymentIntent,
    PaymentMethod,
    Payout,
    Refund,
    StripeObject,
    TaxRate,
    store,
)

from beanbill.stripe_peer import API_VERSION, DRIVER_KEY, REQUEST_LOG_ENV

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DELIVERY_ATTEMPTS = 5
DELIVERIES: set[asyncio.Future[None]] = set()  # kept referenced until done
SENT: dict[str, bytes] = {}  # event id → payload, as first sent
SEARCH = re.compile(r"^metadata\['([^']+)'\]:'([^']*)'$")
DAY = 86_400
DEFAULTS: dict[str, Any] = {"search_lag_seconds": 0.0, "api_version": API_VERSION}
CONFIG: dict[str, Any] = dict(DEFAULTS)
FAIL_NEXT: set[str] = set()  # paths (fnmatch patterns) whose next POST answers 500 after executing
TAX_RATES: dict[str, str] = {}  # tax_rate_data (canonical JSON) → the TaxRate it created
LOG: list[IO[str]] = []  # the request log, when asked for

# Stripe, "Supported currencies › Minimum and maximum charge amounts"
# (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts), minor units.
# Currencies not listed have no minimum here.
MINIMUM_CHARGE = {"eur": 50, "usd": 50, "gbp": 30, "chf": 50, "aud": 50, "cad": 50}
# Stripe's dispute fee: EEA accounts pay 20 EUR per dispute since 10 April 2023
# (https://support.stripe.com/questions/pricing-updates-for-businesses-based-in-the-european-economic-area-(eea)),
# 15 USD elsewhere (https://support.stripe.com/questions/dispute-fees-faq). Minor units.
DISPUTE_FEE = {"eur": 2000, "usd": 1500}
# The card fee kept from the previous peer: EU cards, 1.4 % + 0.25 EUR (same source as above).
CARD_FEE_PERMILLE, CARD_FEE_FIXED = 14, 25
MAX_TAX_AMOUNTS = 20  # InvoiceAddLinesParamsLine.tax_amounts: "A list of up to 20 tax amounts"
MAX_INVOICE_LINES = 250  # https://docs.stripe.com/invoicing/overview: up to 250 line items


# --- errors as Stripe words them ---------------------------------------------------------------


def refusal(
    message: str,
    param: str | None = None,
    status: int = 400,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> UserError:
    """A Stripe error body: ``{"error": {"type", "message", "param"?, "code"?}}``."""
    contents: dict[str, Any] = {}
    if param is not None:
        contents["param"] = param
    if code is not None:
        contents["code"] = code
    error = UserError(status, message, contents)
    error.body["error"]["type"] = kind
    return error


def names(text: str) -> set[str]:
    return set(text.split())


def only(data: dict[str, Any], allowed: set[str], supported: set[str] | None = None) -> None:
    """Stripe refuses parameters it does not know ("Received unknown parameter: x"); the
    peer also refuses, by name, Stripe parameters it does not model."""
    for key in data:
        if key not in allowed:
            raise refusal(f"Received unknown parameter: {key}", param=key)
        if supported is not None and key not in supported:
            raise refusal(f"beanbill's Stripe peer does not model the parameter {key}", key)


def integer(value: Any, param: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise refusal(f"Invalid integer: {value}", param=param)


def boolean(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise refusal(f"Invalid boolean: {value}", param=param)


def required(data: dict[str, Any], param: str) -> Any:
    if data.get(param) in (None, ""):
        raise refusal(f"Missing required param: {param}.", param=param)
    return data[param]


def metadata_of(value: Any, param: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise refusal(f"Invalid object: {param}", param=param)
    return {str(k): str(v) for k, v in value.items()}


# --- webhooks: payload now, signature at delivery, retries, redelivery ---------------------


async def _deliver(event_id: str, payload: bytes, delay_seconds: float) -> None:
    await asyncio.sleep(delay_seconds)
    for hook in list(webhooks._webhooks.values()):
        event_type = json.loads(payload)["type"]
        if hook.events is not None and event_type not in hook.events:
            continue
        for attempt in range(DELIVERY_ATTEMPTS):
            timestamp = int(time.time())
            signed = b"%d.%s" % (timestamp, payload)
            signature = hmac.new(hook.secret.encode(), signed, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": f"t={timestamp},v1={signature}",
            }
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(hook.url, data=payload, headers=headers) as answer,
                ):
                    if 200 <= answer.status < 300:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)


def _schedule(delivery: Coroutine[Any, Any, None]) -> None:
    future = asyncio.ensure_future(delivery)
    DELIVERIES.add(future)
    future.add_done_callback(DELIVERIES.discard)


def schedule_webhook(event: Event) -> None:
    payload = json.dumps(event._export(), sort_keys=True).encode()
    SENT[event.id] = payload
    _schedule(_deliver(event.id, payload, 0.05))


def emit(kind: str, obj: Any) -> None:
    schedule_webhook(Event(kind, obj))


async def redeliver(request: web.Request) -> web.Response:
    for event_id, payload in list(SENT.items()):
        _schedule(_deliver(event_id, payload, 0))
    return web.json_response({"redelivered": len(SENT)})


original_event_init = Event.__init__


def _event_init(self: Event, type: str, data: Any) -> None:  # localstripe's name
    original_event_init(self, type, data)
    # Stripe: "api_version: The Stripe API version used to render data" — the endpoint's
    # version (https://docs.stripe.com/api/events/object#event_object-api_version).
    self.api_version = CONFIG["api_version"]
    self.pending_webhooks = len(webhooks._webhooks)
    self.request = {"id": None, "idempotency_key": None}


# --- shapes: only the fields Stripe has ------------------------------------------------------


def declared(resource: type) -> frozenset[str]:
    """The fields the stripe SDK declares for a resource in its pinned API version."""
    return frozenset(name for name in resource.__annotations__ if not name.isupper())


def shape(cls: Any, resource: type, unless_expanded: tuple[str, ...] = ()) -> None:
    """Export ``cls`` objects with ``resource``'s declared fields only; ``unless_expanded``
    fields are dropped (if objects) or reduced to their id unless the request expands them."""
    original = cls._export
    fields = declared(resource)

    def export(self: Any, expand: list[str] | None = None) -> dict[str, Any]:
        obj = original(self, expand=expand)
        wanted = set(expand or [])
        kept = {key: value for key, value in obj.items() if key in fields}
        for key in unless_expanded:
            if key in wanted or key not in kept:
                continue
            if isinstance(kept[key], dict) and kept[key].get("object") != "list":
                kept[key] = kept[key].get("id")
            else:
                del kept[key]
        return dict(kept)

    cls._export = export


# --- customers ----------------------------------------------------------------------------


def _get_balance(customer: Customer) -> int:
    # localstripe keeps the legacy ``account_balance`` (its sign inverted); Stripe's field is
    # ``balance``: "a negative amount represents a credit that decreases the amount due on
    # an invoice; a positive amount increases the amount due"
    # (https://docs.stripe.com/api/customers/object#customer_object-balance).
    return -int(getattr(customer, "account_balance", 0) or 0)


def _set_balance(customer: Customer, value: Any) -> None:
    customer.account_balance = -integer(value, "balance")


def _invoice_prefix(customer: Customer) -> str:
    # Stripe: "The prefix for the customer used to generate unique invoice numbers"
    # (https://docs.stripe.com/api/customers/object#customer_object-invoice_prefix).
    return hashlib.sha256(str(customer.id).encode()).hexdigest()[:8].upper()


def search_customers(query: str, limit: Any = None) -> dict[str, Any]:
    match = SEARCH.match(query or "")
    if not match:
        raise refusal("beanbill's Stripe peer searches metadata['key']:'value' only", "query")
    key, value = match.groups()
    # Stripe: "Don't use search in read-after-write flows ... data is typically searchable
    # in less than a minute" (https://docs.stripe.com/search#data-freshness).
    visible_before = time.time() - float(CONFIG["search_lag_seconds"])
    found = [
        obj._export()
        for name, obj in store.items()
        if name.startswith("customer:")
        and (obj.metadata or {}).get(key) == value
        and (CONFIG["search_lag_seconds"] <= 0 or obj.created < visible_before)
    ]
    count = integer(limit, "limit") if limit is not None else 10
    return {
        "object": "search_result",
        "data": found[:count],
        "has_more": len(found) > count,
        "next_page": None,
        "url": "/v1/customers/search",
    }


# --- balance transactions ----------------------------------------------------------------------


def book(
    amount: int,
    currency: str,
    kind: str,
    category: str,
    source: str | None,
    description: str,
    fee: int = 0,
    fee_description: str | None = None,
) -> BalanceTransaction:
    """A balance transaction as Stripe books it: ``net = amount - fee``
    (https://docs.stripe.com/api/balance_transactions/object)."""
    txn = BalanceTransaction.__new__(BalanceTransaction)
    StripeObject.__init__(txn)
    txn.amount = amount
    txn.available_on = txn.created
    txn.currency = currency
    txn.description = description
    txn.exchange_rate = None
    txn.fee = fee
    txn.fee_details = (
        [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": fee_description,
                "type": "stripe_fee",
            }
        ]
        if fee
        else []
    )
    txn.reporting_category = category
    txn.source = source
    txn.status = "available"
    txn.type = kind
    return txn


original_balance_init = BalanceTransaction.__init__


def _balance_init(self: BalanceTransaction, **data: Any) -> None:
    original_balance_init(self, **data)
    if self.type == "charge" and self.amount > 0:
        self.fee = self.amount * CARD_FEE_PERMILLE // 1000 + CARD_FEE_FIXED
        self.fee_details = [
            {
                "amount": self.fee,
                "application": None,
                "currency": self.currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        ]


original_balance_list = BalanceTransaction._api_list_all


def _balance_list(
    url: str,
    type: str | None = None,  # Stripe's parameter name
    source: str | None = None,
    currency: str | None = None,
    **kwargs: Any,
) -> List:
    # Stripe filters balance transactions by type, source and currency
    # (https://docs.stripe.com/api/balance_transactions/list).
    listing = original_balance_list(url, **kwargs)
    listing._list = [
        txn
        for txn in listing._list
        if (type is None or txn.type == type)
        and (source is None or txn.source == source)
        and (currency is None or txn.currency == currency)
    ]
    return listing


def balance_object() -> dict[str, Any]:
    """Stripe's Balance (https://docs.stripe.com/api/balance/balance_object): funds per
    currency; the peer counts every balance transaction's ``net`` as available."""
    totals: dict[str, int] = {}
    for name, obj in store.items():
        if name.startswith("balance_transaction:"):
            totals[obj.currency] = totals.get(obj.currency, 0) + int(obj.net)
    totals = totals or {"eur": 0}
    return {
        "object": "balance",
        "available": [
            {"amount": amount, "currency": currency, "source_types": {"card": amount}}
            for currency, amount in sorted(totals.items())
        ],
        "pending": [
            {"amount": 0, "currency": currency, "source_types": {"card": 0}}
            for currency in sorted(totals)
        ],
        "livemode": False,
    }


def _available(currency: str) -> int:
    return sum(
        int(entry["amount"])
        for entry in balance_object()["available"]
        if entry["currency"] == currency
    )


async def billing_fee(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    amount = integer(required(data, "amount"), "amount")
    currency = str(data.get("currency", "eur"))
    # Stripe's own fees (Billing, Invoicing) are balance transactions of type ``stripe_fee``
    # with the charge in ``amount`` and ``fee = 0``
    # (https://docs.stripe.com/reports/balance-transaction-types: "stripe_fee").
    txn = book(-amount, currency, "stripe_fee", "fee", None, "Billing - Usage Fee")
    return web.json_response(txn._export())


async def payout_paid(request: web.Request) -> web.Response:
    """The bank confirmed a payout: status ``paid`` and ``payout.paid``, as Stripe does once
    the funds arrive (https://docs.stripe.com/api/events/types#event_types-payout.paid)."""
    payout = Payout._api_retrieve(request.match_info["id"])
    if payout.status != "pending":
        raise refusal(f"Payout {payout.id} is {payout.status}, not pending.")
    payout.status = "paid"
    emit("payout.paid", payout)
    return web.json_response(payout._export())


original_payout_init = Payout.__init__
PAYOUT_PARAMS = names(
    "amount currency description destination metadata method payout_method source_type "
    "statement_descriptor"
)


def _payout_init(self: Payout, **data: Any) -> None:
    # PayoutCreateParams has no ``status`` (localstripe's test switch): Stripe refuses it.
    only(data, PAYOUT_PARAMS)
    amount = integer(required(data, "amount"), "amount")
    currency = str(required(data, "currency"))
    if amount > _available(currency):
        # https://docs.stripe.com/error-codes#balance-insufficient
        raise refusal(
            "You have insufficient funds in your Stripe account for this transfer.",
            code="balance_insufficient",
        )
    original_payout_init(self, **data)
    # A payout is a balance transaction of type ``payout``
    # (https://docs.stripe.com/api/payouts/object#payout_object-balance_transaction).
    txn = book(-amount, currency, "payout", "payout", self.id, "STRIPE PAYOUT")
    self.balance_transaction = txn.id


# --- charges and refunds ------------------------------------------------------------------


def _disputed(charge: Charge) -> bool:
    return any(
        name.startswith("dispute:") and obj.charge == charge.id for name, obj in store.items()
    )


def _unrefunded(charge: Charge) -> int:
    return int(charge.amount) - int(charge.amount_refunded)


original_refund_init = Refund.__init__
REFUND_PARAMS = names(
    "amount charge currency customer instructions_email metadata origin payment_intent reason "
    "refund_application_fee reverse_transfer"
)


def _refund_init(self: Refund, **data: Any) -> None:
    only(data, REFUND_PARAMS, {"amount", "charge", "metadata", "payment_intent", "reason"})
    reason = data.pop("reason", None)
    charge_id = data.get("charge")
    if charge_id is None and data.get("payment_intent"):
        intent = PaymentIntent._api_retrieve(data["payment_intent"])
        charge_id = intent.latest_charge.id if intent.latest_charge else None
    if charge_id is not None and data.get("amount") is not None:
        charge = Charge._api_retrieve(charge_id)
        amount = integer(data["amount"], "amount")
        if amount > _unrefunded(charge):
            # Stripe refuses a refund over what is left to refund (error code
            # ``charge_already_refunded`` when nothing is: https://docs.stripe.com/error-codes).
            raise refusal(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({_unrefunded(charge)})",
                param="amount",
            )
    original_refund_init(self, **data)
    charge = Charge._api_retrieve(self.charge)
    # Refund.customer exists in this API version ("ID of the customer"), the charge's.
    self.customer = charge.customer
    self.payment_intent = self.payment_intent or charge.payment_intent
    self.reason = reason
    self.description = None
    # Stripe emits ``refund.created`` for every refund and ``charge.refunded`` for the
    # charge (https://docs.stripe.com/api/events/types#event_types-refund.created).
    emit("refund.created", self)
    emit("charge.refunded", charge)


# --- disputes (test-only creation: Stripe's test cards would open them) ----------------------


class Dispute(StripeObject):  # type: ignore[misc]  # localstripe is untyped
    """Stripe's Dispute (https://docs.stripe.com/api/disputes/object): no ``customer``."""

    object = "dispute"
    _id_prefix = "dp_"

    def __init__(self, charge: str | None = None, inquiry: Any = None) -> None:
        disputed = Charge._api_retrieve(required({"charge": charge}, "charge"))
        is_inquiry = boolean(inquiry, "inquiry") if inquiry is not None else False
        if disputed.status != "succeeded" or not disputed.captured:
            raise refusal(f"Charge {charge} was not captured: it cannot be disputed", "charge")
        if _disputed(disputed):
            raise refusal(f"Charge {charge} is already disputed", "charge")
        fee = DISPUTE_FEE.get(disputed.currency)
        if fee is None and not is_inquiry:
            raise refusal(f"No dispute fee known for {disputed.currency}", "charge")
        super().__init__()
        self.amount = disputed.amount
        self.balance_transactions: list[BalanceTransaction] = []
        self.charge = disputed.id
        self.currency = disputed.currency
        self.enhanced_eligibility_types: list[str] = []
        self.evidence: dict[str, Any] = {}
        self.evidence_details = {
            "due_by": self.created + 7 * DAY,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        }
        self.is_charge_refundable = False
        self.metadata: dict[str, str] = {}
        self.network_reason_code = None
        self.payment_intent = disputed.payment_intent
        self.payment_method_details = {
            "type": "card",
            "card": {
                "brand": "visa",
                "case_type": "inquiry" if is_inquiry else "chargeback",
                "network_reason_code": None,
            },
        }
        self.reason = "fraudulent"
        # Inquiries: "warning_needs_response ... no funds are withdrawn"
        # (https://docs.stripe.com/disputes/how-disputes-work#inquiries).
        self.status = "warning_needs_response" if is_inquiry else "needs_response"
        if not is_inquiry:
            # "Stripe debits your balance for the disputed amount plus the dispute fee ...
            # a single balance transaction" (https://support.stripe.com/questions/dispute-fees-faq)
            self.balance_transactions.append(
                book(
                    -int(self.amount),
                    self.currency,
                    "adjustment",
                    "dispute",
                    self.id,
                    f"Chargeback withdrawal for {self.charge}",
                    fee=int(fee or 0),
                    fee_description="Dispute fee",
                )
            )
        emit("charge.dispute.created", self)
        if not is_inquiry:
            emit("charge.dispute.funds_withdrawn", self)

    @classmethod
    def _api_list_all(
        cls,
        url: str,
        charge: str | None = None,
        payment_intent: str | None = None,
        **kwargs: Any,
    ) -> List:
        li = super()._api_list_all(url, **kwargs)
        li._list = [
            d
            for d in li._list
            if (charge is None or d.charge == charge)
            and (payment_intent is None or d.payment_intent == payment_intent)
        ]
        li._list.sort(key=lambda d: d.created, reverse=True)
        return li


async def create_dispute(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    only(data, {"charge", "inquiry"})
    return web.json_response(Dispute(**data)._export())


async def close_dispute(request: web.Request) -> web.Response:
    dispute = Dispute._api_retrieve(request.match_info["id"])
    data = await server.get_post_data(request) or {}
    only(data, {"status"})
    if dispute.status == "warning_needs_response":
        dispute.status = "warning_closed"  # an inquiry closes; no funds ever moved
    elif dispute.status == "needs_response":
        outcome = data.get("status")
        if outcome not in ("won", "lost"):
            raise refusal("status must be won or lost", "status")
        if outcome == "won":
            # "If the dispute is ruled in your favour, the card network returns the dispute
            # amount" (https://support.stripe.com/questions/dispute-fees-faq): a second
            # balance transaction (Dispute.balance_transactions: "zero, one, or two").
            # "If the dispute is found in your favor, the disputed amount and the dispute
            # countered fee is returned" (https://support.stripe.com/topics/disputes): the
            # fee comes back as a negative fee (BalanceTransaction.fee is "positive when
            # assessed").
            withdrawal = dispute.balance_transactions[0]
            dispute.balance_transactions.append(
                book(
                    int(dispute.amount),
                    dispute.currency,
                    "adjustment",
                    "dispute_reversal",
                    dispute.id,
                    f"Chargeback reversal for {dispute.charge}",
                    fee=-int(withdrawal.fee),
                    fee_description="Dispute fee returned",
                )
            )
            dispute.status = "won"
            emit("charge.dispute.funds_reinstated", dispute)
        else:
            dispute.status = "lost"
    else:
        raise refusal(f"Dispute {dispute.id} is already closed ({dispute.status})")
    emit("charge.dispute.closed", dispute)
    return web.json_response(dispute._export())


# --- invoices as Stripe has them today ------------------------------------------------------

INVOICE_PARAMS = names(
    "account_tax_ids application_fee_amount auto_advance automatic_tax automatically_finalizes_at "
    "collection_method currency custom_fields customer customer_account days_until_due "
    "default_payment_method default_source default_tax_rates description discounts due_date "
    "effective_at expand footer from_invoice issuer metadata number on_behalf_of payment_settings "
    "pending_invoice_items_behavior rendering shipping_cost shipping_details statement_descriptor "
    "subscription transfer_data"
)
INVOICE_MODELLED = names(
    "auto_advance automatic_tax collection_method currency customer days_until_due description "
    "due_date effective_at expand footer metadata number pending_invoice_items_behavior"
)


def _invoices() -> list[Any]:
    return [obj for name, obj in store.items() if name.startswith("invoice:")]


def _number_taken(number: str) -> bool:
    return any(getattr(invoice, "number", None) == number for invoice in _invoices())


def create_one_off(data: dict[str, Any]) -> Invoice:
    only(data, INVOICE_PARAMS, INVOICE_MODELLED)
    if str((data.get("automatic_tax") or {}).get("enabled", "false")).lower() != "false":
        raise refusal("beanbill's Stripe peer does not model Stripe Tax", "automatic_tax")
    customer = Customer._api_retrieve(required(data, "customer"))
    # Since API 2022-08-01 one-off invoices exclude pending items by default
    # (https://docs.stripe.com/changelog/2022-08-01).
    behavior = data.get("pending_invoice_items_behavior", "exclude")
    if behavior not in ("exclude", "include"):
        param = "pending_invoice_items_behavior"
        raise refusal(f"Invalid pending_invoice_items_behavior: {behavior}", param)
    if behavior == "include":
        raise refusal(
            "beanbill's Stripe peer does not include pending invoice items",
            "pending_invoice_items_behavior",
        )
    method = data.get("collection_method", "charge_automatically")
    if method not in ("charge_automatically", "send_invoice"):
        raise refusal(f"Invalid collection_method: {method}", "collection_method")
    # InvoiceCreateParams: days_until_due and due_date are "Valid only for invoices where
    # collection_method=send_invoice"; a send_invoice invoice needs one of them
    # (https://docs.stripe.com/api/invoices/create#create_invoice-days_until_due).
    for param in ("days_until_due", "due_date"):
        if param in data and method != "send_invoice":
            raise refusal(
                f"You can only set `{param}` when `collection_method` is `send_invoice`.",
                param=param,
            )
    now = int(time.time())
    due_date: int | None = None
    if method == "send_invoice":
        if "days_until_due" in data:
            days = integer(data["days_until_due"], "days_until_due")
            if days < 0:
                raise refusal("days_until_due must be positive", "days_until_due")
            due_date = now + days * DAY
        elif "due_date" in data:
            due_date = integer(data["due_date"], "due_date")
            if due_date < now:
                raise refusal("The due_date must be in the future.", "due_date")
        else:
            raise refusal(
                "Missing required param: due_date or days_until_due (collection_method is "
                "send_invoice).",
                param="days_until_due",
            )
    number = data.get("number")
    if number is not None:
        number = str(number)
        # InvoiceCreateParams.number: invoice numbers must be unique across the account
        # (https://docs.stripe.com/invoicing/customize#invoice-numbering-schemes).
        if not number:  # (no length limit is documented for it, so none is imposed)
            raise refusal("Invalid number: an empty string", "number")
        if _number_taken(number):
            raise refusal(
                f"Invoice number {number} is already in use: invoice numbers must be "
                "unique across the account.",
                param="number",
                code="invoice_number_already_exists",  # the peer's code, not Stripe's
            )
    auto_advance = (
        boolean(data["auto_advance"], "auto_advance") if "auto_advance" in data else False
    )
    invoice = Invoice.__new__(Invoice)
    StripeObject.__init__(invoice)
    invoice.customer = customer.id
    invoice.customer_email = customer.email
    invoice.customer_name = customer.name
    invoice.subscription = None
    invoice.tax_percent = None
    invoice.default_tax_rates = None
    invoice.date = invoice.created
    invoice.metadata = metadata_of(data.get("metadata"), "metadata")
    invoice.payment_intent = None
    invoice.attempt_count = 0
    invoice.attempted = False
    invoice.billing_reason = "manual"
    invoice.collection_method = method
    invoice.currency = str(data.get("currency", customer.currency or "eur")).lower()
    invoice.description = data.get("description")
    invoice.footer = data.get("footer")
    invoice.discounts = []
    invoice.receipt_number = None
    invoice.statement_descriptor = None
    invoice.webhooks_delivered_at = None
    invoice.status_transitions = {
        "finalized_at": None,
        "marked_uncollectible_at": None,
        "paid_at": None,
        "voided_at": None,
    }
    invoice.period_start = invoice.created
    invoice.period_end = invoice.created
    invoice.lines = List(f"/v1/invoices/{invoice.id}/lines")
    invoice._draft = True
    invoice._voided = False
    invoice.number = number
    invoice.due_date = due_date
    invoice.auto_advance = auto_advance
    invoice.starting_balance = 0
    invoice.ending_balance = None  # "null if the invoice has not been finalized yet"
    invoice.hosted_invoice_url = None
    invoice.invoice_pdf = None
    # Invoice.effective_at: "Same as finalized_at unless overwritten. When defined, this
    # value replaces the system-generated 'Date of issue' printed on the invoice PDF".
    effective = data.get("effective_at")
    invoice.effective_at = integer(effective, "effective_at") if effective is not None else None
    emit("invoice.created", invoice)
    return invoice


def _line_taxes(line: InvoiceLineItem) -> list[dict[str, Any]]:
    """InvoiceLineItem.taxes (2026 shape): the line's own tax amounts, or its tax rates'."""
    explicit = getattr(line, "_taxes", None)
    if explicit is not None:
        return [dict(tax) for tax in explicit]
    return [
        {
            "amount": tax["amount"],
            "tax_behavior": "inclusive" if tax["inclusive"] else "exclusive",
            "tax_rate_details": {"tax_rate": tax["tax_rate"]},
            "taxability_reason": "not_available",
            "taxable_amount": line.amount,
            "type": "tax_rate_details",
        }
        for tax in line.tax_amounts
    ]


def _subtotal(invoice: Invoice) -> int:
    return sum(int(line.amount) for line in invoice.lines._list)


def _exclusive_tax(invoice: Invoice) -> int:
    return sum(
        int(tax["amount"])
        for line in invoice.lines._list
        for tax in _line_taxes(line)
        if tax["tax_behavior"] == "exclusive"
    )


def _total(invoice: Invoice) -> int:
    # Invoice.total: "Total after discounts and taxes" (no discounts here).
    return _subtotal(invoice) + _exclusive_tax(invoice)


def _total_taxes(invoice: Invoice) -> list[dict[str, Any]]:
    """Invoice.total_taxes: the lines' taxes summed per tax rate and taxability reason."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in invoice.lines._list:
        for tax in _line_taxes(line):
            key = (
                str(tax["tax_rate_details"]["tax_rate"]),
                str(tax["taxability_reason"]),
                str(tax["tax_behavior"]),
            )
            if key in merged:
                merged[key]["amount"] += tax["amount"]
                merged[key]["taxable_amount"] += tax["taxable_amount"] or 0
            else:
                merged[key] = dict(tax)
    return list(merged.values())


def _credit_notes(invoice_id: str) -> list[Any]:
    return [
        obj
        for name, obj in store.items()
        if name.startswith("credit_note:") and obj.invoice == invoice_id
    ]


def _pre_credited(invoice: Invoice) -> int:
    return sum(int(note.pre_payment_amount) for note in _credit_notes(invoice.id))


def _post_credited(invoice: Invoice) -> int:
    return sum(int(note.post_payment_amount) for note in _credit_notes(invoice.id))


def _amount_due(invoice: Invoice) -> int:
    # Invoice.amount_due: "Final amount due at this time for this invoice. If the invoice's
    # total is smaller than the minimum charge amount, for example, or if there is account
    # credit that can be applied to the invoice, the amount_due may be 0"; credit notes
    # "first reduce the invoice's amount_remaining (and amount_due)"
    # (https://docs.stripe.com/api/invoices/object#invoice_object-amount_due).
    due = getattr(invoice, "_due", None)
    if due is None:
        due = max(0, _total(invoice))
    return max(0, int(due) - _pre_credited(invoice))


def _amount_paid(invoice: Invoice) -> int:
    if invoice.payment_intent:
        intent = PaymentIntent._api_retrieve(invoice.payment_intent)
        return int(intent.amount) if intent.status == "succeeded" else 0
    return 0


def _amount_remaining(invoice: Invoice) -> int:
    if _status(invoice) in ("paid", "void"):
        return 0
    return max(0, _amount_due(invoice) - _amount_paid(invoice))


def _status(invoice: Invoice) -> str:
    if invoice._draft:
        return "draft"
    if invoice._voided:
        return "void"
    if getattr(invoice, "_settled", False):
        return "paid"
    if invoice.payment_intent:
        intent = PaymentIntent._api_retrieve(invoice.payment_intent)
        if intent.status == "succeeded":
            return "paid"
    return "open"


original_success = Invoice._on_payment_success


def _on_payment_success(invoice: Invoice) -> None:
    original_success(invoice)
    # Stripe sends ``invoice.paid`` whenever an invoice becomes paid, with or without a
    # payment (https://docs.stripe.com/api/events/types#event_types-invoice.paid).
    emit("invoice.paid", invoice)


def _settle(invoice: Invoice) -> None:
    """Paid without a payment (nothing due, or a full credit note): paid_at, invoice.paid."""
    invoice._settled = True
    invoice.status_transitions["paid_at"] = int(time.time())
    emit("invoice.paid", invoice)


def _open_draft(invoice_id: str) -> Invoice:
    invoice = Invoice._api_retrieve(invoice_id)
    if _status(invoice) != "draft":
        raise refusal(f"Invoice {invoice_id} is not a draft: its lines cannot change.")
    return invoice


def _tax_rate(data: Any, param: str) -> str:
    """``tax_rate_data``: Stripe "automatically creates or reuses a TaxRate object for each
    tax amount ... immediately archived" (InvoiceAddLinesParamsLineTaxAmount)."""
    if not isinstance(data, dict):
        raise refusal(f"Missing required param: {param}.", param)
    only(
        data,
        names(
            "country description display_name inclusive jurisdiction jurisdiction_level "
            "percentage state tax_type"
        ),
    )
    name = str(required(data, "display_name"))
    inclusive = boolean(required(data, "inclusive"), f"{param}[inclusive]")
    if inclusive:
        raise refusal(
            "beanbill's Stripe peer supports exclusive tax amounts only", f"{param}[inclusive]"
        )
    try:
        percentage = Decimal(str(required(data, "percentage")))
    except InvalidOperation as error:
        raise refusal("Invalid decimal", f"{param}[percentage]") from error
    # "accepts decimal values between 0 and 100 inclusive with at most 4 decimal places"
    exponent = percentage.as_tuple().exponent
    if not 0 <= percentage <= 100 or (isinstance(exponent, int) and exponent < -4):
        raise refusal("percentage: 0 to 100, at most 4 decimal places", f"{param}[percentage]")
    canonical = json.dumps(data, sort_keys=True)
    if canonical in TAX_RATES:
        return TAX_RATES[canonical]
    rate = TaxRate(
        display_name=name,
        inclusive=False,
        percentage=float(percentage),
        active=False,
        description=data.get("description"),
        jurisdiction=data.get("jurisdiction"),
    )
    rate.country = data.get("country")
    rate.state = data.get("state")
    rate.tax_type = data.get("tax_type")
    rate.jurisdiction_level = data.get("jurisdiction_level")
    rate.effective_percentage = float(percentage)
    rate.flat_amount = None
    rate.rate_type = "percentage"
    TAX_RATES[canonical] = rate.id
    return str(rate.id)


LINE_PARAMS = names(
    "amount description discountable discounts invoice_item metadata period price_data pricing "
    "quantity quantity_decimal tax_amounts tax_rates"
)
LINE_MODELLED = {"amount", "description", "metadata", "period", "tax_amounts"}


def _parse_line(line: Any, at: str) -> dict[str, Any]:
    if not isinstance(line, dict):
        raise refusal(f"Invalid object: {at}", at)
    only(line, LINE_PARAMS, LINE_MODELLED)
    parsed: dict[str, Any] = {
        "amount": integer(required(line, "amount"), f"{at}[amount]"),
        "description": line.get("description"),
        "metadata": metadata_of(line.get("metadata"), f"{at}[metadata]"),
    }
    period = line.get("period")
    if period is not None:
        if not isinstance(period, dict):
            raise refusal(f"Invalid object: {at}[period]", f"{at}[period]")
        start = integer(required(period, "start"), f"{at}[period][start]")
        end = integer(required(period, "end"), f"{at}[period][end]")
        if end < start:
            raise refusal("The period end must be greater than or equal to the start.", at)
        parsed["period"] = (start, end)
    taxes = line.get("tax_amounts") or []
    if not isinstance(taxes, list):
        raise refusal(f"Invalid array: {at}[tax_amounts]", f"{at}[tax_amounts]")
    if len(taxes) > MAX_TAX_AMOUNTS:
        raise refusal(f"A line takes up to {MAX_TAX_AMOUNTS} tax amounts", f"{at}[tax_amounts]")
    parsed["taxes"] = []
    for index, tax in enumerate(taxes):
        where = f"{at}[tax_amounts][{index}]"
        if not isinstance(tax, dict):
            raise refusal(f"Invalid object: {where}", where)
        only(tax, {"amount", "tax_rate_data", "taxability_reason", "taxable_amount"})
        parsed["taxes"].append(
            {
                "amount": integer(required(tax, "amount"), f"{where}[amount]"),
                "taxable_amount": integer(
                    required(tax, "taxable_amount"), f"{where}[taxable_amount]"
                ),
                "rate_data": tax.get("tax_rate_data"),
                "taxability_reason": tax.get("taxability_reason") or "not_available",
                "where": where,
            }
        )
    return parsed


def add_lines(invoice_id: str, data: dict[str, Any]) -> Invoice:
    """``POST /v1/invoices/{id}/add_lines`` (https://docs.stripe.com/api/invoices/add_lines):
    draft invoices only; validated whole before any line is added."""
    only(data, {"expand", "invoice_metadata", "lines"})
    invoice = _open_draft(invoice_id)
    lines = required(data, "lines")
    if not isinstance(lines, list):
        raise refusal("Invalid array: lines", "lines")
    parsed = [_parse_line(line, f"lines[{index}]") for index, line in enumerate(lines)]
    if len(invoice.lines._list) + len(parsed) > MAX_INVOICE_LINES:
        raise refusal(f"An invoice takes up to {MAX_INVOICE_LINES} lines", "lines")
    for line in parsed:
        for tax in line["taxes"]:
            tax["rate"] = _tax_rate(tax.pop("rate_data"), f"{tax.pop('where')}[tax_rate_data]")
    for line in parsed:
        start, end = line.get("period") or (invoice.created, invoice.created)
        item = InvoiceItem(
            invoice=invoice.id,
            amount=line["amount"],
            currency=invoice.currency,
            customer=invoice.customer,
            period_start=start,
            period_end=end,
            description=line["description"],
            metadata=line["metadata"],
        )
        entry = InvoiceLineItem(item)
        entry._taxes = [
            {
                "amount": tax["amount"],
                "tax_behavior": "exclusive",
                "tax_rate_details": {"tax_rate": tax["rate"]},
                "taxability_reason": tax["taxability_reason"],
                "taxable_amount": tax["taxable_amount"],
                "type": "tax_rate_details",
            }
            for tax in line["taxes"]
        ]
        invoice.lines._list.append(entry)
    invoice.metadata.update(metadata_of(data.get("invoice_metadata"), "invoice_metadata"))
    return invoice


def _next_number(customer: Customer) -> str:
    # Stripe numbers invoices per customer by default: "{invoice_prefix}-{sequence}"
    # (https://docs.stripe.com/invoicing/customize#invoice-numbering-schemes).
    while True:
        sequence = int(getattr(customer, "_sequence", 1))
        customer._sequence = sequence + 1
        number = f"{_invoice_prefix(customer)}-{sequence:04d}"
        if not _number_taken(number):
            return number


def finalize(invoice_id: str, base_url: str, data: dict[str, Any]) -> Invoice:
    only(data, {"auto_advance", "expand"})
    invoice = Invoice._api_retrieve(invoice_id)
    if _status(invoice) != "draft":
        raise refusal(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice."
        )
    if "auto_advance" in data:
        invoice.auto_advance = boolean(data["auto_advance"], "auto_advance")
    customer = Customer._api_retrieve(invoice.customer)
    if not invoice.number:
        invoice.number = _next_number(customer)
    # At finalization Stripe applies the customer balance: a credit lowers the amount due
    # (down to 0, the rest stays on the balance), a debit raises it; ``starting_balance``
    # and ``ending_balance`` are the balance before and after
    # (https://docs.stripe.com/invoicing/customer/balance).
    total = _total(invoice)
    starting = _get_balance(customer)
    owed = total + starting
    due, ending = max(0, owed), min(0, owed)
    minimum = MINIMUM_CHARGE.get(invoice.currency, 0)
    if 0 < due < minimum:
        # "When the amount due on an invoice is less than the minimum chargeable amount the
        # invoice is marked as paid and the amount owed moved to the invoice balance as a
        # debit" (https://docs.stripe.com/billing/customer/balance).
        ending, due = ending + due, 0
    invoice.starting_balance = starting
    invoice.ending_balance = ending
    _set_balance(customer, ending)
    invoice._due = due
    invoice._finalize()
    if invoice.effective_at is None:
        invoice.effective_at = invoice.status_transitions["finalized_at"]
    invoice.hosted_invoice_url = f"{base_url}/invoice/{invoice.id}"
    emit("invoice.finalized", invoice)
    if due == 0:
        _settle(invoice)
    return invoice


def pay_invoice(invoice_id: str, base_url: str, data: dict[str, Any]) -> Invoice:
    only(
        data,
        names("expand forgive mandate off_session paid_out_of_band payment_method source"),
        {"expand", "off_session"},
    )
    invoice = Invoice._api_retrieve(invoice_id)
    status = _status(invoice)
    if status == "draft":
        invoice = finalize(invoice_id, base_url, {})  # paying a draft finalizes it
        status = _status(invoice)
    if status == "paid":
        raise refusal("Invoice is already paid", code="invoice_already_paid")
    if status != "open":
        raise refusal(f"You cannot pay an invoice with status {status}.")
    customer = Customer._api_retrieve(invoice.customer)
    method = customer._get_default_payment_method_or_source()
    if method is None:
        raise refusal(
            "The customer has no default payment method.", code="invoice_no_payment_method_types"
        )
    intent = PaymentIntent(
        amount=_amount_remaining(invoice),
        currency=invoice.currency,
        customer=invoice.customer,
        payment_method=method.id,
    )
    invoice.payment_intent = intent.id
    invoice.attempted = True
    invoice.attempt_count += 1
    intent.invoice = invoice.id
    intent._confirm(on_failure_now=lambda: None)
    if intent.status == "requires_payment_method":
        # A declined card: HTTP 402, a ``card_error`` (https://docs.stripe.com/api/errors).
        emit("invoice.payment_failed", invoice)
        invoice.payment_intent = None
        raise refusal(
            "Your card was declined.", status=402, kind="card_error", code="card_declined"
        )
    return invoice


def send_invoice(invoice_id: str, data: dict[str, Any]) -> Invoice:
    only(data, {"expand"})
    invoice = Invoice._api_retrieve(invoice_id)
    # Stripe sends only ``send_invoice`` invoices by hand
    # (https://docs.stripe.com/api/invoices/send).
    if invoice.collection_method != "send_invoice":
        raise refusal(
            "You can only manually send an invoice if its collection method is 'send_invoice'."
        )
    if _status(invoice) in ("draft", "void"):
        raise refusal(f"You cannot send an invoice with status {_status(invoice)}.")
    emit("invoice.sent", invoice)
    return invoice


def void_invoice(invoice_id: str, data: dict[str, Any]) -> Invoice:
    only(data, {"expand"})
    invoice = Invoice._api_retrieve(invoice_id)
    # "You can only void invoices that are open or uncollectible"; drafts are deleted
    # (https://docs.stripe.com/api/invoices/void).
    if _status(invoice) != "open":
        raise refusal(f"You can only void open invoices; this one is {_status(invoice)}.")
    invoice._voided = True
    invoice.status_transitions["voided_at"] = int(time.time())
    emit("invoice.voided", invoice)
    return invoice


def _line_export(self: InvoiceLineItem, expand: list[str] | None = None) -> dict[str, Any]:
    """InvoiceLineItem in the 2026 shape (``stripe.InvoiceLineItem.__annotations__``)."""
    if self.type == "invoiceitem":
        parent: dict[str, Any] = {
            "type": "invoice_item_details",
            "invoice_item_details": {
                "invoice_item": self.invoice_item,
                "proration": bool(self.proration),
                "proration_details": {"credited_items": None},
                "subscription": self.subscription,
            },
            "subscription_item_details": None,
        }
    else:
        parent = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": self.subscription,
                "subscription_item": self.subscription_item,
            },
        }
    return {
        "id": self.id,
        "object": "line_item",
        "amount": self.amount,
        "currency": self.currency,
        "description": self.description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": self.invoice,
        "livemode": False,
        "metadata": dict(self.metadata or {}),
        "parent": parent,
        "period": dict(self.period),
        "pretax_credit_amounts": [],
        "pricing": None,
        "quantity": self.quantity,
        "quantity_decimal": str(self.quantity),
        "subscription": self.subscription,
        "subtotal": self.amount,
        "taxes": _line_taxes(self),
    }


async def add_invoice_item(request: web.Request, data: dict[str, Any]) -> web.Response:
    invoice = _open_draft(str(data.pop("invoice")))
    data.pop("expand", None)
    item = InvoiceItem(**data)
    item.invoice = invoice.id
    invoice.lines._list.append(InvoiceLineItem(item))
    return _json(item)


# --- credit notes ------------------------------------------------------------------------------

CREDIT_NOTE_PARAMS = names(
    "amount credit_amount effective_at email_type expand invoice lines memo metadata "
    "out_of_band_amount reason refund_amount refunds shipping_cost"
)
CREDIT_NOTE_MODELLED = CREDIT_NOTE_PARAMS - {"refunds", "shipping_cost"}
CREDIT_NOTE_REASONS = {"duplicate", "fraudulent", "order_change", "product_unsatisfactory"}


def _credit_lines(lines: Any) -> list[dict[str, Any]]:
    if not isinstance(lines, list):
        raise refusal("Invalid array: lines", "lines")
    parsed = []
    for index, line in enumerate(lines):
        at = f"lines[{index}]"
        if not isinstance(line, dict):
            raise refusal(f"Invalid object: {at}", at)
        only(
            line,
            names(
                "amount description invoice_line_item metadata quantity tax_amounts tax_rates "
                "type unit_amount unit_amount_decimal"
            ),
            {"description", "metadata", "quantity", "type", "unit_amount"},
        )
        if required(line, "type") != "custom_line_item":
            raise refusal("beanbill's Stripe peer models custom_line_item lines only", at)
        quantity = integer(line.get("quantity", 1), f"{at}[quantity]")
        unit = integer(required(line, "unit_amount"), f"{at}[unit_amount]")
        if quantity < 0 or unit < 0:
            raise refusal("quantity and unit_amount cannot be negative", at)
        parsed.append(
            {
                "id": "cnli_" + resources.random_id(14),
                "object": "credit_note_line_item",
                "amount": quantity * unit,
                "description": line.get("description"),
                "discount_amount": 0,
                "discount_amounts": [],
                "invoice_line_item": None,
                "livemode": False,
                "metadata": metadata_of(line.get("metadata"), f"{at}[metadata]"),
                "pretax_credit_amounts": [],
                "quantity": quantity,
                "tax_rates": [],
                "taxes": [],
                "type": "custom_line_item",
                "unit_amount": unit,
                "unit_amount_decimal": str(unit),
            }
        )
    return parsed


class CreditNote(StripeObject):  # type: ignore[misc]  # localstripe is untyped
    """Stripe's credit note (https://docs.stripe.com/api/credit_notes/create): "A credit note
    will first reduce the invoice's amount_remaining (and amount_due), but not below zero.
    This amount is indicated by the credit note's pre_payment_amount. The excess amount is
    indicated by post_payment_amount ... The sum of refunds, customer balance credits, and
    outside of Stripe credits must equal the post_payment_amount."""

    object = "credit_note"
    _id_prefix = "cn_"

    def __init__(self, **data: Any) -> None:
        only(data, CREDIT_NOTE_PARAMS, CREDIT_NOTE_MODELLED)
        parent = Invoice._api_retrieve(required(data, "invoice"))
        status = _status(parent)
        if status not in ("open", "paid"):
            # Credit notes adjust finalized (open, paid or uncollectible) invoices
            # (https://docs.stripe.com/invoicing/integration/programmatic-credit-notes).
            raise refusal(
                f"You can only create credit notes for open or paid invoices; {parent.id} "
                f"is {status}.",
                param="invoice",
            )
        lines = _credit_lines(data["lines"]) if "lines" in data else []
        amount = sum(int(line["amount"]) for line in lines)
        if "amount" in data:
            given = integer(data["amount"], "amount")
            if lines and given != amount:
                raise refusal(f"amount ({given}) must equal the lines' sum ({amount})", "amount")
            amount = given
        if not lines and "amount" not in data:
            raise refusal("One of amount, lines, or shipping_cost must be provided.", "amount")
        if amount <= 0:
            raise refusal("The credit note amount must be positive.", "amount")
        creditable = _total(parent) - _pre_credited(parent) - _post_credited(parent)
        if amount > creditable:
            raise refusal(
                f"The credit note amount ({amount}) is greater than the amount that can still "
                f"be credited on invoice {parent.id} ({max(0, creditable)}).",
                param="amount",
            )
        pre = min(amount, _amount_remaining(parent)) if status == "open" else 0
        post = amount - pre
        refund, credit, out_of_band = (
            integer(data.get(name, 0), name)
            for name in ("refund_amount", "credit_amount", "out_of_band_amount")
        )
        if min(refund, credit, out_of_band) < 0:
            raise refusal("Credit note amounts cannot be negative.")
        if refund + credit + out_of_band != post:
            raise refusal(
                f"The sum of refund_amount, credit_amount and out_of_band_amount "
                f"({refund + credit + out_of_band}) must equal the credit note's "
                f"post_payment_amount ({post}).",
            )
        charge = None
        if refund:
            intent = (
                PaymentIntent._api_retrieve(parent.payment_intent)
                if parent.payment_intent
                else None
            )
            charge = intent.latest_charge if intent is not None else None
            if charge is None or refund > _unrefunded(charge):
                raise refusal(
                    f"refund_amount ({refund}) is more than invoice {parent.id}'s charge "
                    "has left to refund.",
                    param="refund_amount",
                )
        reason = data.get("reason")
        if reason is not None and reason not in CREDIT_NOTE_REASONS:
            raise refusal(f"Invalid reason: {reason}", "reason")
        customer = Customer._api_retrieve(parent.customer)
        sequence = len(_credit_notes(parent.id)) + 1
        super().__init__()
        self.invoice = parent.id
        self.customer = parent.customer
        self.currency = parent.currency
        self.amount = amount
        self.amount_shipping = 0
        self.customer_balance_transaction = None
        self.discount_amount = 0
        self.discount_amounts: list[Any] = []
        self.effective_at = self.created
        self.lines = {
            "object": "list",
            "data": lines,
            "has_more": False,
            "url": f"/v1/credit_notes/{self.id}/lines",
        }
        self.memo = data.get("memo")
        self.metadata = metadata_of(data.get("metadata"), "metadata")
        self.number = f"{parent.number}-CN-{sequence:02d}"
        self.out_of_band_amount = out_of_band or None
        self.pdf = None
        self.pre_payment_amount = pre
        self.post_payment_amount = post
        self.pretax_credit_amounts: list[Any] = []
        self.reason = reason
        self.refunds: list[dict[str, Any]] = []
        self.shipping_cost = None
        self.status = "issued"
        self.subtotal = amount
        self.subtotal_excluding_tax = amount
        self.total = amount
        self.total_excluding_tax = amount
        self.total_taxes: list[Any] = []
        self.type = "mixed" if pre and post else "pre_payment" if pre else "post_payment"
        self.voided_at = None
        if credit:
            # credit_amount: "the amount to credit the customer's balance, which will be
            # automatically applied to their next invoice when it's finalized"
            _set_balance(customer, _get_balance(customer) - credit)
        if refund and charge is not None:
            created = Refund(charge=charge.id, amount=refund)
            self.refunds.append(
                {
                    "amount_refunded": refund,
                    "payment_record_refund": None,
                    "refund": created.id,
                    "type": "refund",
                }
            )
        emit("credit_note.created", self)
        if status == "open" and _amount_remaining(parent) == 0:
            _settle(parent)  # credited down to nothing due: the invoice is paid

    @classmethod
    def _api_list_all(
        cls,
        url: str,
        invoice: str | None = None,
        customer: str | None = None,
        **kwargs: Any,
    ) -> List:
        li = super()._api_list_all(url, **kwargs)
        li._list = [
            note
            for note in li._list
            if (invoice is None or note.invoice == invoice)
            and (customer is None or note.customer == customer)
        ]
        li._list.sort(key=lambda note: note.created, reverse=True)
        return li


# --- the middlewares -------------------------------------------------------------------------


class Saved(NamedTuple):
    endpoint: str
    digest: str
    status: int | None  # None while the first request still executes
    body: bytes


IDEMPOTENCY: dict[str, Saved] = {}
# Stripe: "Results are only saved if an API endpoint started executing. If incoming
# parameters failed validation, or the request conflicted with another that was executing
# concurrently, no idempotent result is saved" (https://docs.stripe.com/api/idempotent_requests).
NOT_SAVED = {400, 401, 409, 429}


def _error_response(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    if LOG and request.path.startswith("/v1/"):
        try:
            key = server.get_api_key(request)
        except Exception:  # a malformed Authorization header: not the driver
            key = None
        if key != DRIVER_KEY:
            body = (await request.read()).decode("utf-8", "replace")
            line = {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "body": body,
            }
            LOG[0].write(json.dumps(line) + "\n")
            LOG[0].flush()
    return await handler(request)


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    # "Sending idempotency keys in GET and DELETE requests has no effect"
    # (https://docs.stripe.com/api/idempotent_requests).
    if request.method != "POST" or not key or not request.path.startswith("/v1/"):
        return await handler(request)
    endpoint = f"{request.method} {request.path}"
    digest = hashlib.sha256(await request.read()).hexdigest()
    seen = IDEMPOTENCY.get(key)
    if seen is not None:
        if seen.endpoint != endpoint:
            return _error_response(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used for the same endpoint they "
                f"were first used for ('{seen.endpoint}' vs '{endpoint}'). Try using a key "
                f"other than '{key}' if you meant to execute a different request.",
            )
        if seen.digest != digest:
            return _error_response(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}' if you "
                "meant to execute a different request.",
            )
        if seen.status is None:
            return _error_response(
                409,
                "idempotency_error",
                f"There is currently another in-progress request using this Idempotent Key "
                f"('{key}'). Please try again later.",
            )
        replay = web.Response(status=seen.status, body=seen.body, content_type="application/json")
        replay.headers["Idempotency-Key"] = key
        replay.headers["Idempotent-Replayed"] = "true"
        if seen.status >= 500:
            replay.headers["Stripe-Should-Retry"] = "false"
        return replay
    IDEMPOTENCY[key] = Saved(endpoint, digest, None, b"")
    try:
        response = await handler(request)
    except UserError as error:
        response = error.to_response()
    except Exception as error:  # Stripe answers 500 api_error, and saves it
        response = _error_response(500, "api_error", f"An unknown error occurred: {error!r}")
    if response.status in NOT_SAVED or not isinstance(response, web.Response):
        del IDEMPOTENCY[key]
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    IDEMPOTENCY[key] = Saved(endpoint, digest, response.status, body)
    response.headers["Idempotency-Key"] = key
    if response.status >= 500:
        # The SDK honours ``Stripe-Should-Retry``: "we expect the stripe-should-retry header
        # to be false in most cases when a 500 is returned, since our idempotency framework
        # would typically replay it anyway" (stripe/_http_client.py, _should_retry).
        response.headers["Stripe-Should-Retry"] = "false"
    return response


@web.middleware
async def fail_next(request: web.Request, handler: Handler) -> web.StreamResponse:
    armed = [pattern for pattern in FAIL_NEXT if fnmatch.fnmatchcase(request.path, pattern)]
    if request.method != "POST" or not armed:
        return await handler(request)
    await handler(request)  # it executes: the 500 comes after the work is done
    FAIL_NEXT.discard(armed[0])
    return _error_response(500, "api_error", "beanbill's Stripe peer: failure on request")


INVOICE_PAYMENT_PARAMS = names(
    "created ending_before expand invoice limit payment starting_after status"
)
INVOICE_PAYMENT_PAYMENT_PARAMS = {"payment_intent", "payment_record", "type"}


def _invoice_payment(invoice: Invoice, expand: list[str]) -> dict[str, Any]:
    """An InvoicePayment as Stripe shows it
    (https://docs.stripe.com/api/invoice-payment/object): the invoice's payment by its
    PaymentIntent, ``paid`` once the invoice is."""
    paid = _status(invoice) == "paid"
    return {
        "id": "inpay_" + hashlib.sha256(invoice.id.encode()).hexdigest()[:24],
        "object": "invoice_payment",
        "amount_paid": _amount_paid(invoice) if paid else None,
        "amount_requested": _amount_paid(invoice) if paid else _amount_remaining(invoice),
        "created": invoice.created,
        "currency": invoice.currency,
        "invoice": invoice._export() if "data.invoice" in expand else invoice.id,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": invoice.payment_intent},
        "status": "paid" if paid else "open",
        "status_transitions": {
            "canceled_at": None,
            "paid_at": invoice.status_transitions.get("paid_at") if paid else None,
        },
    }


async def list_invoice_payments(request: web.Request) -> web.Response:
    """``GET /v1/invoice_payments`` (https://docs.stripe.com/api/invoice-payment/list):
    filtered by ``invoice`` or ``payment`` (``type`` is required in it: ``payment_intent``
    or ``payment_record``; payment records are not modelled here, so none match)."""
    data = server.unflatten_data(request.query) or {}
    only(data, INVOICE_PAYMENT_PARAMS, {"expand", "invoice", "limit", "payment", "status"})
    payment = data.get("payment")
    if payment is not None:
        if not isinstance(payment, dict):
            raise refusal("Invalid object", "payment")
        only(payment, INVOICE_PAYMENT_PAYMENT_PARAMS)
        if payment.get("type") not in ("payment_intent", "payment_record"):
            raise refusal(
                "Invalid payment[type]: must be one of payment_intent, payment_record",
                "payment[type]",
            )
    limit = integer(data.get("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise refusal("Invalid limit: must be between 1 and 100", "limit")
    expand = data.get("expand") or []
    found = [
        _invoice_payment(invoice, expand)
        for invoice in _invoices()
        if getattr(invoice, "payment_intent", None) is not None
        and (data.get("invoice") is None or invoice.id == data["invoice"])
        and (
            payment is None
            or (
                payment["type"] == "payment_intent"
                and payment.get("payment_intent") in (None, invoice.payment_intent)
            )
        )
    ]
    found = [item for item in found if data.get("status") in (None, item["status"])]
    return web.json_response(
        {
            "object": "list",
            "url": "/v1/invoice_payments",
            "has_more": len(found) > limit,
            "data": found[:limit],
        }
    )


def _json(obj: Any, expand: Any = None) -> web.Response:
    if isinstance(obj, StripeObject):
        return web.json_response(obj._export(expand=expand))
    return web.json_response(obj)


def _reset() -> None:
    IDEMPOTENCY.clear()  # a wiped account forgets its keys too
    SENT.clear()
    FAIL_NEXT.clear()
    TAX_RATES.clear()
    CONFIG.clear()
    CONFIG.update(DEFAULTS)


async def configure(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    only(data, {"api_version", "search_lag_seconds"})
    if "search_lag_seconds" in data:
        try:
            lag = float(data["search_lag_seconds"])
        except ValueError as error:
            raise refusal("search_lag_seconds: a number", "search_lag_seconds") from error
        CONFIG["search_lag_seconds"] = max(0.0, lag)
    if "api_version" in data:
        CONFIG["api_version"] = str(data["api_version"])
    return web.json_response(CONFIG)


async def arm_failure(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    only(data, {"path"})
    FAIL_NEXT.add(str(required(data, "path")))
    return web.json_response({"armed": sorted(FAIL_NEXT)})


INVOICE_ACTION = re.compile(r"/v1/invoices/(in_\w+)/(finalize|send|pay|void|add_lines)")


@web.middleware
async def extensions(request: web.Request, handler: Handler) -> web.StreamResponse:
    path, method = request.path, request.method
    base = f"{request.scheme}://{request.host}"
    if method == "DELETE" and path == "/_config/data":
        _reset()
    if method == "GET" and path == "/v1/customers/search":
        return _json(search_customers(request.query.get("query", ""), request.query.get("limit")))
    if method == "GET" and path == "/v1/balance":
        return _json(balance_object())
    if method == "POST" and path == "/v1/invoices":
        data = await server.get_post_data(request) or {}
        if "subscription" not in data:
            return _json(create_one_off(data), data.get("expand"))
    action = INVOICE_ACTION.fullmatch(path)
    if method == "POST" and action:
        invoice_id, verb = action.groups()
        data = await server.get_post_data(request) or {}
        expand = data.get("expand")
        if verb == "finalize":
            return _json(finalize(invoice_id, base, data), expand)
        if verb == "pay":
            return _json(pay_invoice(invoice_id, base, data), expand)
        if verb == "send":
            return _json(send_invoice(invoice_id, data), expand)
        if verb == "void":
            return _json(void_invoice(invoice_id, data), expand)
        return _json(add_lines(invoice_id, data), expand)
    if method == "POST" and path == "/v1/invoiceitems":
        data = await server.get_post_data(request) or {}
        if data.get("invoice"):
            return await add_invoice_item(request, data)
    since = request.query.get("created[gte]")
    if method == "GET" and since is not None:
        query = {k: v for k, v in request.query.items() if not k.startswith("created")}
        response = await handler(request.clone(rel_url=request.rel_url.with_query(query)))
        listing = json.loads(bytes(response.body))  # type: ignore[attr-defined]
        if response.status == 200 and "data" in listing:
            listing["data"] = [obj for obj in listing["data"] if obj["created"] >= int(since)]
        return web.json_response(listing, status=response.status)
    return await handler(request)


def install() -> None:
    """Patch localstripe (module docstring) in this process, before it serves a request."""
    resources.store.dump_to_disk = lambda: None
    resources.schedule_webhook = schedule_webhook
    Event.__init__ = _event_init
    Customer.balance = property(_get_balance, _set_balance)
    Customer.invoice_prefix = property(_invoice_prefix)
    Customer.next_invoice_sequence = property(lambda c: int(getattr(c, "_sequence", 1)))
    Invoice.subtotal = property(_subtotal)
    Invoice.subtotal_excluding_tax = property(_subtotal)
    Invoice.total = property(_total)
    Invoice.total_excluding_tax = property(_subtotal)
    Invoice.total_taxes = property(_total_taxes)
    Invoice.amount_due = property(_amount_due)
    Invoice.amount_paid = property(_amount_paid)
    Invoice.amount_remaining = property(_amount_remaining)
    Invoice.amount_overpaid = 0
    Invoice.amount_paid_off_stripe = 0
    Invoice.pre_payment_credit_notes_amount = property(_pre_credited)
    Invoice.post_payment_credit_notes_amount = property(_post_credited)
    Invoice.status = property(_status)
    Invoice._on_payment_success = _on_payment_success
    InvoiceLineItem._export = _line_export
    BalanceTransaction.__init__ = _balance_init
    BalanceTransaction.balance_type = "payments"
    BalanceTransaction._api_list_all = staticmethod(_balance_list)
    Charge.disputed = property(_disputed)
    Refund.__init__ = _refund_init
    Payout.__init__ = _payout_init
    for cls, resource, unless_expanded in (
        (Invoice, stripe.Invoice, ()),
        (Charge, stripe.Charge, ("refunds",)),  # since API 2022-11-15: only when expanded
        (PaymentIntent, stripe.PaymentIntent, ("latest_charge",)),
        (Refund, stripe.Refund, ()),
        (Dispute, stripe.Dispute, ()),
        (CreditNote, stripe.CreditNote, ()),
        (BalanceTransaction, stripe.BalanceTransaction, ()),
        (Customer, stripe.Customer, ()),
        (Payout, stripe.Payout, ()),
        (Event, stripe.Event, ()),
        (TaxRate, stripe.TaxRate, ()),
        (PaymentMethod, stripe.PaymentMethod, ()),
    ):
        shape(cls, resource, unless_expanded)
    app = server.app
    error_middleware, auth_middleware, *rest = app.middlewares
    app.middlewares[:] = [
        request_log,
        error_middleware,
        auth_middleware,
        idempotency,
        fail_next,
        extensions,
        *rest,
    ]
    for cls in (CreditNote, Dispute):
        url = f"/v1/{cls.object}s"
        app.router.add_route("GET", url, server.api_list_all(cls, url))
        app.router.add_route("GET", url + "/{id}", server.api_retrieve(cls, url))
    app.router.add_route(
        "POST", "/v1/credit_notes", server.api_create(CreditNote, "/v1/credit_notes")
    )
    app.router.add_route("GET", "/v1/invoice_payments", list_invoice_payments)
    app.router.add_post("/_beanbill/disputes", create_dispute)
    app.router.add_post("/_beanbill/disputes/{id}/close", close_dispute)
    app.router.add_post("/_beanbill/redeliver", redeliver)
    app.router.add_post("/_beanbill/config", configure)
    app.router.add_post("/_beanbill/fail_next", arm_failure)
    app.router.add_post("/_beanbill/billing_fee", billing_fee)
    app.router.add_post("/_beanbill/payouts/{id}/paid", payout_paid)
    log_path = os.environ.get(REQUEST_LOG_ENV)
    if log_path:
        LOG.append(open(log_path, "a", encoding="utf-8"))  # noqa: SIM115  # open for the run


def main() -> None:
    """Serve on 127.0.0.1:PORT only: the peer accepts any key, so it must not be reachable."""
    port = int(sys.argv[1])
    install()
    web.run_app(server.app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
