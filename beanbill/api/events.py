"""``POST /v1/events``: usage events in, through the file ingest's one set of rules.

The batch is written, event by event, as a JSON Lines file (``state/api-events/``, named
by its content) and ingested by ``beanbill.rating.ingest`` exactly as a file a customer
drops in the inbox: the same checks, the same idempotency (the key is the organization
and the ``id``), the same rejects file, the same late-event report. So an event posted
here and the same event in a file are one event, and rate to the same bytes. Ids are each
organization's own: an id another organization used is no conflict, so the answer never
tells a tenant that another's id exists. The answer comes after the ingest has
published the accepted events (fsync'd): a 200 means they are kept.

Numbers are never read through a float: each number of the body keeps the text it was
written with (``parse_int``/``parse_float`` hand over the token), and is written to the
file as that text, so ``"quantity": 2.50`` and ``1e3`` reach the ingest as they were
sent. Keys are kept in their order, repeated keys included (the ingest refuses a repeated
``quantity`` written differently).

An organization's key may post only events of the organizations it sees: another
organization's event is rejected as an unknown organization (the same words the ingest
uses, so the answer does not tell whether it exists).

Limits: the body (``max_body_bytes``, 413, read no further), the number of events
(``max_events_per_batch``, 422) and the nesting of each event (64 levels, 422).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, NoReturn

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from beanbill.api.auth import Caller, CallerDependency
from beanbill.api.context import ApiContext, ApiSettings
from beanbill.api.problems import (
    BodyTooLarge,
    InvalidRequest,
    RateLimited,
    Unauthorized,
    Unavailable,
    responses,
)
from beanbill.rating.errors import BeanbillError
from beanbill.rating.ingest import IngestSummary

BATCH_FOLDER = "api-events"
MAX_DEPTH = 64
UNKNOWN_ORGANIZATION = "org: unknown organization"  # the ingest's rule, word for word


class RawNumber:
    """A JSON number as the text it was written with (never a float)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class JsonObject(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, in order, repeated keys kept."""

    def values_of(self, key: str) -> list[Any]:
        return [value for name, value in self if name == key]


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidRequest(f"the body is not valid JSON: {name} is not a JSON value")


def parse_body(body: bytes) -> Any:
    """The body's JSON with exact numbers and ordered pairs; 422 when it is not JSON."""
    try:
        text = body.decode("utf-8")
        return json.loads(
            text,
            parse_float=RawNumber,
            parse_int=RawNumber,
            parse_constant=_refuse_constant,
            object_pairs_hook=JsonObject,
        )
    except UnicodeDecodeError as error:
        raise InvalidRequest(f"the body is not UTF-8 text (byte {error.start})") from error
    except RecursionError as error:
        raise InvalidRequest(f"the body is nested deeper than {MAX_DEPTH} levels") from error
    except json.JSONDecodeError as error:
        raise InvalidRequest(
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from error


def dump(value: Any, depth: int = 0) -> str:
    """One JSON value as one line of ASCII text, numbers as they were written."""
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"an event is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, RawNumber):
        return value.text
    if isinstance(value, JsonObject):
        pairs = (f"{json.dumps(key)}:{dump(item, depth + 1)}" for key, item in value)
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item, depth + 1) for item in value) + "]"
    return json.dumps(value)  # str (escaped to ASCII), True, False, None


def _refuse_scanned_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


_SCANNER = json.JSONDecoder(parse_constant=_refuse_scanned_constant)
_WHITESPACE = " \t\n\r"  # JSON's four (RFC 8259 section 2)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def event_texts(text: str, limit: int) -> list[str] | None:
    """Each event of a body ``{"events": [...]}`` holding at most ``limit`` events, as the
    exact text it was sent with, on one line; None for any other body, valid JSON or not
    (the caller then parses it fully, to say what is wrong or to write the events out
    itself). Only the envelope is looked at here; each event is scanned by ``json``'s own
    scanner, which checks it is valid JSON (NaN and Infinity refused) but keeps nothing.

    The ingest then reads what the sender wrote, as it would read the same line in a file
    (numbers, escapes and key spellings as sent), and no event is serialized again in
    Python. A raw line break can only be whitespace between tokens (JSON strings cannot
    hold one), so it is made a space: one event, one line.
    """
    index = _skip(text, 0)
    if not text.startswith("{", index):
        return None
    index = _skip(text, index + 1)
    if not text.startswith('"', index):  # a key is a string: anything else is not ours
        return None
    try:
        key, index = _SCANNER.raw_decode(text, index)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    index = _skip(text, index)
    if key != "events" or not text.startswith(":", index):
        return None
    index = _skip(text, index + 1)
    if not text.startswith("[", index):
        return None
    index = _skip(text, index + 1)
    found: list[str] = []
    while not text.startswith("]", index):
        if len(found) == limit:
            return None
        if found:
            if not text.startswith(",", index):
                return None
            index = _skip(text, index + 1)
        try:
            _, end = _SCANNER.raw_decode(text, index)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            return None
        found.append(text[index:end].replace("\n", " ").replace("\r", " "))
        index = _skip(text, end)
    index = _skip(text, index + 1)
    if not text.startswith("}", index) or _skip(text, index + 1) != len(text):
        return None
    return found


def _shallow(text: str) -> bool:
    """Whether an event's text cannot nest deeper than the limit (it has no more brackets
    than levels allowed); a deeper one is parsed, and ``dump`` checks it."""
    return text.count("{") + text.count("[") <= MAX_DEPTH


def _line_of(event: Any, text: str | None) -> str:
    """The event's line: its text as sent when shallow, else written out by ``dump``."""
    if text is not None and _shallow(text):
        return text
    return dump(event)


def _events_of(document: Any, settings: ApiSettings) -> list[Any]:
    if not isinstance(document, JsonObject):
        raise InvalidRequest('the body is a JSON object: {"events": [...]}')
    names = [name for name, _ in document]
    if names != ["events"]:
        raise InvalidRequest(
            'the body holds exactly one field, "events" (a list of events); got '
            + (", ".join(json.dumps(name) for name in names[:5]) or "none")
        )
    events = document.values_of("events")[0]
    if not isinstance(events, list) or isinstance(events, JsonObject):
        raise InvalidRequest('"events" is a list of events')
    if len(events) > settings.max_events_per_batch:
        raise InvalidRequest(
            f"at most {settings.max_events_per_batch:,} events per batch; got {len(events):,}: "
            "send them in several batches"
        )
    return events


class RejectedEvent(BaseModel):
    """An event not stored, and why: the ingest's field, rule and reason."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="Its position in the batch, from 0.")
    id: str | None = Field(description="Its id, when it has a readable one.")
    field: str = Field(description="The field at fault, or 'record' for the event as a whole.")
    rule: str = Field(description="The rule it breaks (a fixed text, to count or switch on).")
    reason: str = Field(description="The rule and the offending value.")


class EventBatchResult(BaseModel):
    """What became of a batch: every event is accepted, a duplicate or rejected."""

    model_config = ConfigDict(extra="forbid")

    received: int = Field(ge=0, description="Events in the batch.")
    accepted: int = Field(ge=0, description="New events, stored durably.")
    duplicates: int = Field(ge=0, description="Events already stored with the same content.")
    rejected: int = Field(ge=0, description="Events not stored; each one is in `rejects`.")
    late: int = Field(ge=0, description="Accepted events of an already closed period.")
    rejects: list[RejectedEvent]


def _foreign_org(event: Any, caller: Caller) -> str | None:
    """The text of an ``org`` this key may not post for, or None."""
    if caller.principal.is_admin or not isinstance(event, JsonObject):
        return None
    for value in event.values_of("org"):
        if value is None:
            continue  # "org: missing", as the ingest says
        if not isinstance(value, str):
            return dump(value)
        if value not in caller.organizations:
            return value
    return None


def _batch_path(context: ApiContext, content: bytes) -> Path:
    """Where a request's batch is kept: its content's digest, and a part of its own (the
    same batch sent twice at once is two files of one group, answered each)."""
    name = f"batch-{hashlib.sha256(content).hexdigest()[:32]}-{secrets.token_hex(4)}.jsonl"
    return context.workspace.state_dir / BATCH_FOLDER / context.today().isoformat() / name


def _rejects(summary: IngestSummary, path: Path) -> list[RejectedEvent]:
    """The rejects of the batch in ``path`` (a group's rejects file holds every batch's).
    A conflict first seen in another batch of the same group names no server file."""
    if summary.rejects_path is None:
        return []
    found = []
    # One reject a line, split on "\n" only: a record may hold U+2028 or U+0085, which
    # ``str.splitlines`` would take for line ends.
    for text in summary.rejects_path.read_text(encoding="utf-8").split("\n"):
        if not text:
            continue
        reject = json.loads(text)
        if reject.get("file") != str(path):
            continue
        record = reject.get("record") or {}
        identifier = record.get("id") if isinstance(record, dict) else None
        reason = str(reject["reason"])
        for other in summary.files:
            reason = reason.replace(f" of {other}", " of another batch sent at the same time")
        found.append(
            RejectedEvent(
                index=int(reject["line"]) - 1,
                id=identifier if isinstance(identifier, str) else None,
                field=str(reject["field"]),
                rule=str(reject["rule"]),
                reason=reason,
            )
        )
    return found


def _events_and_texts(
    body: bytes, settings: ApiSettings, caller: Caller
) -> tuple[list[Any], list[str] | None]:
    """The batch's events and the text each was sent with.

    An admin's plain batch is not parsed into Python objects at all (the envelope and each
    event's validity are checked by ``event_texts``; the ingest reads the texts): what an
    event holds matters here only to check an organization's key posts only its own.
    Any other body is parsed fully, and what is wrong with it said from that parse.
    """
    texts = None
    with contextlib.suppress(UnicodeDecodeError):  # parse_body says where
        texts = event_texts(body.decode("utf-8"), settings.max_events_per_batch)
    if texts is not None and caller.principal.is_admin and all(map(_shallow, texts)):
        return [None] * len(texts), texts
    events = _events_of(parse_body(body), settings)
    if texts is not None and len(texts) != len(events):  # pragma: no cover - one grammar
        raise Unavailable("the batch was read two ways; nothing was taken")
    return events, texts


def take_batch(context: ApiContext, caller: Caller, body: bytes) -> EventBatchResult:
    """Check, store and answer for one batch (blocking: run in a worker thread)."""
    events, texts = _events_and_texts(body, context.settings, caller)
    refused: list[RejectedEvent] = []
    # One line per event, so that line n is event n - 1 in every reason the ingest gives
    # ("first seen ... at line 3"); an event refused here leaves its line blank (the
    # ingest skips blank lines).
    lines: list[str] = []
    for index, event in enumerate(events):
        foreign = _foreign_org(event, caller)
        if foreign is None:
            lines.append(_line_of(event, texts[index] if texts is not None else None))
            continue
        lines.append("")
        identifier = event.values_of("id")[:1] if isinstance(event, JsonObject) else []
        refused.append(
            RejectedEvent(
                index=index,
                id=identifier[0] if identifier and isinstance(identifier[0], str) else None,
                field="org",
                rule=UNKNOWN_ORGANIZATION,
                reason=f"{UNKNOWN_ORGANIZATION}: {foreign}",
            )
        )
    if not any(lines):
        return EventBatchResult(
            received=len(events), accepted=0, duplicates=0, rejected=len(refused), late=0,
            rejects=refused,
        )  # fmt: skip
    content = ("\n".join(lines) + "\n").encode("utf-8")
    path = _batch_path(context, content)
    try:
        # No fsync here: the events are durable once the ingest has written (and synced)
        # them to the store; a batch file lost in a crash was never answered.
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        counts, summary = context.group_commit.submit(path)
    except (BeanbillError, OSError) as error:
        raise Unavailable(f"the events could not be taken now: {error}") from error
    rejects = sorted([*refused, *_rejects(summary, path)], key=lambda r: r.index)
    return EventBatchResult(
        received=len(events),
        accepted=counts.accepted,
        duplicates=counts.duplicates,
        rejected=len(rejects),
        late=counts.late,
        rejects=rejects,
    )


async def body_within(request: Request, limit_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed the limit: never read all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise BodyTooLarge(f"the body is larger than {limit_bytes:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(f"the body is larger than {limit_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


EVENT_PROPERTIES: dict[str, Any] = {
    "id": {
        "description": "The idempotency key, within its organization: the same org and id "
        "with the same content counts once, with other content it is rejected; another "
        "organization's events never collide with it."
    },
    "org": {"description": "The organization's id (customers.toml)."},
    "resource": {"description": "What used the meter: an application, a volume, ..."},
    "meter": {"description": "The meter's id (catalog.toml)."},
    "start": {"description": "Interval meters: RFC 3339 with an offset."},
    "end": {"description": "Interval meters: RFC 3339 with an offset."},
    "at": {"description": "Counter meters: RFC 3339 with an offset."},
    "quantity": {
        "description": "A plain decimal (JSON number or text), at most 6 decimals; "
        "interval meters default to 1."
    },
}
EXAMPLE = {
    "events": [
        {
            "id": "evt-0001",
            "org": "org-0001",
            "resource": "org-0001/app-1",
            "meter": "cpu",
            "start": "2026-10-05T00:00:00Z",
            "end": "2026-10-05T10:00:00Z",
            "quantity": 2,
        },
        {
            "id": "evt-0002",
            "org": "org-0001",
            "resource": "org-0001/lb",
            "meter": "egress",
            "at": "2026-10-05T12:00:00Z",
            "quantity": "250.5",
        },
    ]
}


def request_schema(settings: ApiSettings) -> dict[str, Any]:
    """The request body as documented: any JSON value may stand for an event (each one
    gets its verdict in the answer), the contract's fields described."""
    event = {
        "description": "One usage event: the file ingest's contract (README, 'Usage "
        "events'); extra fields are ignored, a name differing from a contract name only in "
        "case is refused. Anything else is rejected with its index, field and reason.",
        "anyOf": [
            {"type": "object", "properties": EVENT_PROPERTIES},
            {},
        ],
    }
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "events": {
                            "type": "array",
                            "maxItems": settings.max_events_per_batch,
                            "items": event,
                        }
                    },
                    "required": ["events"],
                    "additionalProperties": False,
                },
                "example": EXAMPLE,
            }
        },
    }


def router(settings: ApiSettings) -> APIRouter:
    routes = APIRouter(tags=["events"])

    @routes.post(
        "/v1/events",
        response_model=EventBatchResult,
        summary="Send a batch of usage events",
        openapi_extra={"requestBody": request_schema(settings)},
        responses=responses(Unauthorized, BodyTooLarge, InvalidRequest, RateLimited, Unavailable),
    )
    async def post_events(request: Request, caller: CallerDependency) -> EventBatchResult:
        """Ingest a batch (at most `max_events_per_batch` events) with the file ingest's
        rules; the answer lists every rejected event with its index, field and reason.
        Sending the same batch again is harmless: (org, id) is the idempotency key."""
        body = await body_within(request, caller.context.settings.max_body_bytes)
        return await run_in_threadpool(take_batch, caller.context, caller, body)

    return routes
