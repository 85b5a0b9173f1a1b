"""A local HubSpot for beanbill's CRM target: Prism serving beanbill's own OpenAPI document of
the CRM v3 endpoints it calls (``hubspot_openapi.json``), behind a thin front that remembers,
so that a whole sync (the demo, an end-to-end test) runs against a HubSpot that keeps what it
is sent. Nothing here is HubSpot's code or document; where the front mimics HubSpot, it
follows HubSpot's public reference (developers.hubspot.com), named below.

What is **Prism's** (tests/peers/prism.py, run with ``--errors``):

- validating every request against the document: paths, methods, parameters, the bearer
  token, request bodies (no property the document does not list, at most 100 inputs, every
  value a string); a request that breaks it comes back flagged (``sl-violations``);
- the answers nothing needs remembering for: the document's examples, e.g. HubSpot's own
  company properties on a new portal, and the rate-limit headers on every answer.

What is **this front's** (a ``ThreadingHTTPServer`` on 127.0.0.1; every request is forwarded
to Prism first, and answered from the front's state only if Prism validated it):

- **Refusal, stricter than Prism's default, never more lenient.** A request Prism flags, or
  answers with an error of its own (no such route, an invalid parameter), is refused in
  HubSpot's error body (``status``, ``message``, ``correlationId``, ``category``,
  ``errors``: "Error handling", developers.hubspot.com/docs/api-reference/error-handling),
  the message naming each violation: 401 ``INVALID_AUTHENTICATION`` for a missing token,
  else 400 ``VALIDATION_ERROR``. Never an answer from the examples or the state, which
  would look like HubSpot accepting it.
- **Companies.** ``POST /crm/v3/objects/companies/batch/upsert`` creates the company whose
  ``idProperty`` holds the input's ``id``, or updates it: one company id per value for the
  whole run ("Create or update a batch of companies by unique property values",
  developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/batch/upsert-companies).
  As HubSpot does, the given values overwrite, an empty string clears one, a property the
  portal does not have refuses the batch (``PROPERTY_DOESNT_EXIST``), and so does an
  ``idProperty`` that is not a property with unique values. The answer lists the results in
  reverse order: HubSpot promises none. ``companies()`` shows what the portal holds.
- **Properties and groups.** What ``POST /crm/v3/properties/companies`` and ``.../groups``
  create is kept: a later read finds it (``GET .../groups/{name}``, ``GET
  .../companies/{name}``, the list), and creating it again is a 409
  ``OBJECT_ALREADY_EXISTS`` (HubSpot's properties reference; the document's 409 examples).
  So a second ``check()`` creates nothing, as against a real portal. A new portal has no
  group of ours and only HubSpot's own properties (Prism's list); a property is created in
  an existing group only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, Protocol, TypeVar

import httpx

HERE = Path(__file__).resolve().parent
DOCUMENT = HERE / "hubspot_openapi.json"
UPSERT_PATH = "/crm/v3/objects/companies/batch/upsert"
PROPERTIES_PATH = "/crm/v3/properties/companies"
GROUPS_PATH = f"{PROPERTIES_PATH}/groups"
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
FORWARD_SECONDS = 30
FIRST_COMPANY_ID = 5000
PRISM_ERRORS = "https://stoplight.io/prism/errors#"  # Prism's own problems, not the document's


def _prism() -> ModuleType:
    """tests/peers/prism.py: imported under the suite; loaded from its file when the demo
    loads this module from its file (``tests`` is then no package on the path)."""
    if __package__:
        return importlib.import_module(f"{__package__}.prism")
    spec = importlib.util.spec_from_file_location("beanbill_demo_prism_peer", HERE / "prism.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'prism.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


prism = _prism()


def is_built() -> bool:
    """Whether Prism is installed in ``.peers/`` (``make test`` installs it): the demo uses
    the peer only then, and never installs it."""
    try:
        return bool((prism.home() / "installed").exists())
    except (RuntimeError, OSError):  # no Node.js: no Prism
        return False


def now() -> str:
    """A timestamp as HubSpot writes them (ISO 8601, milliseconds, UTC)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- forwarding to Prism, serving on loopback ----------------------------------------------


class Forwarded(NamedTuple):
    """Prism's answer to a forwarded request."""

    status: int
    body: bytes
    headers: dict[str, str]  # without hop-by-hop headers
    violations: str | None  # Prism's sl-violations header: the request broke the document


def forward(
    upstream: str,
    method: str,
    path: str,
    headers: Mapping[str, str],
    raw: bytes,
    prefer: str | None = None,
) -> Forwarded:
    """The request as sent, to Prism at ``upstream``; ``prefer``: the ``Prefer`` header
    Prism picks its answer by (``code=429``, ``example=daily``)."""
    sent = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS | {"host"}}
    if prefer:
        sent["prefer"] = prefer
    response = httpx.request(
        method, upstream + path, headers=sent, content=raw, timeout=FORWARD_SECONDS
    )
    kept = {k: v for k, v in response.headers.items() if k.lower() not in HOP_HEADERS}
    violations = response.headers.get("sl-violations")
    return Forwarded(response.status_code, response.content, kept, violations)


class Answer(NamedTuple):
    """What a front writes back."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class Front(BaseHTTPRequestHandler):
    """A handler that reads each request whole and writes what ``answer`` returns: the
    shared part of this peer's front and of the tests' recording proxy."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # a test's output, or the demo's, is not the place for an access log

    def answer(self, raw: bytes) -> Answer:
        raise NotImplementedError

    def sent_headers(self) -> dict[str, str]:
        """The request's headers, names in lower case."""
        return {name.lower(): value for name, value in self.headers.items()}

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body, headers = self.answer(raw)
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a free 127.0.0.1 port, in threads; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Located(Protocol):
    url: str


L = TypeVar("L", bound=Located)


@contextlib.contextmanager
def served(state: L, handler: type[BaseHTTPRequestHandler]) -> Iterator[L]:
    """``state`` answered for by ``handler`` (``serving``), its ``url`` set meanwhile."""
    with serving(handler) as url:
        state.url = url
        yield state


# --- companies -------------------------------------------------------------------------------


@dataclass
class Companies:
    """Companies by the value of their unique property: each gets one id for the whole run
    and keeps the values it was last given. Also what the tests' proxy echoes a batch with."""

    ids: dict[str, str] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def upsert(self, raw: bytes) -> bytes:
        """A batch upsert's 200 answer (``BatchResponseUpsert``), every input upserted, in
        reverse order (HubSpot promises none)."""
        started = now()
        results = []
        for item in json.loads(raw)["inputs"]:
            key, given = item["id"], item["properties"]
            with self.lock:
                new = key not in self.ids
                remote_id = self.ids.setdefault(key, str(FIRST_COMPANY_ID + len(self.ids)))
                created = self.created.setdefault(key, now())
                self.values[key] = {**self.values.get(key, {}), **given}
            updated = now()
            stamps = {"hs_object_id": remote_id, "createdate": created,
                      "hs_lastmodifieddate": updated}  # fmt: skip
            result = {"id": remote_id, "properties": {**given, **stamps}, "createdAt": created,
                      "updatedAt": updated, "archived": False, "new": new}  # fmt: skip
            if "objectWriteTraceId" in item:
                result["objectWriteTraceId"] = item["objectWriteTraceId"]
            results.append(result)
        answer = {"status": "COMPLETE", "results": results[::-1], "startedAt": started,
                  "completedAt": now()}  # fmt: skip
        return json.dumps(answer).encode()

    def held(self) -> dict[str, dict[str, str]]:
        """Each company's values by the value of its unique property (a copy)."""
        with self.lock:
            return {key: dict(values) for key, values in self.values.items()}


# --- the peer --------------------------------------------------------------------------------


def problem(status: int, category: str, message: str, **extra: Any) -> Answer:
    """An error in HubSpot's body (developers.hubspot.com/docs/api-reference/error-handling)."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category, **extra}  # fmt: skip
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


def refusal(prism_answer: Forwarded) -> Answer | None:
    """The refusal a request Prism did not validate earns; None when it did. Every
    violation is named (where, what): from Prism's ``sl-violations`` header, or from the
    error Prism answers in its own name (``application/problem+json``: an invalid path
    parameter, no such route), whose ``validation`` lists them in the same shape."""
    violations: Any = None
    if prism_answer.violations is not None:
        violations = json.loads(prism_answer.violations)
    elif prism_answer.status >= 300:
        try:
            own = json.loads(prism_answer.body)
        except ValueError:
            return None
        if not isinstance(own, dict) or not str(own.get("type", "")).startswith(PRISM_ERRORS):
            return None  # one of the document's answers, as asked for
        violations = own.get("validation") or [
            {"location": ["request"], "message": f"{own.get('title')}: {own.get('detail')}"}
        ]
    else:
        return None
    details = [
        {"message": str(violation.get("message")),
         "in": ".".join(str(part) for part in violation.get("location", []))}
        for violation in violations
    ]  # fmt: skip
    named = "; ".join(f"{detail['message']} ({detail['in']})" for detail in details)
    message = f"Invalid request (beanbill's HubSpot document does not allow it): {named}"
    if prism_answer.status == 401:
        return problem(401, "INVALID_AUTHENTICATION", message, errors=details)
    if prism_answer.status in (404, 405) and prism_answer.violations is None:
        return problem(prism_answer.status, "OBJECT_NOT_FOUND", message, errors=details)
    return problem(400, "VALIDATION_ERROR", message, errors=details)


def json_answer(status: int, value: Any, headers: Mapping[str, str]) -> Answer:
    """``value`` as JSON, with Prism's headers (the rate-limit ones HubSpot always sends)."""
    kept = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return Answer(status, json.dumps(value).encode(), {**kept, "Content-Type": "application/json"})


@dataclass
class HubSpotPeer:
    """The front's state and routing; ``url`` is what beanbill's ``[sync.hubspot] api_base``
    points at."""

    upstream: str  # Prism
    url: str = ""
    store: Companies = field(default_factory=Companies)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: list[dict[str, Any]] | None = None  # HubSpot's own properties (Prism's list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def companies(self) -> dict[str, dict[str, str]]:
        """Every company the portal holds: the value of its unique property (beanbill's
        organization id) → its property values."""
        return self.store.held()

    def answer(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> Answer:
        """Prism validates; only then does the state answer."""
        checked = forward(self.upstream, method, path, headers, raw)
        refused = refusal(checked)
        if refused is not None:
            return refused
        if not 200 <= checked.status < 300:
            return Answer(checked.status, checked.body, checked.headers)
        route = path.split("?")[0]
        body: Any = json.loads(raw) if raw else {}
        with self.lock:
            if (method, route) == ("POST", UPSERT_PATH):
                return self._upsert(raw, body, headers, checked)
            if route.startswith(f"{GROUPS_PATH}/") and method == "GET":
                return self._read(self.groups, route, "property group", checked)
            if (method, route) == ("POST", GROUPS_PATH):
                group = {"displayOrder": -1, **body, "archived": False}
                return self._create(self.groups, group, "property group", checked)
            if (method, route) == ("GET", PROPERTIES_PATH):
                listed = json.loads(checked.body)
                listed["results"] = [*listed["results"], *self.properties.values()]
                return json_answer(checked.status, listed, checked.headers)
            if (method, route) == ("POST", PROPERTIES_PATH):
                groups = {item["groupName"] for item in self._defaults(headers)} | set(self.groups)
                if body["groupName"] not in groups:
                    message = f"Property group {body['groupName']} does not exist"
                    return problem(400, "VALIDATION_ERROR", message)
                stamp = now()
                created = {"options": [], "displayOrder": -1, "hidden": False, **body,
                           "calculated": False, "externalOptions": False,
                           "hubspotDefined": False, "archived": False, "createdAt": stamp,
                           "updatedAt": stamp}  # fmt: skip
                return self._create(self.properties, created, "property", checked)
            if route.startswith(f"{PROPERTIES_PATH}/") and method == "GET":
                return self._read(self.properties, route, "property", checked)
        return Answer(checked.status, checked.body, checked.headers)

    def _read(
        self, kept: dict[str, dict[str, Any]], route: str, kind: str, checked: Forwarded
    ) -> Answer:
        name = route.rsplit("/", 1)[1]
        if name not in kept:
            return problem(404, "OBJECT_NOT_FOUND", f"Unable to find {kind} {name}")
        return json_answer(200, kept[name], checked.headers)

    def _create(
        self, kept: dict[str, dict[str, Any]], made: dict[str, Any], kind: str, checked: Forwarded
    ) -> Answer:
        name = made["name"]
        if name in kept:
            return problem(409, "OBJECT_ALREADY_EXISTS", f"A {kind} named '{name}' already exists.")
        kept[name] = made
        return json_answer(201, made, checked.headers)

    def _upsert(
        self, raw: bytes, body: Any, headers: Mapping[str, str], checked: Forwarded
    ) -> Answer:
        """HubSpot refuses the whole batch over a property the portal lacks, or an
        ``idProperty`` without unique values; else every input is upserted."""
        known = {item["name"] for item in self._defaults(headers)} | set(self.properties)
        invalid = []
        for item in body["inputs"]:
            key = item["idProperty"]
            if self.properties.get(key, {}).get("hasUniqueValue") is not True:
                invalid.append(_invalid(key, "INVALID_ID_PROPERTY", f"{key} is not unique"))
            for name in sorted(set(item["properties"]) - known):
                message = f'Property "{name}" does not exist'
                invalid.append(_invalid(name, "PROPERTY_DOESNT_EXIST", message))
        if invalid:
            message = f"Property values were not valid: {json.dumps(invalid)}"
            return problem(400, "VALIDATION_ERROR", message)
        return Answer(200, self.store.upsert(raw), checked.headers)

    def _defaults(self, headers: Mapping[str, str]) -> list[dict[str, Any]]:
        """HubSpot's own company properties (and so its groups), as Prism lists them for a
        new portal: asked once, with the caller's token."""
        if self.defaults is None:
            listed = forward(self.upstream, "GET", PROPERTIES_PATH, headers, b"")
            self.defaults = list(json.loads(listed.body)["results"])
        return self.defaults


def _invalid(name: str, error: str, message: str) -> dict[str, Any]:
    """One entry of HubSpot's "Property values were not valid" list."""
    return {"isValid": False, "message": message, "error": error, "name": name}


def _front(peer: HubSpotPeer) -> type[Front]:
    class PeerFront(Front):
        def answer(self, raw: bytes) -> Answer:
            return peer.answer(self.command, self.path, self.sent_headers(), raw)

    return PeerFront


def front(upstream: str) -> contextlib.AbstractContextManager[HubSpotPeer]:
    """The front alone, before a Prism already running at ``upstream`` (a test module's)."""
    peer = HubSpotPeer(upstream)
    return served(peer, _front(peer))


@contextlib.contextmanager
def running_hubspot(folder: Path) -> Iterator[HubSpotPeer]:
    """Prism (its log in ``folder``) and the front before it, both stopped on leaving;
    Prism is installed if it is not (callers that must not install ask ``is_built``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with prism.running_prism(DOCUMENT, folder / "prism.log") as upstream, front(upstream) as peer:
        yield peer
