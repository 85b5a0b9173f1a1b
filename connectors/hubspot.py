"""HubSpot: each organization a company whose billing figures stay current, over CRM v3.

Written against HubSpot's public CRM v3 reference (developers.hubspot.com):

- **Upsert by a unique property.** ``POST /crm/v3/objects/companies/batch/upsert`` with at
  most 100 inputs, each ``{"idProperty": "beanbill_org_id", "id": <org>,
  "objectWriteTraceId": <org>, "properties": {...}}``. ``beanbill_org_id`` is a custom
  property created with ``hasUniqueValue: true``, so HubSpot updates the company holding
  that value or creates it: sending a batch again (a retry after a lost answer, the next
  night's run) updates the same companies and can never create a second one.
- **Answers.** 200 with ``results`` (in no promised order: each is mapped back to its
  organization by its ``beanbill_org_id`` property, else by ``objectWriteTraceId``), or
  207 with ``errors`` for some inputs (each error's ``context`` names the inputs' trace
  ids). A malformed answer is an error for the organizations it leaves unanswered, never a
  crash: retried first (an upsert is safe to repeat), then dead-lettered.
- **Properties** are created once if missing (``check``), in their own property group:
  amounts ``number``, dates ``date``, the last invoice's status a choice. Values travel as
  strings: amounts as exact decimals in major units (``currency_digits``, never a float),
  dates as ``YYYY-MM-DD`` (HubSpot date properties take ISO 8601 dates, at midnight UTC);
  an empty string clears a value that no longer exists (no invoice yet, no credit lot).
- **Errors.** The network, 5xx, 429 (rate limits: after ``Retry-After``, else after
  ``X-HubSpot-RateLimit-Interval-Milliseconds``), 423 (HubSpot locks records upserted in
  quick succession for 2 s) and 477 (an account migration, after ``Retry-After``) are
  retried under the ``RetryPolicy``. A wait longer than a run waits (the daily limit, a
  migration) is not retried now: the next run tries again. Any other 4xx is a refusal
  with HubSpot's error body (``status``, ``message``, ``correlationId``, ``category``,
  each optional): every organization of that batch becomes an error with HubSpot's message
  (a dead letter); 409 included (unlike Stripe's, HubSpot's conflict does not pass by
  itself). 401, 403, 404 and a redirect mean no other batch can do better: the rest of the
  run is not sent. The token goes in ``Authorization: Bearer`` only, never into a message
  (and is blanked out of anything HubSpot's answer echoes).
- Each company also carries ``beanbill_workspace_id``: which beanbill workspace writes it.
  Organization ids are unique in a workspace only; two workspaces writing to one portal
  would share companies whose ids collide.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from beanbill.rating.characters import REFUSED_CHARACTERS
from beanbill.rating.config import IDENTIFIER_PATTERN, MAX_NAME_LENGTH, HubSpotSettings
from beanbill.rating.errors import BeanbillError
from beanbill.rating.money import currency_digits
from beanbill.sync.crm import CompanyBilling, CompanyResult, InvoiceStatus
from beanbill.sync.retry import PermanentError, RetryPolicy, TransientError

TARGET = "hubspot"
UPSERT_PATH = "/crm/v3/objects/companies/batch/upsert"
PROPERTIES_PATH = "/crm/v3/properties/companies"
GROUPS_PATH = "/crm/v3/properties/companies/groups"
ID_PROPERTY = "beanbill_org_id"
GROUP_LABEL = "Beanbill billing"

MAX_BATCH = 100  # CRM v3 batch endpoints take at most 100 inputs
MAX_COMPANIES = 100_000  # one call; more is a caller's bug, refused before sending anything
MAX_TEXT_CHARACTERS = 65_536  # HubSpot's limit on a string property value set by the API
MAX_INVOICE_NUMBER_CHARACTERS = 64
MAX_AMOUNT_DIGITS = 38  # digits of an amount in minor units (a 35-digit amount fits)
MAX_OVERDUE_DAYS = 100_000
MAX_ANSWER_BYTES = 10_000_000  # an answer about 100 companies is a small fraction of this
MAX_LISTED_PROPERTIES = 10_000  # a portal's company properties, default and custom
MAX_ERROR_CHARACTERS = 1_000
MAX_WAIT_SECONDS = 60.0  # the longest wait before one retry a run accepts
LOCK_SECONDS = 2.0  # HubSpot's 423 lock on records upserted in quick succession lasts 2 s
RATE_INTERVAL_MAX_SECONDS = 10.0  # the rolling rate-limit window is 10 s
DAILY_POLICY = "DAILY"
UNAUTHORIZED = frozenset({401, 403})
STOPS_THE_RUN = UNAUTHORIZED | {404, 405}  # wrong credentials or endpoint: nothing can pass
MIGRATING = 477
LOCKED = 423
RATE_LIMITED = 429
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,1024}$")
REMOTE_ID_PATTERN = re.compile(r"^[0-9]{1,32}$")
PROPERTY_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
BATCH_STATUSES = frozenset({"PENDING", "PROCESSING", "CANCELED", "COMPLETE"})

logger = logging.getLogger(__name__)
T = TypeVar("T")


class HubSpotInputError(PermanentError):
    """A company's figures cannot be sent as they are (refused before sending)."""


class HubSpotRefused(PermanentError):
    """HubSpot refused a request (a 4xx): retrying the same request cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HubSpotMalformedAnswer(TransientError):
    """HubSpot's answer is not what its reference describes. Retried: every request this
    connector repeats (an upsert, a read) is safe to repeat."""


class HubSpotUnavailable(TransientError):
    """HubSpot asks to come back later than a run waits (the daily limit, an account
    migration): not retried now, the next run tries again."""


class HubSpotPropertyError(PermanentError):
    """A custom property exists in HubSpot but not as beanbill needs it: a human must fix
    it in HubSpot (a unique property cannot be made unique after its creation)."""


@dataclass(frozen=True)
class BillingProperty:
    """A company property beanbill writes: how ``check`` creates it."""

    name: str
    label: str
    type: str  # HubSpot's data type: string, number, date, enumeration
    field_type: str  # how HubSpot shows it: text, number, date, select
    description: str
    unique: bool = False
    options: tuple[str, ...] = ()


WRITTEN_BY = "Written by beanbill after every sync: an edit made in HubSpot is overwritten."
PROPERTIES: tuple[BillingProperty, ...] = (
    BillingProperty(
        ID_PROPERTY, "Beanbill organization id", "string", "text",
        "The organization's id in beanbill: the key companies are created or updated by.",
        unique=True,
    ),
    BillingProperty(
        "beanbill_workspace_id", "Beanbill workspace", "string", "text",
        f"The beanbill workspace billing this organization. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_currency", "Billing currency", "string", "text",
        f"ISO 4217 code of every beanbill amount on this company. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_as_of", "Billing figures as of", "date", "date",
        f"The day the beanbill figures on this company describe. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_balance_due", "Balance due", "number", "number",
        f"Everything invoiced and not yet paid, VAT included. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_overdue_amount", "Overdue amount", "number", "number",
        f"Of the balance due, what is past its due date. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_overdue_days", "Days overdue", "number", "number",
        f"Days past due of the oldest overdue invoice; 0: nothing overdue. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_last_invoice_number", "Last invoice number", "string", "text",
        f"The last invoice issued to this organization. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_last_invoice_date", "Last invoice date", "date", "date",
        f"The last invoice's date. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_last_invoice_amount", "Last invoice amount", "number", "number",
        f"The last invoice's total, VAT included. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_last_invoice_status", "Last invoice status", "enumeration", "select",
        f"Open, overdue, paid, or credited (cancelled by a credit note). {WRITTEN_BY}",
        options=tuple(status.value for status in InvoiceStatus),
    ),
    BillingProperty(
        "beanbill_credit_balance", "Credit balance", "number", "number",
        f"Prepaid and granted credit left. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_credit_soonest_expiry", "Credit expires", "date", "date",
        f"The first day a credit lot can no longer be used; empty: none expires. {WRITTEN_BY}",
    ),
    BillingProperty(
        "beanbill_consumption_30_days", "Consumption, last 30 days", "number", "number",
        f"Rated usage of the 30 days up to the figures' day, VAT excluded. {WRITTEN_BY}",
    ),
)  # fmt: skip
PROPERTY_NAMES = frozenset(definition.name for definition in PROPERTIES)


# --- values ---------------------------------------------------------------------------------


def plain(text: str) -> str:
    """``text`` safe to keep and show (a dead letter, a log line): refused characters
    escaped, bounded."""
    escaped = REFUSED_CHARACTERS.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
    if len(escaped) > MAX_ERROR_CHARACTERS:
        return escaped[: MAX_ERROR_CHARACTERS - 1] + "…"
    return escaped


def _integer(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise HubSpotInputError(f"{field} is {type(value).__name__}, not an integer")
    return value


def major_units(amount_minor: object, currency: str, field: str) -> str:
    """An amount in minor units as HubSpot shows it: the exact decimal in major units
    (EUR 12345 → "123.45", JPY 12345 → "12345"), built digit by digit, never a float."""
    amount = _integer(amount_minor, field)
    if len(str(abs(amount))) > MAX_AMOUNT_DIGITS:
        raise HubSpotInputError(f"{field} has more than {MAX_AMOUNT_DIGITS} digits")
    sign, digits, _ = Decimal(amount).as_tuple()
    return format(Decimal((sign, digits, -currency_digits(currency))), "f")


def _day(value: object, field: str, optional: bool = False) -> str:
    """A day as HubSpot's date properties take it (ISO 8601, ``YYYY-MM-DD``); "" clears."""
    if value is None and optional:
        return ""
    if not isinstance(value, date) or isinstance(value, datetime):
        raise HubSpotInputError(f"{field} is {type(value).__name__}, not a date")
    return value.isoformat()


def _text(value: object, field: str, limit: int, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise HubSpotInputError(f"{field} is {type(value).__name__}, not text")
    if not value.strip():
        raise HubSpotInputError(f"{field} is empty")
    if len(value) > min(limit, MAX_TEXT_CHARACTERS):
        raise HubSpotInputError(f"{field} is {len(value)} characters long; at most {limit}")
    if REFUSED_CHARACTERS.search(value):
        raise HubSpotInputError(f"{field} holds control or invisible characters")
    return value


def company_properties(company: CompanyBilling, workspace_id: str) -> dict[str, str]:
    """The properties one company is upserted with, every value checked: a company that
    cannot be sent as it is raises ``HubSpotInputError`` and is never sent."""
    if not isinstance(company, CompanyBilling):
        raise HubSpotInputError(f"{type(company).__name__} is not a CompanyBilling")
    org = company.org
    if not isinstance(org, str) or not IDENTIFIER_PATTERN.fullmatch(org):
        raise HubSpotInputError("the organization id is not 1-64 letters, digits, '.', '_', '-'")
    currency = company.currency
    try:
        currency_digits(currency)
    except (ValueError, TypeError):
        raise HubSpotInputError(f"currency {currency!r:.20} is not one beanbill bills in") from None
    status = company.last_invoice_status
    if status is not None and not isinstance(status, InvoiceStatus):
        raise HubSpotInputError(f"last_invoice_status {status!r:.40} is not an InvoiceStatus")
    overdue_days = _integer(company.overdue_days, "overdue_days")
    if not 0 <= overdue_days <= MAX_OVERDUE_DAYS:
        raise HubSpotInputError(f"overdue_days is {overdue_days}: 0 to {MAX_OVERDUE_DAYS}")
    last_amount = company.last_invoice_amount_minor
    return {
        "name": _text(company.name, "name", MAX_NAME_LENGTH),
        ID_PROPERTY: org,
        "beanbill_workspace_id": workspace_id,
        "beanbill_currency": currency,
        "beanbill_as_of": _day(company.as_of, "as_of"),
        "beanbill_balance_due": major_units(
            company.balance_due_minor, currency, "balance_due_minor"
        ),
        "beanbill_overdue_amount": major_units(company.overdue_minor, currency, "overdue_minor"),
        "beanbill_overdue_days": str(overdue_days),
        "beanbill_last_invoice_number": _text(
            company.last_invoice_number,
            "last_invoice_number",
            MAX_INVOICE_NUMBER_CHARACTERS,
            optional=True,
        ),
        "beanbill_last_invoice_date": _day(
            company.last_invoice_date, "last_invoice_date", optional=True
        ),
        "beanbill_last_invoice_amount": ""
        if last_amount is None
        else major_units(last_amount, currency, "last_invoice_amount_minor"),
        "beanbill_last_invoice_status": "" if status is None else status.value,
        "beanbill_credit_balance": major_units(
            company.credit_balance_minor, currency, "credit_balance_minor"
        ),
        "beanbill_credit_soonest_expiry": _day(
            company.credit_soonest_expiry, "credit_soonest_expiry", optional=True
        ),
        "beanbill_consumption_30_days": major_units(
            company.consumption_30_days_minor, currency, "consumption_30_days_minor"
        ),
    }


def _given_org(company: object) -> str:
    """The organization a result names, even for a company refused before sending."""
    org = getattr(company, "org", None)
    return org if isinstance(org, str) else plain(repr(org))


# --- answers --------------------------------------------------------------------------------


class Problem(NamedTuple):
    """HubSpot's error body, every field optional (HubSpot says so: parse leniently)."""

    message: str | None
    category: str | None
    correlation_id: str | None
    policy_name: str | None  # a 429's limit: TEN_SECONDLY_ROLLING, DAILY, ...


def _string(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def read_problem(payload: Any) -> Problem:
    if not isinstance(payload, dict):
        return Problem(None, None, None, None)
    category = _string(payload, "category") or _string(payload, "errorType")
    return Problem(
        _string(payload, "message"),
        category,
        _string(payload, "correlationId"),
        _string(payload, "policyName"),
    )


def describe(status: int, problem: Problem, fallback: str) -> str:
    """HubSpot's message first (what a human acts on), then where to look it up."""
    details = [f"HubSpot HTTP {status}"]
    if problem.category:
        details.append(problem.category)
    if problem.correlation_id:
        details.append(f"correlationId {problem.correlation_id}")
    return plain(f"{problem.message or fallback} ({', '.join(details)})")


def _seconds(headers: httpx.Headers, name: str, scale: float = 1.0) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        seconds = float(value) * scale
    except ValueError:
        return None  # an HTTP date: fall back to the policy's own backoff
    return seconds if 0.0 <= seconds < float("inf") else None


def _retry_wait_seconds(status: int, headers: httpx.Headers) -> float | None:
    """How long HubSpot asks to wait, from its headers; None: the policy's backoff."""
    retry_after = _seconds(headers, "retry-after")
    if retry_after is not None:
        return retry_after
    if status == RATE_LIMITED:
        interval = _seconds(headers, "x-hubspot-ratelimit-interval-milliseconds", 0.001)
        if interval is not None:
            return min(interval, RATE_INTERVAL_MAX_SECONDS)
    if status == LOCKED:
        return LOCK_SECONDS
    return None


def answer_error(status: int, headers: httpx.Headers, payload: Any, text: str) -> BeanbillError:
    """The error a non-2xx answer stands for: ``TransientError`` when trying again can
    help (after HubSpot's wait), ``HubSpotUnavailable`` when that wait is longer than a run
    waits, ``HubSpotRefused`` otherwise (the same request would be refused again)."""
    problem = read_problem(payload)
    message = describe(status, problem, f"answered {text[:200]!r}")
    wait = _retry_wait_seconds(status, headers)
    if status == LOCKED and wait is not None:
        wait = max(wait, LOCK_SECONDS)
    transient = status in (RATE_LIMITED, LOCKED, MIGRATING) or status >= 500
    if not transient:
        return HubSpotRefused(message, status)
    if problem.policy_name == DAILY_POLICY or (status == MIGRATING and wait is None):
        return HubSpotUnavailable(message, wait)
    if wait is not None and wait > MAX_WAIT_SECONDS:
        return HubSpotUnavailable(f"{message}; asks to wait {wait:.0f} s", wait)
    return TransientError(message, wait)


def _stops_the_run(status: int) -> bool:
    """A refusal no other batch can escape: the token, or the endpoint (a redirect too:
    HubSpot's API does not move)."""
    return status in STOPS_THE_RUN or 300 <= status < 400


def _worth_retrying_now(error: BaseException) -> bool:
    return isinstance(error, TransientError) and not isinstance(error, HubSpotUnavailable)


class Answer(NamedTuple):
    status: int
    payload: Any


def _upsert_results(orgs: Sequence[str], answer: Answer) -> dict[str, CompanyResult]:
    """Each organization's result in a batch upsert's answer (200 or 207); an organization
    the answer says nothing about is an error. Raises ``HubSpotMalformedAnswer`` when the
    answer is not a batch answer at all."""
    payload = answer.payload
    if not isinstance(payload, dict):
        raise HubSpotMalformedAnswer(f"HubSpot answered {plain(repr(payload))[:200]}")
    results = payload.get("results")
    errors = payload.get("errors", [])
    if not isinstance(results, list) or not isinstance(errors, list):
        raise HubSpotMalformedAnswer("HubSpot's batch answer has no results list")
    if len(results) > len(orgs) or len(errors) > len(orgs):
        raise HubSpotMalformedAnswer(
            f"HubSpot answered {len(results)} results and {len(errors)} errors "
            f"for {len(orgs)} companies"
        )
    wanted = set(orgs)
    found: dict[str, CompanyResult] = {}
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("properties"), dict):
            raise HubSpotMalformedAnswer("a result of HubSpot's batch answer is not an object")
        remote_id = result.get("id")
        org = result["properties"].get(ID_PROPERTY) or result.get("objectWriteTraceId")
        if not isinstance(remote_id, str) or not REMOTE_ID_PATTERN.fullmatch(remote_id):
            raise HubSpotMalformedAnswer(f"HubSpot answered company id {remote_id!r:.40}")
        if not isinstance(org, str) or org not in wanted:
            raise HubSpotMalformedAnswer(f"HubSpot answered for company {org!r:.80}, not sent")
        if org in found and found[org].remote_id != remote_id:
            raise HubSpotMalformedAnswer(f"HubSpot answered two companies for {org}")
        found[org] = CompanyResult(org, remote_id, None)
    unattributed: list[str] = []
    for error in errors:
        text = describe(answer.status, read_problem(error), "refused")
        named = _orgs_named(error, wanted)
        for org in named:
            found.setdefault(org, CompanyResult(org, None, text))
        if not named:
            unattributed.append(text)
    status = payload.get("status")
    if status is not None and status not in BATCH_STATUSES:
        raise HubSpotMalformedAnswer(f"HubSpot's batch status is {status!r:.40}")
    reason = "; ".join(unattributed) or (
        f"HubSpot's batch is {status}" if status not in (None, "COMPLETE") else ""
    )
    missing = plain(reason) if reason else "HubSpot's answer says nothing about this company"
    return {org: found.get(org) or CompanyResult(org, None, missing) for org in orgs}


def _orgs_named(error: Any, wanted: set[str]) -> list[str]:
    """The organizations one 207 error is about: its ``id``, and the values of its
    ``context`` (``objectWriteTraceId``, ``ids``, ...) that name one of the batch's."""
    if not isinstance(error, dict):
        return []
    candidates: list[Any] = [error.get("id"), error.get("objectWriteTraceId")]
    context = error.get("context")
    if isinstance(context, dict):
        for value in context.values():
            candidates.extend(value if isinstance(value, list) else [value])
    named: list[str] = []
    for candidate in candidates:
        if isinstance(candidate, str) and candidate in wanted and candidate not in named:
            named.append(candidate)
    return named


def _existing(payload: Any) -> dict[str, dict[str, Any]]:
    """The listed company properties by name."""
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        raise HubSpotMalformedAnswer("HubSpot's property list has no results list")
    if len(results) > MAX_LISTED_PROPERTIES:
        raise HubSpotMalformedAnswer(f"HubSpot listed more than {MAX_LISTED_PROPERTIES}")
    listed: dict[str, dict[str, Any]] = {}
    for item in results:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise HubSpotMalformedAnswer("a property in HubSpot's list has no name")
        listed[item["name"]] = item
    return listed


def check_definition(definition: BillingProperty, found: Mapping[str, Any]) -> None:
    """Raises ``HubSpotPropertyError`` when an existing property cannot hold what beanbill
    writes: another data type, a choice without our options, a key that is not unique."""
    where = f"HubSpot company property {definition.name}"
    if found.get("type") != definition.type:
        raise HubSpotPropertyError(
            f"{where} is of type {plain(repr(found.get('type')))[:40]}, not {definition.type}"
        )
    if definition.unique and found.get("hasUniqueValue") is not True:
        raise HubSpotPropertyError(
            f"{where} does not require unique values: upserts by it could update several "
            "companies, and HubSpot cannot make it unique now; delete it (and its archived "
            "copy) so that beanbill creates it"
        )
    if definition.options:
        options = found.get("options")
        listed = options if isinstance(options, list) else []
        values = {option.get("value") for option in listed if isinstance(option, dict)}
        missing = [option for option in definition.options if option not in values]
        if missing:
            raise HubSpotPropertyError(f"{where} lacks the options {', '.join(missing)}")


def property_input(definition: BillingProperty, group: str) -> dict[str, Any]:
    """The body creating one property (``POST /crm/v3/properties/companies``)."""
    body: dict[str, Any] = {
        "name": definition.name,
        "label": definition.label,
        "type": definition.type,
        "fieldType": definition.field_type,
        "groupName": group,
        "description": definition.description,
        "hasUniqueValue": definition.unique,
        "formField": False,
    }
    if definition.options:
        body["options"] = [
            {"label": option.capitalize(), "value": option, "displayOrder": order,
             "hidden": False}
            for order, option in enumerate(definition.options)
        ]  # fmt: skip
    return body


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the connector --------------------------------------------------------------------------


class HubSpotConnector:
    """beanbill's organizations as HubSpot companies (``sync.crm.Crm``)."""

    name = TARGET

    def __init__(
        self,
        settings: HubSpotSettings,
        token: str,
        workspace_id: str,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            # Never quote the token: it is a secret, even when malformed.
            raise PermanentError(
                f"no usable HubSpot token: set {settings.token_env} to a private app's token"
            )
        if not IDENTIFIER_PATTERN.fullmatch(workspace_id):
            raise PermanentError(f"workspace id {workspace_id!r:.80} is not an identifier")
        if not 1 <= settings.batch_size <= MAX_BATCH:
            raise PermanentError(f"batch_size is {settings.batch_size}: 1 to {MAX_BATCH}")
        if not PROPERTY_NAME_PATTERN.fullmatch(settings.property_group):
            raise PermanentError(f"property group {settings.property_group!r:.120} is invalid")
        self.settings = settings
        self.workspace_id = workspace_id
        self.policy = policy or RetryPolicy()
        self.sleep = sleep or time.sleep
        self._token = token  # kept to redact it from any text a peer might echo
        self.client = httpx.Client(
            base_url=settings.api_base.rstrip("/"),
            timeout=httpx.Timeout(float(settings.timeout_seconds)),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": "beanbill-hubspot",
            },
            follow_redirects=False,  # a redirect is an answer to read, never a place to go
        )

    def __repr__(self) -> str:
        return f"HubSpotConnector({self.settings.api_base!r}, workspace {self.workspace_id!r})"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HubSpotConnector:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # --- HTTP -------------------------------------------------------------------------------

    def _redacted(self, text: str) -> str:
        return text.replace(self._token, "[token]")

    def _call(
        self, method: str, path: str, body: Any = None, accepted: frozenset[int] = frozenset()
    ) -> Answer:
        """One request: its 2xx (or ``accepted``) answer's JSON, else the error it stands
        for (``TransientError`` to retry, ``HubSpotRefused``)."""
        content = None
        headers: dict[str, str] = {}
        if body is not None:
            content = json.dumps(
                body, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode()
            headers["Content-Type"] = "application/json"
        try:
            with self.client.stream(method, path, content=content, headers=headers) as response:
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise HubSpotMalformedAnswer(
                            f"HubSpot's answer to {method} {path} exceeds {MAX_ANSWER_BYTES} bytes"
                        )
        except httpx.HTTPError as error:
            reason = self._redacted(plain(f"{type(error).__name__}: {error}"))
            raise TransientError(f"HubSpot unreachable ({method} {path}): {reason}") from None
        text = self._redacted(raw.decode("utf-8", errors="replace"))
        try:
            payload = json.loads(text, parse_float=Decimal) if text.strip() else None
        except ValueError:
            payload = None
        status = response.status_code
        if status in accepted:
            return Answer(status, payload)  # the caller reads it, body or not
        if 200 <= status < 300:
            if payload is None:
                raise HubSpotMalformedAnswer(
                    f"HubSpot answered {method} {path} HTTP {status} without JSON: "
                    f"{plain(repr(text[:200]))}"
                )
            return Answer(status, payload)
        raise answer_error(status, response.headers, payload, text)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "HubSpot: %s; try %d of %d in %.1f s",
            self._redacted(str(error)), state.attempt_number + 1, self.policy.attempts, wait,
        )  # fmt: skip

    def _retrying(self, operation: Callable[[], T]) -> T:
        """``operation`` under the policy: transient errors retried, after HubSpot's wait
        when it names one; the last error propagates."""
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self.policy.wait_seconds,
            retry=retry_if_exception(_worth_retrying_now),
            reraise=True,
            sleep=self.sleep,
            before_sleep=self._log_retry,
        )
        return retrying(operation)

    # --- properties -------------------------------------------------------------------------

    def check(self) -> None:
        """Make sure the property group and every billing property exist as beanbill needs
        them, creating the missing ones once; raises ``TransientError`` (HubSpot could not
        be asked) or ``PermanentError`` (it refused, or a property is not as needed)."""
        self._ensure_group()
        listed = self._retrying(
            lambda: _existing(self._call("GET", f"{PROPERTIES_PATH}?archived=false").payload)
        )
        for definition in PROPERTIES:
            found = listed.get(definition.name) or self._create_property(definition)
            if found is not None:  # None: just created, as defined here
                check_definition(definition, found)

    def _ensure_group(self) -> None:
        group = self.settings.property_group
        answer = self._retrying(
            lambda: self._call("GET", f"{GROUPS_PATH}/{group}", accepted=frozenset({404}))
        )
        if answer.status == 404:
            body = {"name": group, "label": GROUP_LABEL, "displayOrder": -1}
            # 409: created meanwhile by another run, which is all this asks.
            self._retrying(lambda: self._call("POST", GROUPS_PATH, body, frozenset({409})))
            return
        payload = answer.payload
        if not isinstance(payload, dict) or payload.get("name") != group:
            raise HubSpotMalformedAnswer(f"HubSpot answered another group than {group}")

    def _create_property(self, definition: BillingProperty) -> dict[str, Any] | None:
        """Create one property (None: created); when HubSpot says it exists (made
        meanwhile by another run, or archived), read it instead and return it."""
        body = property_input(definition, self.settings.property_group)
        answer = self._retrying(lambda: self._call("POST", PROPERTIES_PATH, body, frozenset({409})))
        if answer.status != 409:
            if not isinstance(answer.payload, dict) or not isinstance(
                answer.payload.get("name"), str
            ):
                raise HubSpotMalformedAnswer(f"HubSpot's answer creating {definition.name}")
            logger.info("HubSpot: created company property %s", definition.name)
            return None
        exists = self._retrying(
            lambda: self._call(
                "GET", f"{PROPERTIES_PATH}/{definition.name}", accepted=frozenset({404})
            )
        )
        if exists.status == 404 or not isinstance(exists.payload, dict):
            conflict = describe(409, read_problem(answer.payload), "it exists")
            raise HubSpotPropertyError(
                f"HubSpot will not create company property {definition.name} and does not "
                f"show it (archived? restore or purge it): {conflict}"
            )
        return exists.payload

    # --- companies --------------------------------------------------------------------------

    def upsert_companies(self, companies: Sequence[CompanyBilling]) -> list[CompanyResult]:
        """Create or update each organization's company, ``batch_size`` at a time; one
        result per organization, in the order given. A company refused before sending, or
        refused by HubSpot, is an error; nothing raises for one batch. After a batch
        HubSpot could not take (unreachable after every try, the daily limit, a refused
        token), the following batches are not sent, each company an error saying why."""
        if len(companies) > MAX_COMPANIES:
            raise PermanentError(f"{len(companies)} companies in one call: at most {MAX_COMPANIES}")
        results: list[CompanyResult | None] = [None] * len(companies)
        ready: list[tuple[int, str, dict[str, str]]] = []
        seen: set[str] = set()
        for index, company in enumerate(companies):
            try:
                properties = company_properties(company, self.workspace_id)
            except HubSpotInputError as error:
                results[index] = CompanyResult(_given_org(company), None, f"not sent: {error}")
                continue
            org = properties[ID_PROPERTY]
            if org in seen:
                results[index] = CompanyResult(org, None, "not sent: given twice in one call")
                continue
            seen.add(org)
            ready.append((index, org, properties))
        stopped: str | None = None
        for batch in _batches(ready, self.settings.batch_size):
            if stopped is not None:
                for index, org, _ in batch:
                    results[index] = CompanyResult(org, None, f"not sent: {stopped}")
                continue
            try:
                answered = self._retrying(functools.partial(self._upsert, batch))
            except (TransientError, HubSpotRefused) as error:
                reason = self._redacted(str(error))
                for index, org, _ in batch:
                    results[index] = CompanyResult(org, None, reason)
                if isinstance(error, TransientError) or _stops_the_run(error.status):
                    stopped = f"an earlier batch failed: {reason}"
                continue
            for index, org, _ in batch:
                results[index] = answered[org]
        done = [result for result in results if result is not None]
        if len(done) != len(companies):
            raise AssertionError("a company without a result")  # unreachable: each path sets one
        return done

    def _upsert(self, batch: Sequence[tuple[int, str, dict[str, str]]]) -> dict[str, CompanyResult]:
        body = {
            "inputs": [
                {"idProperty": ID_PROPERTY, "id": org, "objectWriteTraceId": org,
                 "properties": properties}
                for _, org, properties in batch
            ]
        }  # fmt: skip
        answer = self._call("POST", UPSERT_PATH, body)
        return _upsert_results([org for _, org, _ in batch], answer)
