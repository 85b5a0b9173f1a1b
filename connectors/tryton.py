"""Tryton: issued invoices become posted customer invoices; payments are kept equal both ways.

Written against Tryton 8.0 (``trytond`` with ``account_invoice``) over its JSON-RPC
protocol, as its source says it behaves (``trytond/protocols/dispatcher.py``,
``modules/account_invoice/invoice.py``):

- ``POST /<database>/rpc/`` with ``{"id", "method", "params"}``; ``common.db.login``
  answers ``[user id, token, …]``, then every call carries ``Authorization: Session
  base64(login:id:token)`` and, last in its parameters, the user's context
  (``model.res.user.get_preferences``). Dates and decimals travel as
  ``{"__class__": "date", …}`` and ``{"__class__": "Decimal", "decimal": "…"}``; JSON
  floats are never read as floats. A refusal (``UserError``, ``UserWarning``) is HTTP 200
  with an ``error`` body: permanent, dead-lettered with Tryton's own message. A locked
  database is HTTP 503, the network and 5xx are transient: retried, after looking first.
- **Customers → parties**, found by the organization id as the party ``code`` (Tryton keeps
  codes unique), created otherwise with the name, the address lines and the VAT id (an
  ``eu_vat`` identifier); a changed name, address or VAT id is written back.
- **Invoices → customer invoices** (``account.invoice``, type ``out``): one line per
  invoice line, our number in ``reference``, our invoice date, our due date as
  ``payment_term_date`` (no payment term: one line to pay, due that day). Revenue accounts
  come from the product family, taxes from the VAT category and rate (``[sync.tryton]``).
  Tryton's total and tax are compared with ours *before* posting: a difference of one
  cent leaves the draft unposted and the document dead-lettered as a mismatch.
- **Look before create**, on every try: the party by code, the invoice by ``reference``,
  a credit note by ``reference`` or else by the invoice lines it credits, a payment by
  the description it was recorded with (``beanbill:<txn-id>``). A try that lost its answer
  finds what it made.
- **Credit notes** go through Tryton's own ``account.invoice.credit`` wizard on the invoice
  they correct (with refund — the invoice is cancelled — when nothing was paid on it),
  then carry our number in ``reference``. Tryton credits every line of the invoice, so a
  credit note that is not the whole invoice is a mismatch, never a guess.
- **Payments**: the ledger's are recorded with the ``account.invoice.pay`` wizard;
  payments recorded in Tryton (bank transfers) are read from the invoices' payment lines
  and come back as movements (``tryton-payment:<database>:<line id>``).

Tryton keeps no processor balance: its movements go to the bank (``Assets:Bank:Operating``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

import httpx

from beanbill.ledger.accounts import BANK, ProcessorAccounts
from beanbill.ledger.entries import minor_digits
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine
from beanbill.rating.config import Catalog, TrytonSettings
from beanbill.sync.erp import ErpInvoice, ErpPayment, LedgerPayment
from beanbill.sync.interface import (
    Interpretation,
    Malformed,
    Movement,
    MovementKind,
    RemoteDocument,
    RemoteInvoice,
    WebhookEvent,
    WebhookRejected,
)
from beanbill.sync.retry import PermanentError, TransientError, classify

TARGET = "tryton"
# Tryton keeps no balance of its own: a payment it records arrived at the bank.
ACCOUNTS = ProcessorAccounts(clearing=BANK, disputed=BANK, fees=BANK)
PRICE_DECIMALS = 4  # Tryton's default ``[price] decimal``: unit prices carry at most 4
MAX_LINES_PER_INVOICE = 1_000
MAX_LISTED = 10_000
MAX_COPIES = 10  # drafts of one document a lost answer may have left
MAX_AMOUNT = Decimal(10) ** 11
PAYMENT_PREFIX = "beanbill:"  # the description of a payment beanbill recorded
MAX_ERROR_TEXT = 500
# Warnings Tryton asks a person to confirm, which an issued invoice answers by itself: its
# due date is what was issued (maybe already past), its date is ours. A "similar invoice"
# warning is not among them: it would mean a duplicate.
ACKNOWLEDGED_WARNINGS = ("invoice_payment_term", "invoice_date_future")
UNAUTHORIZED = frozenset({401, 403})
POSTED = frozenset({"posted", "paid"})
SETTLED = POSTED | {"cancelled"}  # cancelled: posted, then credited (our credit note)
DRAFT = frozenset({"draft", "validated"})
PROVISION_LINE = re.compile(r"^Credit provision for .+: ([A-Z][A-Za-z0-9]{0,31}) \(as consumed in ")
FAMILY_SEPARATOR = " · "  # "<meter or add-on name> · <resource>", as invoice lines read
INVOICE_FIELDS = [
    "reference",
    "state",
    "total_amount",
    "tax_amount",
    "amount_to_pay",
    "party",
    "lines",
    "payment_lines",
    "invoice_date",
    "currency",
]


class TrytonUserError(PermanentError):
    """Tryton refused the request (``UserError``, a validation): retrying cannot help."""


class TrytonWarning(PermanentError):
    """Tryton asks for a confirmation (``UserWarning``) beanbill does not give by itself."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class TrytonMismatchError(PermanentError):
    """Tryton's total or tax differs from ours: nothing is posted, a human must look."""


class TrytonMappingError(PermanentError):
    """An account, tax or payment method named in ``[sync.tryton]`` is not in Tryton."""


# --- JSON-RPC -------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": format(value, "f")}
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    raise TypeError(f"{type(value).__name__} is not sent to Tryton")


def _decode(mapping: dict[str, Any]) -> Any:
    kind = mapping.get("__class__")
    if kind == "Decimal":
        return Decimal(str(mapping["decimal"]))
    if kind == "date":
        return date(int(mapping["year"]), int(mapping["month"]), int(mapping["day"]))
    if kind == "bytes":
        return base64.b64decode(str(mapping["base64"]))
    return mapping


def _no_float(text: str) -> Decimal:
    """A JSON number with a fraction is read exactly, never through a float."""
    return Decimal(text)


def _refusal(error: Any) -> PermanentError | TransientError:
    """The exception a Tryton ``error`` body stands for."""
    if isinstance(error, list) and len(error) == 2 and isinstance(error[1], list):
        kind, arguments = error[0], error[1]
        if kind == "UserWarning" and len(arguments) >= 2:
            return TrytonWarning(f"Tryton warning: {arguments[1]}"[:MAX_ERROR_TEXT], arguments[0])
        if kind in ("UserError", "AccessError", "ValidationError") and arguments:
            return TrytonUserError(f"Tryton refused: {arguments[0]}"[:MAX_ERROR_TEXT])
        if kind == "ConcurrencyException":
            return TransientError(f"Tryton: {arguments}"[:MAX_ERROR_TEXT])
    text = error[0] if isinstance(error, list) and error else error
    return TrytonUserError(f"Tryton error: {text}"[:MAX_ERROR_TEXT])


class TrytonRpc:
    """One database of one Tryton server, as a logged-in user; safe to share between threads.

    The session is opened on first use and again once when Tryton answers 401/403 (it
    expired); every call is counted (the benchmark reports calls per invoice).
    """

    def __init__(self, url: str, database: str, user: str, password: str, timeout: float) -> None:
        if not password:
            raise TrytonMappingError("no Tryton password given")
        self.endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        self.database = database
        self.user = user
        self.password = password
        self.client = httpx.Client(timeout=timeout)
        self.lock = threading.Lock()
        self.authorization: str | None = None
        self.user_id = 0
        self.context: dict[str, Any] = {}
        self.calls = 0

    def close(self) -> None:
        self.client.close()

    def _post(self, method: str, params: Sequence[Any], authorization: str | None) -> Any:
        body = json.dumps({"id": 0, "method": method, "params": list(params)}, default=_encode)
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        with self.lock:
            self.calls += 1
        try:
            answer = self.client.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise TransientError(f"Tryton network: {type(error).__name__}: {error}") from error
        if answer.status_code in UNAUTHORIZED:
            raise _Unauthorized(f"HTTP {answer.status_code}")
        problem = classify(answer.status_code, dict(answer.headers), answer.text[:200])
        if problem is not None:
            raise problem
        try:
            payload = json.loads(answer.content, object_hook=_decode, parse_float=_no_float)
        except ValueError as error:
            raise TransientError(f"Tryton answered no JSON: {answer.text[:200]!r}") from error
        if not isinstance(payload, dict):
            raise TransientError(f"Tryton answered {payload!r:.200}")
        if payload.get("error") is not None:
            raise _refusal(payload["error"])
        return payload.get("result")

    def _login(self) -> str:
        result = self._post("common.db.login", [self.user, {"password": self.password}, "en"], None)
        if not isinstance(result, list) or len(result) < 2:
            raise TrytonUserError(f"Tryton login answered {result!r:.80}")
        user_id, token = int(result[0]), str(result[1])
        token_text = f"{self.user}:{user_id}:{token}".encode()
        authorization = "Session " + base64.b64encode(token_text).decode()
        context = self._post("model.res.user.get_preferences", [True, {}], authorization)
        if not isinstance(context, dict):
            raise TrytonUserError(f"Tryton preferences answered {context!r:.80}")
        with self.lock:
            self.authorization, self.user_id, self.context = authorization, user_id, context
        return authorization

    def call(self, method: str, *params: Any, context: Mapping[str, Any] | None = None) -> Any:
        """``method`` with ``params`` and the user's context (plus ``context``) last."""
        for attempt in range(2):
            authorization = self.authorization or self._login()
            try:
                return self._post(method, [*params, {**self.context, **(context or {})}],
                                  authorization)  # fmt: skip
            except _Unauthorized as error:
                with self.lock:
                    self.authorization = None  # expired: log in again, once
                if attempt == 1:
                    raise TrytonUserError(f"Tryton refused the session of {self.user}") from error
        raise AssertionError("unreachable")

    def search_read(
        self, model: str, domain: list[Any], fields: list[str], limit: int | None = None
    ) -> list[dict[str, Any]]:
        found = self.call(f"model.{model}.search_read", domain, 0, limit, None, fields)
        if not isinstance(found, list):
            raise TrytonUserError(f"{model} search answered {found!r:.80}")
        return found

    def read(self, model: str, ids: list[int], fields: list[str]) -> list[dict[str, Any]]:
        found = self.call(f"model.{model}.read", ids, fields)
        if not isinstance(found, list) or len(found) != len(ids):
            raise TrytonUserError(f"{model} read of {ids} answered {found!r:.80}")
        return found

    def create(self, model: str, values: dict[str, Any]) -> int:
        created = self.call(f"model.{model}.create", [values])
        if not isinstance(created, list) or len(created) != 1:
            raise TrytonUserError(f"{model} create answered {created!r:.80}")
        return int(created[0])

    def wizard(
        self,
        name: str,
        record: tuple[str, int],
        steps: Sequence[tuple[str, Callable[[Any], dict[str, Any]]]],
    ) -> Any:
        """Run wizard ``name`` on one record: each step is a state and what to add to the
        wizard's data, made from the previous step's answer; the last answer. The wizard's
        session is deleted even when a step is refused."""
        model, identifier = record
        context = {"active_model": model, "active_id": identifier, "active_ids": [identifier]}
        session = self.call(f"wizard.{name}.create")
        session_id = int(session[0])
        data: dict[str, Any] = {}
        answer: Any = None
        try:
            for state, values in steps:
                data.update(values(answer))
                answer = self.call(f"wizard.{name}.execute", session_id, data, state,
                                   context=context)  # fmt: skip
        finally:
            # An abandoned wizard session changes nothing in Tryton's books.
            with contextlib.suppress(TransientError, PermanentError):
                self.call(f"wizard.{name}.delete", session_id, context=context)
        return answer


def no_data(answer: Any) -> dict[str, Any]:
    return {}


def view_defaults(answer: Any) -> dict[str, Any]:
    """A wizard view's default values, without the ``field.`` display records."""
    view = answer.get("view") if isinstance(answer, dict) else None
    defaults = view.get("defaults") if isinstance(view, dict) else None
    if not isinstance(defaults, dict):
        raise TrytonUserError(f"Tryton wizard answered no form: {answer!r:.120}")
    return {key: value for key, value in defaults.items() if not key.endswith(".")}


class _Unauthorized(TransientError):
    """The session expired (or was never valid): log in again."""


# --- our documents as Tryton lines ----------------------------------------------------------


def line_families(catalog: Catalog) -> dict[str, str]:
    """Display name → product family, for the names that belong to one family only."""
    names: dict[str, set[str]] = {}
    for meter in catalog.rated_meters():
        names.setdefault(meter.name, set()).add(meter.family)
    for addon in catalog.addon:
        names.setdefault(addon.name, set()).add("Addons")
    return {name: next(iter(families)) for name, families in names.items() if len(families) == 1}


def line_family(line: InvoiceLine, families: Mapping[str, str]) -> str | None:
    """The product family a line bills: the line's own ``family``; for documents issued
    before lines carried it, read from what the line says. None for lines of no single
    family (discounts, promotional credit, regularizations)."""
    if line.family is not None:
        return line.family
    provision = PROVISION_LINE.match(line.description)
    if provision:
        return provision.group(1)
    name, separator, _ = line.description.partition(FAMILY_SEPARATOR)
    return families.get(name) if separator else None


def _amount(net_minor: int, digits: int) -> Decimal:
    return Decimal(net_minor).scaleb(-digits)


def quantity_and_price(line: InvoiceLine, digits: int) -> tuple[Decimal, Decimal, str]:
    """(quantity, unit price, description) that Tryton multiplies back to our net amount.

    The price people read (per hour, per GB-month) when Tryton's rounding of quantity ×
    price gives our amount to the cent and the price fits Tryton's 4 decimals; else the
    e-invoice's; else one unit at the line's amount, the quantity and price in words.
    """
    cent = Decimal(1).scaleb(-digits)
    net = _amount(line.net_minor, digits)
    candidates: list[tuple[Decimal, Decimal]] = []
    if line.shown_quantity is not None and line.shown_price is not None:
        candidates.append((line.shown_quantity, line.shown_price))
    if line.base_quantity:
        candidates.append((line.quantity, line.unit_price / line.base_quantity))
    for quantity, price in candidates:
        fits = price == price.quantize(Decimal(1).scaleb(-PRICE_DECIMALS))
        if fits and (quantity * price).quantize(cent, ROUND_HALF_EVEN) == net:
            return quantity, price.normalize(), line.description
    words = ""
    if line.shown_quantity is not None and line.shown_price is not None:
        words = f" ({line.shown_quantity} {line.shown_unit or ''} × {line.shown_price})"
    sign = Decimal(-1) if net < 0 else Decimal(1)
    return sign, abs(net), line.description + words


class TrytonIds(NamedTuple):
    """``[sync.tryton]`` resolved to Tryton ids (checked once per run)."""

    revenue: dict[str, int]  # family → account id
    default_revenue: int
    prepaid: int | None
    taxes: dict[tuple[str, Decimal], int | None]  # (category, rate) → tax id or no tax
    payment_method: int
    receivable: int
    journal: int
    currencies: dict[str, int]


class TrytonConnector:
    """The Tryton target. Not a payment processor: it receives no webhooks."""

    name = TARGET
    accounts = ACCOUNTS

    def __init__(
        self,
        settings: TrytonSettings,
        password: str,
        families: Mapping[str, str],
        rpc: TrytonRpc | None = None,
    ) -> None:
        self.settings = settings
        self.families = dict(families)
        self.rpc = rpc or TrytonRpc(
            settings.url, settings.database, settings.user, password,
            float(settings.timeout_seconds),
        )  # fmt: skip
        self._mapping: TrytonIds | None = None
        self._lock = threading.Lock()
        self._org_locks: dict[str, threading.Lock] = {}
        self._parties_checked: set[int] = set()

    @property
    def calls(self) -> int:
        return self.rpc.calls

    # --- the check at start ---------------------------------------------------------------

    def check(self) -> TrytonIds:
        """Resolve every account, tax and payment method ``[sync.tryton]`` names; raise
        ``TrytonMappingError`` naming each one Tryton lacks. Done once per connector."""
        with self._lock:
            if self._mapping is None:
                self._mapping = self._resolve()
            return self._mapping

    def _resolve(self) -> TrytonIds:
        settings = self.settings
        wanted = {f"revenue_accounts.{f}": c for f, c in settings.revenue_accounts.items()}
        wanted["default_revenue_account"] = settings.default_revenue_account
        if settings.prepaid_account:
            wanted["prepaid_account"] = settings.prepaid_account
        accounts = self.rpc.search_read(
            "account.account",
            [["code", "in", sorted(set(wanted.values()))], ["type.revenue", "=", True]],
            ["code"],
        )
        by_code = {str(account["code"]): int(account["id"]) for account in accounts}
        missing = [f"revenue account {code} ({where})" for where, code in wanted.items()
                   if code not in by_code]  # fmt: skip
        names = sorted({tax.tax for tax in settings.taxes if tax.tax})
        taxes = self.rpc.search_read("account.tax", [["name", "in", names]], ["name"])
        tax_ids = {str(tax["name"]): int(tax["id"]) for tax in taxes}
        missing += [f"tax {name!r}" for name in names if name not in tax_ids]
        method = self.rpc.search_read(
            "account.invoice.payment.method", [["name", "=", settings.payment_method]], ["name"]
        )
        if len(method) != 1:
            missing.append(f"payment method {settings.payment_method!r}")
        if missing:
            raise TrytonMappingError(
                f"Tryton database {settings.database} has no " + ", no ".join(missing)
            )
        configuration = self.rpc.read("account.configuration", [1], ["default_account_receivable"])
        receivable = configuration[0].get("default_account_receivable")
        journals = self.rpc.search_read("account.journal", [["type", "=", "revenue"]], ["name"], 1)
        if not receivable or not journals:
            raise TrytonMappingError(
                "Tryton has no default receivable account or no revenue journal: "
                "finish its accounting configuration"
            )
        currencies = self.rpc.search_read("currency.currency", [], ["code"], MAX_LISTED)
        return TrytonIds(
            revenue={family: by_code[code] for family, code in settings.revenue_accounts.items()},
            default_revenue=by_code[settings.default_revenue_account],
            prepaid=by_code[settings.prepaid_account] if settings.prepaid_account else None,
            taxes={
                (tax.category, tax.rate_percent.normalize()): tax_ids[tax.tax] if tax.tax else None
                for tax in settings.taxes
            },
            payment_method=int(method[0]["id"]),
            receivable=int(receivable),
            journal=int(journals[0]["id"]),
            currencies={str(c["code"]): int(c["id"]) for c in currencies},
        )

    # --- parties --------------------------------------------------------------------------

    def _org_lock(self, org: str) -> threading.Lock:
        with self._lock:
            return self._org_locks.setdefault(org, threading.Lock())

    def party(self, document: InvoiceDocument, known: str | None) -> tuple[int, int]:
        """(party id, its invoice address id): found by code, created, or updated."""
        org = document.buyer_reference or ""
        if not org:
            raise PermanentError(f"{document.number}: no buyer organization id")
        with self._org_lock(org):  # two invoices of one organization never make two parties
            fields = ["code", "name", "addresses", "identifiers"]
            found = (
                self.rpc.read("party.party", [int(known)], fields)
                if known
                else self.rpc.search_read("party.party", [["code", "=", org]], fields, 2)
            )
            if len(found) > 1:
                raise PermanentError(f"organization {org} is {len(found)} Tryton parties")
            if not found:
                found = self._create_party(document, fields)
            party = found[0]
            if str(party.get("code")) != org:
                raise PermanentError(f"Tryton party {party['id']} is not organization {org}")
            self._update_party(document, party)
            addresses = [int(a) for a in party.get("addresses") or []]
            if not addresses:
                raise PermanentError(f"Tryton party {party['id']} ({org}) has no address")
            return int(party["id"]), addresses[0]

    def _create_party(self, document: InvoiceDocument, fields: list[str]) -> list[dict[str, Any]]:
        """Create the party; if Tryton refuses its code as taken (a create whose answer was
        lost committed meanwhile), the party that holds it is ours."""
        try:
            identifier = self.rpc.create("party.party", self._party_values(document))
        except TrytonUserError:
            code = document.buyer_reference
            found = self.rpc.search_read("party.party", [["code", "=", code]], fields, 2)
            if len(found) != 1:
                raise
            return found
        return self.rpc.read("party.party", [identifier], fields)

    def _party_values(self, document: InvoiceDocument) -> dict[str, Any]:
        buyer = document.buyer
        values: dict[str, Any] = {
            "name": buyer.name,
            "code": document.buyer_reference,
            "addresses": [["create", [self._address_values(document)]]],
        }
        if buyer.vat_id:
            values["identifiers"] = [["create", [{"type": "eu_vat", "code": buyer.vat_id}]]]
        return values

    def _address_values(self, document: InvoiceDocument) -> dict[str, Any]:
        values: dict[str, Any] = {"street": "\n".join(document.buyer.address)}
        country = self._country(document.buyer.country)
        if country is not None:
            values["country"] = country
        return values

    def _country(self, code: str) -> int | None:
        found = self.rpc.search_read("country.country", [["code", "=", code]], ["code"], 1)
        return int(found[0]["id"]) if found else None

    def _update_party(self, document: InvoiceDocument, party: dict[str, Any]) -> None:
        """Write back what changed in the customer (name, address, VAT id), once a run."""
        identifier = int(party["id"])
        if identifier in self._parties_checked:
            return
        buyer = document.buyer
        if party.get("name") != buyer.name:
            self.rpc.call("model.party.party.write", [identifier], {"name": buyer.name})
        addresses = [int(a) for a in party.get("addresses") or []]
        street = "\n".join(buyer.address)
        if addresses:
            (address,) = self.rpc.read("party.address", addresses[:1], ["street"])
            if address.get("street") != street:
                self.rpc.call("model.party.address.write", addresses[:1], {"street": street})
        else:
            values = self._address_values(document)
            self.rpc.call("model.party.party.write", [identifier],
                          {"addresses": [["create", [values]]]})  # fmt: skip
        identifiers = [int(i) for i in party.get("identifiers") or []]
        codes = self.rpc.read("party.identifier", identifiers, ["type", "code"])
        vat = {str(item["code"]) for item in codes if item.get("type") == "eu_vat"}
        if buyer.vat_id and buyer.vat_id not in vat:
            created = {"type": "eu_vat", "code": buyer.vat_id}
            self.rpc.call(
                "model.party.party.write", [identifier], {"identifiers": [["create", [created]]]}
            )
        self._parties_checked.add(identifier)

    # --- invoices -------------------------------------------------------------------------

    def push(self, document: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        mapping = self.check()
        if document.type is DocumentType.CREDIT_NOTE:
            return self._push_credit_note(document, known, mapping)
        if document.type is not DocumentType.INVOICE:
            raise PermanentError(f"{document.number}: type {document.type} is not pushed")
        party, address = self.party(document, known.get("customer"))
        invoice = self.find_invoice(document.number)
        if invoice is None:
            values = self.invoice_values(document, party, address, mapping)
            invoice = self._read_invoice(self.rpc.create("account.invoice", values))
        self._check_totals(document, invoice, 1)
        if invoice["state"] in DRAFT:
            self._post(int(invoice["id"]))
            invoice = self._read_invoice(int(invoice["id"]))
        if invoice["state"] not in SETTLED:
            raise PermanentError(
                f"{document.number}: Tryton invoice {invoice['id']} is {invoice['state']}"
            )
        ids = {"customer": str(party), "invoice": str(invoice["id"])}
        return RemoteDocument(ids, str(invoice["state"]), document.due_minor)

    def find_invoice(self, reference: str) -> dict[str, Any] | None:
        """Our document in Tryton by its number in ``reference`` (a cancelled one counts:
        it was made, then credited).

        A create whose answer was lost may commit after the next try looked and created
        again: the spare copies can only be drafts (one is posted, after its totals were
        checked), and they are deleted here. Two posted copies are a human's problem.
        """
        found = self.rpc.search_read(
            "account.invoice", [["reference", "=", reference], ["type", "=", "out"]],
            INVOICE_FIELDS, MAX_COPIES,
        )  # fmt: skip
        if len(found) <= 1:
            return found[0] if found else None
        made = sorted(found, key=lambda invoice: (invoice["state"] == "draft", invoice["id"]))
        spare = [int(invoice["id"]) for invoice in made[1:] if invoice["state"] == "draft"]
        if len(spare) != len(found) - 1:
            raise PermanentError(f"{reference} is {len(found)} posted Tryton invoices")
        self.rpc.call("model.account.invoice.delete", spare)
        return made[0]

    def _read_invoice(self, identifier: int) -> dict[str, Any]:
        return self.rpc.read("account.invoice", [identifier], INVOICE_FIELDS)[0]

    def invoice_values(
        self, document: InvoiceDocument, party: int, address: int, mapping: TrytonIds
    ) -> dict[str, Any]:
        currency = mapping.currencies.get(document.currency)
        if currency is None:
            raise TrytonMappingError(
                f"{document.number}: Tryton has no currency {document.currency}"
            )
        lines = [self._line(document, line, mapping) for line in document.lines]
        if document.paid_minor:
            if mapping.prepaid is None:
                raise TrytonMappingError(
                    f"{document.number}: prepaid credit deducted, and no prepaid_account in "
                    "[sync.tryton]"
                )
            digits = minor_digits(document.currency)
            lines.append({
                "type": "line", "description": "Prepaid credits applied",
                "quantity": Decimal(1), "unit_price": -_amount(document.paid_minor, digits),
                "account": mapping.prepaid,
            })  # fmt: skip
        if len(lines) > MAX_LINES_PER_INVOICE:
            raise PermanentError(f"{document.number}: {len(lines)} lines")
        values: dict[str, Any] = {
            "type": "out",
            "party": party,
            "invoice_address": address,
            "account": mapping.receivable,
            "journal": mapping.journal,
            "currency": currency,
            "reference": document.number,
            "invoice_date": document.issue_date,
            "description": f"beanbill {document.number}",
            "lines": [["create", lines]],
        }
        if document.due_date is not None:
            values["payment_term_date"] = document.due_date
        return values

    def _line(
        self, document: InvoiceDocument, line: InvoiceLine, mapping: TrytonIds
    ) -> dict[str, Any]:
        family = line_family(line, self.families)
        account = mapping.revenue.get(family or "", mapping.default_revenue)
        key = (line.vat.category.value, line.vat.rate_percent.normalize())
        if key not in mapping.taxes:
            raise TrytonMappingError(
                f"{document.number}: no Tryton tax mapped for VAT {key[0]} {key[1]}% "
                "([[sync.tryton.taxes]])"
            )
        quantity, price, description = quantity_and_price(line, minor_digits(document.currency))
        values: dict[str, Any] = {
            "type": "line",
            "description": description,
            "quantity": quantity,
            "unit_price": price,
            "account": account,
        }
        tax = mapping.taxes[key]
        if tax is not None:
            values["taxes"] = [["add", [tax]]]
        return values

    def _check_totals(self, document: InvoiceDocument, invoice: dict[str, Any], sign: int) -> None:
        digits = minor_digits(document.currency)
        total = _minor(invoice["total_amount"], digits)
        tax = _minor(invoice["tax_amount"], digits)
        if (total, tax) != (sign * document.due_minor, sign * document.tax_minor):
            raise TrytonMismatchError(
                f"{document.number}: Tryton invoice {invoice['id']} totals {total} with tax "
                f"{tax}, ours {sign * document.due_minor} with tax {sign * document.tax_minor} "
                "(minor units): not posted"
            )

    def _post(self, identifier: int) -> None:
        """Post, confirming the warnings an issued invoice answers by itself (once each).
        Refused because it is posted already (an earlier try's post, whose answer was lost,
        committed meanwhile): done."""
        for _ in range(len(ACKNOWLEDGED_WARNINGS) + 1):
            try:
                self.rpc.call("model.account.invoice.post", [identifier])
                return
            except TrytonWarning as warning:
                if not warning.name.endswith(ACKNOWLEDGED_WARNINGS):
                    raise
                self.rpc.create("res.user.warning", {
                    "user": self.rpc.user_id, "name": warning.name, "always": False,
                })  # fmt: skip
            except TrytonUserError:
                if self._read_invoice(identifier)["state"] in DRAFT:
                    raise
                return
        raise TrytonUserError(f"Tryton invoice {identifier}: still warned after confirming")

    # --- credit notes ---------------------------------------------------------------------

    def _push_credit_note(
        self, note: InvoiceDocument, known: dict[str, str], mapping: TrytonIds
    ) -> RemoteDocument:
        corrected = note.preceding_number or ""
        invoice = self.find_invoice(corrected)
        if invoice is None:
            raise PermanentError(f"{note.number}: invoice {corrected} is not in Tryton")
        credit = self.find_invoice(note.number) or self._credit_of(invoice)
        if credit is None:
            refund = invoice["state"] == "posted" and not invoice["payment_lines"]
            options = {"with_refund": refund, "invoice_date": note.issue_date}
            self.rpc.wizard(
                "account.invoice.credit", ("account.invoice", int(invoice["id"])),
                [("start", no_data), ("credit", lambda answer: {"start": options})],
            )  # fmt: skip
            credit = self._credit_of(invoice)
            if credit is None:
                raise TransientError(f"{note.number}: Tryton's credit of {corrected} not found")
        if credit.get("reference") != note.number:
            self.rpc.call("model.account.invoice.write", [int(credit["id"])],
                          {"reference": note.number})  # fmt: skip
        self._check_totals(note, credit, -1)
        if credit["state"] in DRAFT:
            self._post(int(credit["id"]))
            credit = self._read_invoice(int(credit["id"]))
        ids = {"credit_note": str(credit["id"]), "invoice": str(invoice["id"])}
        if known.get("customer"):
            ids["customer"] = known["customer"]
        return RemoteDocument(ids, str(credit["state"]), note.due_minor)

    def _credit_of(self, invoice: dict[str, Any]) -> dict[str, Any] | None:
        """The credit Tryton made of ``invoice`` (its lines credit the invoice's lines)."""
        origins = [f"account.invoice.line,{line}" for line in invoice["lines"]]
        found = self.rpc.search_read(
            "account.invoice",
            [["lines.origin", "in", origins], ["type", "=", "out"], ["id", "!=", invoice["id"]]],
            INVOICE_FIELDS, 2,
        )  # fmt: skip
        if len(found) > 1:
            raise PermanentError(
                f"{invoice['reference']} was credited {len(found)} times in Tryton"
            )
        return found[0] if found else None

    # --- payments -------------------------------------------------------------------------

    def erp_invoices(self, numbers: Sequence[str]) -> list[ErpInvoice | Malformed]:
        """Our invoices (by number in ``reference``) with their payment lines."""
        return [item for item, _ in self._invoices_with_payments(numbers)]

    def _invoices_with_payments(
        self, numbers: Sequence[str]
    ) -> list[tuple[ErpInvoice | Malformed, int]]:
        """(invoice, its amount to pay in minor units) for each of ``numbers`` in Tryton."""
        if not numbers:
            return []
        found = self.rpc.search_read(
            "account.invoice", [["reference", "in", list(numbers)], ["type", "=", "out"]],
            [*INVOICE_FIELDS, "party.code"], MAX_LISTED,
        )  # fmt: skip
        line_ids = [int(line) for invoice in found for line in invoice["payment_lines"]]
        fields = ["debit", "credit", "date", "move_description_used"]
        read = self.rpc.read("account.move.line", line_ids, fields) if line_ids else []
        lines = {int(line["id"]): line for line in read}
        result: list[tuple[ErpInvoice | Malformed, int]] = []
        for invoice in found:
            try:
                result.append(self._erp_invoice(invoice, lines))
            except (KeyError, TypeError, ValueError, ArithmeticError) as error:
                reason = f"{type(error).__name__}: {error}"
                result.append((Malformed(str(invoice.get("id")), reason), 0))
        return result

    def _erp_invoice(
        self, invoice: dict[str, Any], lines: Mapping[int, dict[str, Any]]
    ) -> tuple[ErpInvoice, int]:
        currency = self._currency_code(int(invoice["currency"]))
        digits = minor_digits(currency)
        payments = []
        for line_id in invoice["payment_lines"]:
            line = lines[int(line_id)]
            amount = _minor(line["credit"], digits) - _minor(line["debit"], digits)
            day = line["date"]
            if not isinstance(day, date):
                raise ValueError(f"payment line {line_id} has no date")
            description = str(line.get("move_description_used") or "")
            txn_id = description.removeprefix(PAYMENT_PREFIX)
            recorded = txn_id if txn_id != description else None
            payments.append(ErpPayment(str(line_id), day, amount, recorded))
        party = invoice.get("party.")
        erp_invoice = ErpInvoice(
            str(invoice["id"]),
            str(invoice["reference"]),
            str(invoice["state"]),
            _minor(invoice["total_amount"], digits),
            str(party["code"]) if isinstance(party, dict) and party.get("code") else None,
            currency,
            tuple(payments),
        )
        return erp_invoice, _minor(invoice["amount_to_pay"], digits)

    def _currency_code(self, identifier: int) -> str:
        codes = {value: code for code, value in self.check().currencies.items()}
        if identifier not in codes:
            raise ValueError(f"currency {identifier} is unknown")
        return codes[identifier]

    def payment_movement(self, invoice: ErpInvoice, payment: ErpPayment) -> Movement:
        """A payment recorded in Tryton, as the ledger books it (bank ← receivable); its
        txn-id names the database and the payment's move line, stable across runs."""
        return Movement(
            f"tryton-payment:{self.settings.database}:{payment.remote_id}",
            MovementKind.PAYMENT,
            payment.day,
            payment.amount_minor,
            invoice.currency,
            payment.remote_id,
            invoice.number,
            invoice.org,
        )

    def record_payment(self, payment: LedgerPayment) -> str:
        """Record a ledger payment on our Tryton invoice (look first: a payment recorded
        with this txn-id is not recorded again); the Tryton move line id."""
        for attempt in range(2):
            listed = self._invoices_with_payments([payment.number])
            invoices = [(i, due) for i, due in listed if isinstance(i, ErpInvoice)]
            if len(invoices) != 1:
                raise PermanentError(f"{payment.number}: {len(listed)} Tryton invoices")
            invoice, to_pay = invoices[0]
            for line in invoice.payments:
                if line.recorded_txn_id == payment.txn_id:
                    return line.remote_id
            if attempt == 1:
                raise TransientError(f"{payment.number}: {payment.txn_id} is not in Tryton yet")
            if invoice.state != "posted" or payment.amount_minor > to_pay:
                raise PermanentError(
                    f"Tryton invoice {invoice.remote_id} is {invoice.state} with {to_pay} to "
                    f"pay, the payment is {payment.amount_minor} (minor units)"
                )
            self._pay(invoice, payment, to_pay)
        raise AssertionError("unreachable")

    def _pay(self, invoice: ErpInvoice, payment: LedgerPayment, to_pay_minor: int) -> None:
        """Tryton's pay wizard, as a person fills it: the start form's defaults (payee,
        company, accounts) with our amount, day, description and payment method; a part of
        what is due is a partial payment, never a write-off."""
        mapping = self.check()
        ours = {
            "amount": _amount(payment.amount_minor, minor_digits(payment.currency)),
            "description": PAYMENT_PREFIX + payment.txn_id,
            "payment_method": mapping.payment_method,
            "date": payment.day,
        }
        steps: list[tuple[str, Callable[[Any], dict[str, Any]]]] = [
            ("start", no_data),
            ("choice", lambda answer: {"start": {**view_defaults(answer), **ours}}),
        ]
        if payment.amount_minor < to_pay_minor:
            steps.append(
                ("pay", lambda answer: {"ask": {**view_defaults(answer), "type": "partial"}})
            )
        record = ("account.invoice", int(invoice.remote_id))
        self.rpc.wizard("account.invoice.pay", record, steps)

    # --- the Connector protocol's webhook and reconciliation parts -------------------------

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        raise WebhookRejected("Tryton sends no webhooks: `beanbill sync reconcile` reads it")

    def interpret(self, event: WebhookEvent) -> Interpretation:
        return Interpretation((), ())

    def remote_invoices(self, since: date) -> list[RemoteInvoice | Malformed]:
        return []  # read by number instead: ``erp_invoices`` (sync/erp.py)

    def movements_since(self, since: date) -> list[Movement | Malformed]:
        return []

    def customer_balances_minor(self, currency: str) -> dict[str, int]:
        return {}

    def clearing_balance_minor(self, currency: str) -> int:
        raise PermanentError("Tryton keeps no processor balance")


def _minor(value: Any, digits: int) -> int:
    """A Tryton amount (a Decimal) in minor units; anything else, or a fraction of a cent,
    is refused rather than rounded."""
    if not isinstance(value, Decimal) or not value.is_finite() or abs(value) > MAX_AMOUNT:
        raise ValueError(f"{value!r} is not an amount")
    scaled = value.scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has a fraction of a minor unit")
    return int(scaled)
