"""Start localstripe (the real PyPI package) on 127.0.0.1 only, with the gaps beanbill needs filled.

localstripe's own CLI binds every interface and saves its state to a fixed
/tmp/localstripe.pickle after each change; two test runs would share it. This launcher
serves the same aiohttp application on loopback and keeps the state in memory only.

localstripe is a stateful fake of Stripe from the 2017-2020 API. Where it lacks what the
Stripe connector uses, this file fills the gap with the smallest extension that behaves
like Stripe's documentation says, never by mocking the stripe SDK:

- one-off invoices (``POST /v1/invoices`` without a subscription, pending items excluded,
  ``collection_method``/``days_until_due``/``auto_advance``), items added to a draft
  (``invoice=`` on an invoice item), ``finalize`` and ``send``;
- ``GET /v1/customers/search`` for ``metadata['key']:'value'`` queries;
- ``created[gte]`` on listings;
- credit notes (create/retrieve/list; a full pre-payment credit note settles the invoice);
- idempotency-key replay (same key and body: the first answer again; other body: 400);
- ``invoice.paid`` next to ``invoice.payment_succeeded``, ``charge.refunded`` on refunds,
  a card fee on charges (1.4 % + 25 cents, the EU card price);
- disputes: ``GET /v1/disputes`` plus a test-only ``POST /_beanbill/disputes`` (and
  ``/_beanbill/disputes/{id}/close``), as Stripe's test cards would trigger;
- webhooks: the payload is taken when the event happens, signed at delivery time,
  retried on failure like Stripe does, and ``POST /_beanbill/redeliver`` sends every
  event again (Stripe's "resend").

    python -m beanbill.stripe_peer.launcher PORT

It runs only in its own process (started by ``beanbill.stripe_peer.running_localstripe``):
importing it patches localstripe's classes, which must never happen in beanbill's process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from localstripe import resources, server, webhooks
from localstripe.errors import UserError
from localstripe.resources import (
    BalanceTransaction,
    Charge,
    Event,
    Invoice,
    InvoiceItem,
    InvoiceLineItem,
    List,
    Refund,
    StripeObject,
    store,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DELIVERY_ATTEMPTS = 5
DELIVERIES: set[asyncio.Future[None]] = set()  # kept referenced until done
SENT: dict[str, bytes] = {}  # event id → payload, as first sent
IDEMPOTENCY: dict[str, tuple[str, int, bytes]] = {}  # key → (request fingerprint, status, body)
SEARCH = re.compile(r"^metadata\['([^']+)'\]:'([^']*)'$")


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


async def redeliver(request: web.Request) -> web.Response:
    for event_id, payload in list(SENT.items()):
        _schedule(_deliver(event_id, payload, 0))
    return web.json_response({"redelivered": len(SENT)})


# --- objects localstripe does not have --------------------------------------------------------


class CreditNote(StripeObject):  # type: ignore[misc]  # localstripe is untyped
    object = "credit_note"
    _id_prefix = "cn_"

    def __init__(
        self,
        invoice: str | None = None,
        lines: list[dict[str, Any]] | None = None,
        memo: str | None = None,
        metadata: dict[str, str] | None = None,
        credit_amount: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs))
        parent = Invoice._api_retrieve(invoice)
        if parent.status not in ("open", "paid"):
            raise UserError(400, "Credit notes apply to open or paid invoices")
        total = sum(int(line["unit_amount"]) * int(line.get("quantity", 1)) for line in lines or [])
        credit = int(credit_amount or 0)
        if total <= 0 or (parent.status == "paid" and credit != total):
            raise UserError(400, "Bad credit note amounts")
        super().__init__()
        self.invoice = invoice
        self.customer = parent.customer
        self.currency = parent.currency
        self.memo = memo
        self.metadata = metadata or {}
        self.total = total
        self.amount = total
        self.status = "issued"
        self.type = "post_payment" if parent.status == "paid" else "pre_payment"
        if self.type == "pre_payment":
            parent._credited = getattr(parent, "_credited", 0) + total
        schedule_webhook(Event("credit_note.created", self))

    @classmethod
    def _api_list_all(cls, url: str, invoice: str | None = None, **kwargs: Any) -> List:
        li = super()._api_list_all(url, **kwargs)
        li._list = [note for note in li._list if invoice is None or note.invoice == invoice]
        return li


class Dispute(StripeObject):  # type: ignore[misc]  # localstripe is untyped
    object = "dispute"
    _id_prefix = "dp_"

    def __init__(self, charge: str | None = None, **kwargs: Any) -> None:
        disputed = Charge._api_retrieve(charge)
        super().__init__()
        self.charge = charge
        self.customer = disputed.customer
        self.payment_intent = disputed.payment_intent
        self.amount = disputed.amount
        self.currency = disputed.currency
        self.reason = "fraudulent"
        self.status = "needs_response"
        schedule_webhook(Event("charge.dispute.created", self))


async def create_dispute(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    return web.json_response(Dispute(charge=data.get("charge"))._export())


async def close_dispute(request: web.Request) -> web.Response:
    dispute = Dispute._api_retrieve(request.match_info["id"])
    data = await server.get_post_data(request) or {}
    dispute.status = "won" if data.get("status") == "won" else "lost"
    schedule_webhook(Event("charge.dispute.closed", dispute))
    return web.json_response(dispute._export())


# --- invoices as Stripe has them today ------------------------------------------------------


def create_one_off(data: dict[str, Any]) -> Invoice:
    if data.get("pending_invoice_items_behavior") != "exclude":
        raise UserError(400, "this launcher creates invoices with pending items excluded")
    customer = data.get("customer")
    held = [ii for ii in InvoiceItem._api_list_all(None, customer=customer, limit=99)._list]
    for item in held:
        item.invoice = "in_held"  # keep pending items out of the new draft
    try:
        invoice = Invoice(
            customer=customer, metadata=data.get("metadata"), description=data.get("description")
        )
    finally:
        for item in held:
            item.invoice = None
    invoice.currency = data.get("currency", "eur")
    invoice.collection_method = data.get("collection_method", "charge_automatically")
    invoice.days_until_due = resources.try_convert_to_int(data.get("days_until_due"))
    invoice.auto_advance = data.get("auto_advance") == "true"
    return invoice


def finalize(invoice_id: str) -> Invoice:
    invoice = Invoice._api_retrieve(invoice_id)
    if invoice.status != "draft":
        raise UserError(400, "This invoice is already finalized")
    invoice._finalize()
    schedule_webhook(Event("invoice.finalized", invoice))
    if invoice.total <= 0:
        invoice._on_payment_success()
    return invoice


def _amount_due(invoice: Invoice) -> int:
    return int(max(0, invoice.total - getattr(invoice, "_credited", 0)))


def _amount_paid(invoice: Invoice) -> int:
    if invoice.payment_intent:
        intent = resources.PaymentIntent._api_retrieve(invoice.payment_intent)
        return int(intent.amount) if intent.status == "succeeded" else 0
    return 0


original_status = Invoice.status.fget


def _status(invoice: Invoice) -> str:
    status = original_status(invoice)
    if status == "open" and _amount_due(invoice) == 0:
        return "paid"  # a full pre-payment credit note settles the invoice
    return str(status)


original_success = Invoice._on_payment_success


def _on_payment_success(invoice: Invoice) -> None:
    original_success(invoice)
    schedule_webhook(Event("invoice.paid", invoice))


original_balance_init = BalanceTransaction.__init__


def _balance_init(self: BalanceTransaction, **data: Any) -> None:
    original_balance_init(self, **data)
    if self.type == "charge" and self.amount > 0:
        self.fee = self.amount * 14 // 1000 + 25
        self.fee_details = [{"amount": self.fee, "currency": self.currency, "type": "stripe_fee"}]


original_refund_init = Refund.__init__


def _refund_init(self: Refund, **data: Any) -> None:
    original_refund_init(self, **data)
    schedule_webhook(Event("charge.refunded", Charge._api_retrieve(self.charge)))


def search_customers(query: str) -> dict[str, Any]:
    match = SEARCH.match(query or "")
    if not match:
        raise UserError(400, "this launcher searches metadata['key']:'value' only")
    key, value = match.groups()
    found = [
        obj._export()
        for name, obj in store.items()
        if name.startswith("customer:") and (obj.metadata or {}).get(key) == value
    ]
    return {"object": "search_result", "data": found, "has_more": False, "url": "/v1/customers"}


# --- the middlewares that route the extensions ----------------------------------------------


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    fingerprint = hashlib.sha256(f"{request.path}\n".encode() + await request.read()).hexdigest()
    if key in IDEMPOTENCY:
        seen, status, body = IDEMPOTENCY[key]
        if seen != fingerprint:
            raise UserError(
                400,
                "Keys for idempotent requests can only be used with the same "
                "parameters they were first used with",
            )
        answer = web.Response(status=status, body=body, content_type="application/json")
        answer.headers["Idempotent-Replayed"] = "true"
        return answer
    response = await handler(request)
    if isinstance(response, web.Response) and response.status < 500 and response.body:
        IDEMPOTENCY[key] = (fingerprint, response.status, bytes(response.body))  # type: ignore[arg-type]
    return response


def _json(obj: Any) -> web.Response:
    return web.json_response(obj._export() if isinstance(obj, StripeObject) else obj)


@web.middleware
async def extensions(request: web.Request, handler: Handler) -> web.StreamResponse:
    path, method = request.path, request.method
    if method == "DELETE" and path == "/_config/data":
        IDEMPOTENCY.clear()  # a wiped account forgets its keys too
        SENT.clear()
    if method == "GET" and path == "/v1/customers/search":
        return _json(search_customers(request.query.get("query", "")))
    if method == "POST" and path == "/v1/invoices":
        data = await server.get_post_data(request) or {}
        if "subscription" not in data:
            return _json(create_one_off(data))
    finalize_match = re.fullmatch(r"/v1/invoices/(in_\w+)/(finalize|send)", path)
    if method == "POST" and finalize_match:
        invoice_id, action = finalize_match.groups()
        if action == "finalize":
            return _json(finalize(invoice_id))
        return _json(Invoice._api_retrieve(invoice_id))
    if method == "POST" and path == "/v1/invoiceitems":
        data = await server.get_post_data(request) or {}
        invoice_id = data.pop("invoice", None)
        if invoice_id:
            invoice = Invoice._api_retrieve(invoice_id)
            if invoice.status != "draft":
                raise UserError(400, "Items can only be added to draft invoices")
            item = InvoiceItem(**data)
            item.invoice = invoice_id
            invoice.lines._list.append(InvoiceLineItem(item))
            return _json(item)
    since = request.query.get("created[gte]")
    if method == "GET" and since is not None:
        query = {k: v for k, v in request.query.items() if not k.startswith("created")}
        response = await handler(request.clone(rel_url=request.rel_url.with_query(query)))
        listing = json.loads(bytes(response.body))  # type: ignore[attr-defined]
        listing["data"] = [obj for obj in listing["data"] if obj["created"] >= int(since)]
        return web.json_response(listing)
    return await handler(request)


def install() -> None:
    """Fill localstripe's gaps (module docstring) in this process, before it serves a request."""
    resources.store.dump_to_disk = lambda: None
    resources.schedule_webhook = schedule_webhook
    Invoice.amount_due = property(_amount_due)
    Invoice.amount_remaining = property(_amount_due)
    Invoice.amount_paid = property(_amount_paid)
    Invoice.status = property(_status)
    Invoice._on_payment_success = _on_payment_success
    BalanceTransaction.__init__ = _balance_init
    Refund.__init__ = _refund_init
    app = server.app
    app.middlewares.insert(2, idempotency)
    app.middlewares.insert(3, extensions)
    for cls in (CreditNote, Dispute):
        url = f"/v1/{cls.object}s"
        app.router.add_route("GET", url, server.api_list_all(cls, url))
        app.router.add_route("GET", url + "/{id}", server.api_retrieve(cls, url))
    app.router.add_route(
        "POST", "/v1/credit_notes", server.api_create(CreditNote, "/v1/credit_notes")
    )
    app.router.add_post("/_beanbill/disputes", create_dispute)
    app.router.add_post("/_beanbill/disputes/{id}/close", close_dispute)
    app.router.add_post("/_beanbill/redeliver", redeliver)


def main() -> None:
    """Serve on 127.0.0.1:PORT only: the peer accepts any key, so it must not be reachable."""
    port = int(sys.argv[1])
    install()
    web.run_app(server.app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
