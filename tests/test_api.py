"""The customer API (beanbill.api): keys and isolation, events in, invoices, credits, usage out.

One billed workspace per module (October 2026 rated, posted and invoiced: a parent and
its team, a prepaid customer with credit lots, a provisioned one whose invoice is
cancelled by a credit note), served in-process through Starlette's test client. The
isolation tests are generated from the app's own OpenAPI document: every operation, with
another tenant's objects as its path parameters.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, cast

import duckdb
import pytest
from beancount import loader as beancount_loader
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beanbill.api.app import create_app
from beanbill.api.context import ApiSettings
from beanbill.api.invoices import invoice_movements
from beanbill.api.keys import KEYS_FILE, KeyStore
from beanbill.api.rate_limit import RateLimit
from beanbill.api_commands import api_key
from beanbill.connectors import tryton
from beanbill.connectors.stripe import ACCOUNTS as STRIPE_ACCOUNTS
from beanbill.examples import SETTINGS
from beanbill.exits import EXIT_ERROR, EXIT_OK
from beanbill.ledger.accounts import ProcessorAccounts
from beanbill.ledger.fava_billing.billing import InvoiceRow, Status
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.documents import load_document
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import post, record_credit
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import Connector, Movement, MovementKind
from beanbill.sync.payments import post_movements
from beanbill.sync.state import SqliteSyncState
from tests.support import SMALL_CATALOG, customer, october_usage, write_jsonl, write_workspace

OCTOBER = Month(2026, 10)
TODAY = date(2026, 11, 20)
ORGANIZATIONS = [("fr-post", 10), ("team-a", 3), ("de-pre", 20), ("us-prov", 8)]
UNLIMITED = ApiSettings(rate_limit=RateLimit(per_second=1e6, burst=1_000_000))


@dataclass(frozen=True)
class Billed:
    """A billed workspace, its app, and a key per role."""

    workspace: Workspace
    app: FastAPI
    admin: str
    keys: dict[str, str]  # org → its key

    def client(self) -> TestClient:
        return TestClient(self.app)


def billed_settings() -> dict[str, Any]:
    settings = copy.deepcopy(SETTINGS)
    settings["invoicing"] = {**settings.get("invoicing", {}), "credits_vat": "at_consumption"}
    return settings


def billed_customers() -> list[dict[str, Any]]:
    return [
        customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320"),
        customer("team-a", billing_mode="postpaid", parent="fr-post"),
        customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
        customer("us-prov", billing_mode="provisioned", country="US"),
    ]


def build_billed(root: Path, api_settings: ApiSettings = UNLIMITED) -> Billed:
    """October 2026 rated, posted and invoiced; us-prov's invoice cancelled by a credit note,
    fr-post's paid in part (card, a refund, a bank transfer)."""
    workspace = write_workspace(root, billed_settings(), SMALL_CATALOG, billed_customers())
    records = [record for org, hours in ORGANIZATIONS for record in october_usage(org, hours)]
    ingest(workspace, [write_jsonl(root / "october.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    record_credit(
        workspace, "de-pre", "purchase", "1.00", date(2026, 10, 1), None, 100, "de-pre-bought"
    )
    record_credit(
        workspace,
        "de-pre",
        "grant",
        "5.00",
        date(2026, 10, 1),
        date(2026, 11, 30),
        10,
        "de-pre-granted",
    )
    post(workspace, OCTOBER, date(2026, 11, 2))
    issue(workspace, OCTOBER, date(2026, 11, 5))
    [cancelled] = [n for n, org in invoice_orgs(workspace).items() if org == "us-prov"]
    credit_note(workspace, cancelled, date(2026, 11, 6), "wrong address")
    [paid] = [n for n, org in invoice_orgs(workspace).items() if org == "fr-post"]
    record_payments(workspace, paid)
    app = create_app(workspace, api_settings, today=lambda: TODAY)
    store = KeyStore(workspace.state_dir)
    orgs = [c.id for c in workspace.customers.customer]
    keys = {org: store.create(org, orgs).secret_key for org in orgs}
    return Billed(workspace, app, store.create(None, orgs, "admin").secret_key, keys)


@dataclass(frozen=True)
class BooksOnly:
    """A payment connector's name and accounts, without its client: what ``sync`` needs
    to post the movements it reports (webhooks and reconciliation post the same way)."""

    name: str
    accounts: ProcessorAccounts


def record_payments(workspace: Workspace, number: str) -> list[tuple[MovementKind, int]]:
    """Invoice ``number`` half paid by card (Stripe), a tenth of it refunded, a quarter
    paid by bank transfer (recorded in the ERP, Tryton): still open. Returns each
    movement's kind and amount (minor units), in order."""
    document = load_document(workspace.invoices_dir / f"{number}.json")
    org, total = document.buyer_reference or "", document.due_minor
    paid, refunded, wired = total // 2, total // 10, total // 4
    state = SqliteSyncState(workspace.state_dir)
    stripe = cast(Connector, BooksOnly("stripe", STRIPE_ACCOUNTS))
    erp = cast(Connector, BooksOnly(tryton.TARGET, tryton.ACCOUNTS))
    by_card = [
        Movement(f"stripe:payment:{number}", MovementKind.PAYMENT, date(2026, 11, 10), paid,
                 "EUR", "ch_1", number, org),
        Movement(f"stripe:refund:{number}", MovementKind.REFUND, date(2026, 11, 12), refunded,
                 "EUR", "re_1", number, org),
    ]  # fmt: skip
    by_bank = [Movement(f"tryton:payment:{number}", MovementKind.PAYMENT, date(2026, 11, 15),
                        wired, "EUR", "line-7", number, org)]  # fmt: skip
    for connector, movements in ((stripe, by_card), (erp, by_bank)):
        posted = post_movements(workspace, connector, state, movements)
        assert (posted.posted, posted.problems) == (len(movements), {})
    return [(MovementKind.PAYMENT, -paid), (MovementKind.REFUND, refunded),
            (MovementKind.PAYMENT, -wired)]  # fmt: skip


def invoice_orgs(workspace: Workspace) -> dict[str, str]:
    """Issued document number → the organization it bills (read from the snapshots)."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text())["buyer_reference"]
        for path in sorted(workspace.invoices_dir.glob("*.json"))
    }


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory) -> Billed:
    return build_billed(tmp_path_factory.mktemp("billed") / "ws")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def get(billed: Billed, path: str, key: str, **params: Any) -> Any:
    response = billed.client().get(path, headers=bearer(key), params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- the document -----------------------------------------------------------------------


def test_the_openapi_document_describes_every_route(billed: Billed) -> None:
    document = billed.client().get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/v1/events",
        "/v1/organizations",
        "/v1/organizations/{org}",
        "/v1/organizations/{org}/usage",
        "/v1/organizations/{org}/forecast",
        "/v1/organizations/{org}/credits",
        "/v1/organizations/{org}/payments",
        "/v1/invoices",
        "/v1/invoices/{number}",
        "/v1/invoices/{number}/payments",
        "/v1/invoices/{number}/pdf",
        "/v1/invoices/{number}/cii",
        "/v1/invoices/{number}/ubl",
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation["security"] == [{"apiKey": []}], path
            assert "401" in operation["responses"], path


# --- keys -----------------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_listed_without_the_key(billed: Billed) -> None:
    database = (billed.workspace.state_dir / KEYS_FILE).read_bytes()
    for key in [billed.admin, *billed.keys.values()]:
        assert key.encode() not in database
        assert key.split("_", 2)[-1].encode() not in database
    records = KeyStore(billed.workspace.state_dir).keys("de-pre")
    assert [record.org for record in records] == ["de-pre"]
    assert all(not record.revoked for record in records)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer ",
        "Bearer not-a-key",
        "Basic dXNlcjpwYXNz",
        "Bearer bbk_000000000000_" + "A" * 43,  # well formed, unknown
        "Bearer " + "x" * 10_000,
    ],
)
def test_no_valid_key_is_401_with_the_same_body(billed: Billed, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = billed.client().get("/v1/invoices", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every operation in the app's OpenAPI document."""
    paths = app.openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], template)


def call(client: TestClient, method: str, path: str, key: str) -> Any:
    if method == "POST":
        return client.post(path, headers=bearer(key), json={"events": []})
    return client.get(path, headers=bearer(key), params={"month": "2026-10"})


def test_a_revoked_key_fails_on_every_endpoint(tmp_path: Path, billed: Billed) -> None:
    store = KeyStore(billed.workspace.state_dir)
    created = store.create("de-pre", ["de-pre"], "to revoke")
    client = billed.client()
    values = {"org": "de-pre", "number": "INV-2026-000001"}
    for method, path in operations(billed.app):
        assert call(client, method, fill(path, values), created.secret_key).status_code == 200
    store.revoke(created.record.key_id)
    for method, path in operations(billed.app):
        response = call(client, method, fill(path, values), created.secret_key)
        assert response.status_code == 401, (method, path)
    assert store.keys("de-pre")[-1].revoked


def test_a_key_store_sees_revocations_and_a_replaced_file_at_the_next_lookup(
    tmp_path: Path,
) -> None:
    """The server keeps a read connection per thread: a key revoked by another process (the
    CLI) fails at the next lookup, and so does every key of a keys file put back from
    another copy, while that copy's own keys work."""
    state = tmp_path / "state"
    server, command_line = KeyStore(state), KeyStore(state)
    kept = command_line.create("acme", ["acme"])
    revoked = command_line.create("acme", ["acme"])
    assert server.authenticate(kept.secret_key) is not None
    assert server.authenticate(revoked.secret_key) is not None
    command_line.revoke(revoked.record.key_id)
    assert server.authenticate(revoked.secret_key) is None
    assert server.authenticate(kept.secret_key) is not None
    other = KeyStore(tmp_path / "other")
    restored = other.create("acme", ["acme"])
    (state / KEYS_FILE).unlink()
    for suffix in ("-wal", "-shm"):
        (state / f"{KEYS_FILE}{suffix}").unlink(missing_ok=True)
    assert server.authenticate(kept.secret_key) is None  # no file: no key
    (tmp_path / "other" / KEYS_FILE).replace(state / KEYS_FILE)
    assert server.authenticate(kept.secret_key) is None
    principal = server.authenticate(restored.secret_key)
    assert principal is not None and principal.org == "acme"


def test_the_rate_limit_answers_429_with_retry_after(billed: Billed) -> None:
    limited = create_app(
        billed.workspace, ApiSettings(rate_limit=RateLimit(per_second=0.5, burst=2))
    )
    client = TestClient(limited)
    statuses = [
        client.get("/v1/organizations", headers=bearer(billed.keys["de-pre"])).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    refused = client.get("/v1/organizations", headers=bearer(billed.keys["de-pre"]))
    assert refused.headers["Retry-After"] == "2"
    assert refused.json()["error"]["code"] == "rate_limited"
    # Another key has its own bucket.
    assert client.get("/v1/organizations", headers=bearer(billed.admin)).status_code == 200


# --- isolation, generated from the OpenAPI document -------------------------------------


def identifiers_of(billed: Billed, org: str) -> set[str]:
    """Every id of ``org``'s objects a response could leak: its id, invoices, credit lots."""
    numbers = {n for n, owner in invoice_orgs(billed.workspace).items() if owner == org}
    lots = {"de-pre-bought", "de-pre-granted"} if org == "de-pre" else set()
    return {org, f"{org} Ltd", *numbers, *lots}


def test_a_key_of_one_organization_gets_nothing_of_another(billed: Billed) -> None:
    """For every operation and every pair of unrelated organizations: the other's objects
    answer 404 (as unknown ones would), and lists never mention them."""
    client = billed.client()
    orgs = invoice_orgs(billed.workspace)
    related = {("fr-post", "team-a")}  # a parent sees its team
    pairs = [(a, b) for a in billed.keys for b in billed.keys if a != b and (a, b) not in related]
    checked = 0
    for a, b in pairs:
        foreign = identifiers_of(billed, b)
        if (b, a) in related:
            foreign.discard(b)  # a team's own record names its parent
        b_numbers = [n for n, owner in orgs.items() if owner == b] or ["INV-2026-999999"]
        for method, template in operations(billed.app):
            for number in b_numbers:
                path = fill(template, {"org": b, "number": number})
                response = call(client, method, path, billed.keys[a])
                if "{" in template:
                    assert response.status_code == 404, (a, method, path, response.text)
                    assert response.json()["error"]["code"] == "not_found"
                else:
                    assert response.status_code == 200, (a, method, path)
                    leaked = {text for text in foreign if text in response.text}
                    assert leaked == set(), (a, method, path, leaked)
                checked += 1
    assert checked > 100


def test_unknown_and_foreign_objects_answer_alike(billed: Billed) -> None:
    client = billed.client()
    key = billed.keys["team-a"]
    for template in ("/v1/organizations/{org}", "/v1/organizations/{org}/credits"):
        foreign = client.get(fill(template, {"org": "de-pre"}), headers=bearer(key))
        unknown = client.get(fill(template, {"org": "nobody"}), headers=bearer(key))
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"]["message"].replace("de-pre", "X") == unknown.json()["error"][
            "message"
        ].replace("nobody", "X")


def test_a_parent_sees_its_teams_and_a_team_not_its_parent(billed: Billed) -> None:
    parent = get(billed, "/v1/organizations", billed.keys["fr-post"])["organizations"]
    assert [o["id"] for o in parent] == ["fr-post", "team-a"]
    assert parent[0]["teams"] == ["team-a"]
    team = get(billed, "/v1/organizations", billed.keys["team-a"])["organizations"]
    assert [o["id"] for o in team] == ["team-a"]
    assert get(billed, "/v1/invoices", billed.keys["team-a"])["invoices"] == []
    usage = get(billed, "/v1/organizations/team-a/usage", billed.keys["fr-post"], month="2026-10")
    assert usage["periods"][0]["period"] == "2026-10"
    everyone = get(billed, "/v1/organizations", billed.admin)["organizations"]
    assert len(everyone) == len(billed.keys)


def test_keys_never_appear_in_logs_or_answers(
    billed: Billed, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    client = billed.client()
    store = KeyStore(billed.workspace.state_dir)
    revoked = store.create("fr-post", ["fr-post"])
    store.revoke(revoked.record.key_id)
    keys = [billed.admin, billed.keys["fr-post"], revoked.secret_key, billed.admin + "x"]
    answers = []
    for key in keys:
        for method, template in operations(billed.app):
            path = fill(template, {"org": "de-pre", "number": "INV-2026-000001"})
            response = call(client, method, path, key)
            answers.append(response.text + json.dumps(dict(response.headers)))
        bad = client.post("/v1/events", headers=bearer(key), content=b"{not json")
        answers.append(bad.text)
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err + "".join(answers)
    for key in keys:
        assert key not in text
        assert key.split("_", 2)[-1][:20] not in text


# --- events in ----------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Callable[[str], tuple[Workspace, TestClient, str]]:
    """A new, unbilled workspace with its app and an admin key."""

    def make(name: str) -> tuple[Workspace, TestClient, str]:
        workspace = write_workspace(
            tmp_path / name, billed_settings(), SMALL_CATALOG, billed_customers()
        )
        orgs = [c.id for c in workspace.customers.customer]
        key = KeyStore(workspace.state_dir).create(None, orgs).secret_key
        return workspace, TestClient(create_app(workspace, UNLIMITED, lambda: TODAY)), key

    return make


# Events as JSON text, exactly as sent: numbers written as a customer writes them.
EVENT_LINES = [
    '{"id":"e1","org":"fr-post","resource":"fr-post/app","meter":"cpu",'
    '"start":"2026-10-05T00:00:00Z","end":"2026-10-05T10:00:00.9Z","quantity":2.50}',
    '{"id":"e2","org":"team-a","resource":"team-a/lb","meter":"egress",'
    '"at":"2026-10-05T12:00:00+02:00","quantity":"250.5","note":{"quantity":7}}',
    '{"id":"e3","org":"de-pre","resource":"de-pre/app","meter":"cpu",'
    '"start":"2026-10-06T00:00:00Z","end":"2026-10-07T03:00:00Z"}',
    '{"id":"e4","org":"us-prov","resource":"us-prov/lb","meter":"egress",'
    '"at":"2026-10-09T00:00:00Z","quantity":123456789012.123456}',
    # the same event as e2, spelled otherwise: a duplicate
    '{"id":"e2","org":"team-a","resource":"team-a/lb","meter":"egress",'
    '"at":"2026-10-05T10:00:00Z","quantity":250.50}',
    # rejects: conflicting duplicate, exponent, naive time, unknown meter, case look-alike
    '{"id":"e1","org":"fr-post","resource":"fr-post/app","meter":"cpu",'
    '"start":"2026-10-05T00:00:00Z","end":"2026-10-05T11:00:00Z","quantity":2.5}',
    '{"id":"e5","org":"fr-post","resource":"r","meter":"egress","at":"2026-10-05T00:00:00Z",'
    '"quantity":1e3}',
    '{"id":"e6","org":"fr-post","resource":"r","meter":"egress","at":"2026-10-05T00:00:00",'
    '"quantity":1}',
    '{"id":"e7","org":"fr-post","resource":"r","meter":"ram","at":"2026-10-05T00:00:00Z"}',
    '{"id":"e8","org":"fr-post","resource":"r","meter":"cpu","start":"2026-10-05T00:00:00Z",'
    '"end":"2026-10-05T01:00:00Z","Quantity":4}',
    '"not an object"',
    '{"id":"e9","org":"nobody","resource":"r","meter":"egress","at":"2026-10-05T00:00:00Z",'
    '"quantity":1}',
]


def batch_body(lines: list[str]) -> bytes:
    return ('{"events":[' + ",".join(lines) + "]}").encode()


def rated_bytes(workspace: Workspace) -> dict[str, bytes]:
    return {
        str(path.relative_to(workspace.rated_dir)): path.read_bytes()
        for path in sorted(workspace.rated_dir.rglob("*.parquet"))
    }


def test_events_through_the_api_rate_to_the_bytes_of_the_same_file(
    fresh: Callable[[str], tuple[Workspace, TestClient, str]], tmp_path: Path
) -> None:
    by_file, _, _ = fresh("file")
    by_api, client, key = fresh("api")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(EVENT_LINES) + "\n")
    summary = ingest(by_file, [path])
    response = client.post("/v1/events", headers=bearer(key), content=batch_body(EVENT_LINES))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (
        (result["accepted"], result["duplicates"], result["rejected"])
        == (
            summary.accepted,
            summary.duplicates,
            summary.rejected,
        )
        == (4, 1, 7)
    )
    assert result["received"] == len(EVENT_LINES)
    assert summary.rejects_path is not None
    file_rejects = [
        json.loads(line) for line in summary.rejects_path.read_text().split("\n") if line
    ]
    assert [(r["index"], r["field"], r["rule"], r["reason"]) for r in result["rejects"]] == [
        (r["line"] - 1, r["field"], r["rule"], r["reason"]) for r in file_rejects
    ]
    rate_months(by_file, [OCTOBER])
    rate_months(by_api, [OCTOBER])
    assert rated_bytes(by_api) == rated_bytes(by_file) != {}


# Events in spellings a serializer would change: line breaks and spaces between tokens,
# an escaped key, non-ASCII text, an escaped id, a number with a trailing zero.
SPELLED_EVENTS = [
    '{\n  "id": "s1",\r\n  "org": "fr-post", "resource": "fr-post/app", "meter": "cpu",\n'
    '  "start": "2026-10-05T00:00:00Z", "end": "2026-10-05T01:00:00Z", "quantity": 2.50\n}',
    '{"id":"s2","org":"team-a","resource":"team-a/lb \u2013 \u00e9t\u00e9 – été",'
    '"meter":"egress","at":"2026-10-05T12:00:00Z","quantit\\u0079":123456789012.000001}',
    '{"id":"s\\u00e9","org":"team-a","resource":"team-a/lb","meter":"egress",'
    '"at":"2026-10-05T12:00:00Z","quantity":"4"}',
    '{"id":"s1","org":"fr-post","resource":"fr-post/app","meter":"cpu",'
    '"start":"2026-10-05T00:00:00Z","end":"2026-10-05T01:00:00Z","quantity":2.5}',
]


def stored_events(workspace: Workspace) -> list[tuple[Any, ...]]:
    files = sorted(str(path) for path in workspace.usage_dir.glob("month=*/*.parquet"))
    return duckdb.sql(
        "SELECT org, id, resource, meter, start_s, end_s, quantity_micro, content_hash "
        f"FROM read_parquet({files}) ORDER BY org, id"
    ).fetchall()


def test_events_reach_the_ingest_as_the_text_they_were_sent_with(
    fresh: Callable[[str], tuple[Workspace, TestClient, str]], tmp_path: Path
) -> None:
    """The API hands the ingest each event's own text (one line: a line break between
    tokens becomes a space), so it reads what a file of those lines would give."""
    by_file, _, _ = fresh("file")
    by_api, client, key = fresh("api")
    body = ('{ "events" :\n[ ' + " ,\n".join(SPELLED_EVENTS) + " ]\n}\n").encode()
    response = client.post("/v1/events", headers=bearer(key), content=body)
    assert response.status_code == 200, response.text
    path = tmp_path / "spelled.jsonl"
    path.write_text(
        "".join(event.replace("\n", " ").replace("\r", " ") + "\n" for event in SPELLED_EVENTS)
    )
    summary = ingest(by_file, [path])
    result = response.json()
    assert (
        (result["accepted"], result["duplicates"], result["rejected"])
        == (
            summary.accepted,
            summary.duplicates,
            summary.rejected,
        )
        == (3, 1, 0)
    )
    assert stored_events(by_api) == stored_events(by_file)
    assert {row[1] for row in stored_events(by_api)} == {"s1", "s2", "sé"}
    # The number under the escaped key, as written: not the double 123456789012.0.
    assert {row[1]: row[6] for row in stored_events(by_api)}["s2"] == 123_456_789_012_000_001
    [batch] = (by_api.state_dir / "api-events").rglob("*.jsonl")
    assert batch.read_text(encoding="utf-8").split("\n")[1] == SPELLED_EVENTS[1]  # as sent
    rate_months(by_file, [OCTOBER])
    rate_months(by_api, [OCTOBER])
    assert rated_bytes(by_api) == rated_bytes(by_file) != {}


def test_the_same_batch_twice_counts_once(
    fresh: Callable[[str], tuple[Workspace, TestClient, str]],
) -> None:
    workspace, client, key = fresh("twice")
    body = batch_body(EVENT_LINES[:4])
    first = client.post("/v1/events", headers=bearer(key), content=body).json()
    rate_months(workspace, [OCTOBER])
    before = rated_bytes(workspace)
    second = client.post("/v1/events", headers=bearer(key), content=body).json()
    assert (first["accepted"], first["duplicates"]) == (4, 0)
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (0, 4, 0)
    rate_months(workspace, [OCTOBER])
    assert rated_bytes(workspace) == before
    # Accepted events are in the usage store once the answer is given: a file of the same
    # events finds them all there.
    again = workspace.root / "again.jsonl"
    again.write_text("\n".join(EVENT_LINES[:4]) + "\n")
    assert ingest(workspace, [again]).duplicates == 4


def test_a_customer_key_posts_only_its_organizations_events(billed: Billed) -> None:
    events = [
        {"id": "own-1", "org": "team-a", "resource": "r", "meter": "egress",
         "at": "2026-11-03T00:00:00Z", "quantity": "1"},
        {"id": "foreign-1", "org": "de-pre", "resource": "r", "meter": "egress",
         "at": "2026-11-03T00:00:00Z", "quantity": "1"},
        {"id": "foreign-2", "org": "nobody", "resource": "r", "meter": "egress",
         "at": "2026-11-03T00:00:00Z", "quantity": "1"},
        # the same id under another organization: another event
        {"id": "own-1", "org": "fr-post", "resource": "r", "meter": "egress",
         "at": "2026-11-03T00:00:00Z", "quantity": "2"},
        # the same organization and id with other content: a conflict
        {"id": "own-1", "org": "team-a", "resource": "r", "meter": "egress",
         "at": "2026-11-03T00:00:00Z", "quantity": "3"},
    ]  # fmt: skip
    response = billed.client().post(
        "/v1/events", headers=bearer(billed.keys["fr-post"]), json={"events": events}
    )
    result = response.json()
    assert result["accepted"] == 2
    foreign, unknown, conflict = result["rejects"]
    # Reasons name lines of the batch as sent: line n is the event at index n - 1.
    assert (conflict["index"], conflict["field"], conflict["id"]) == (4, "id", "own-1")
    assert conflict["reason"] == (
        'id: "own-1" of organization team-a was first seen with different content at line 1'
    )
    assert (foreign["index"], foreign["field"], foreign["id"]) == (1, "org", "foreign-1")
    # The same words as for an organization that does not exist: no existence leak.
    assert foreign["rule"] == unknown["rule"] == "org: unknown organization"
    assert foreign["reason"] == "org: unknown organization: de-pre"
    assert unknown["reason"] == "org: unknown organization: nobody"


def keys_of(workspace: Workspace) -> dict[str, str]:
    """A new key for each organization of ``workspace``."""
    store = KeyStore(workspace.state_dir)
    orgs = [c.id for c in workspace.customers.customer]
    return {org: store.create(org, orgs).secret_key for org in orgs}


def egress_event(event_id: str, org: str, quantity: str) -> dict[str, str]:
    return {"id": event_id, "org": org, "resource": f"{org}/lb", "meter": "egress",
            "at": "2026-11-03T00:00:00Z", "quantity": quantity}  # fmt: skip


def test_another_tenants_id_is_no_conflict_and_no_hint(
    fresh: Callable[[str], tuple[Workspace, TestClient, str]],
) -> None:
    """Ids are each organization's own: de-pre posting an id fr-post already stored, with
    other content, is a new event, and the answer says nothing of fr-post; fr-post posting
    it with other content is still refused, with its index, field and reason."""
    workspace, client, _ = fresh("tenants")
    keys = keys_of(workspace)
    first = client.post("/v1/events", headers=bearer(keys["fr-post"]),
                        json={"events": [egress_event("invoice-77", "fr-post", "1")]})  # fmt: skip
    assert first.json()["accepted"] == 1
    other = client.post("/v1/events", headers=bearer(keys["de-pre"]),
                        json={"events": [egress_event("invoice-77", "de-pre", "5")]})  # fmt: skip
    assert other.status_code == 200
    assert other.json() == {
        "received": 1, "accepted": 1, "duplicates": 0, "rejected": 0, "late": 0, "rejects": []
    }  # fmt: skip
    assert "fr-post" not in other.text
    again = client.post("/v1/events", headers=bearer(keys["de-pre"]),
                        json={"events": [egress_event("invoice-77", "de-pre", "5.0")]})  # fmt: skip
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1)
    own = client.post("/v1/events", headers=bearer(keys["fr-post"]),
                      json={"events": [egress_event("x", "fr-post", "1"),
                                       egress_event("invoice-77", "fr-post", "2")]})  # fmt: skip
    [conflict] = own.json()["rejects"]
    assert (conflict["index"], conflict["id"], conflict["field"]) == (1, "invoice-77", "id")
    assert conflict["rule"] == "id: conflicting duplicate"
    assert conflict["reason"] == (
        'id: "invoice-77" of organization fr-post is already stored with different content'
    )
    rate_months(workspace, [Month(2026, 11)])
    totals = workspace.rated_dir / "month=2026-11" / "totals.parquet"
    rated = duckdb.sql(f"SELECT DISTINCT org FROM read_parquet('{totals}')").fetchall()
    assert sorted(org for (org,) in rated) == ["de-pre", "fr-post"]  # each its own event


@pytest.mark.parametrize(
    "hostile",
    ['evt "1" of organization de-pre', "it's; --", "\\u0065", "\u0435vt-1", "ｅvt-1"],
)
def test_hostile_ids_through_the_api(
    fresh: Callable[[str], tuple[Workspace, TestClient, str]], hostile: str
) -> None:
    """Quotes, escapes and look-alikes (a Cyrillic or fullwidth "e" is not "e"): each id is
    its exact text within its organization, and a reason quotes it as JSON."""
    workspace, client, _ = fresh("hostile")
    keys = keys_of(workspace)
    batch = [egress_event("evt-1", "fr-post", "1"), egress_event(hostile, "fr-post", "1"),
             egress_event(hostile, "fr-post", "1.0"), egress_event(hostile, "team-a", "9"),
             egress_event(hostile, "fr-post", "2")]  # fmt: skip
    result = client.post(
        "/v1/events", headers=bearer(keys["fr-post"]), json={"events": batch}
    ).json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (3, 1, 1)
    [conflict] = result["rejects"]
    assert (conflict["index"], conflict["id"], conflict["field"]) == (4, hostile, "id")
    assert conflict["reason"] == (
        f"id: {json.dumps(hostile, ensure_ascii=False)} of organization fr-post was first "
        "seen with different content at line 2"
    )


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 422, "not valid JSON"),
        (b'{"events": [NaN]}', 422, "NaN is not a JSON value"),
        (b"[]", 422, "JSON object"),
        (b'{"events": {}}', 422, "is a list"),
        (b'{"events": [], "more": 1}', 422, "exactly one field"),
        (b'{"events": [], "events": []}', 422, "exactly one field"),
        (b'{"events": [{}]} {}', 422, "not valid JSON"),
        (b'{"events": [{}]', 422, "not valid JSON"),
        (b'{"events": [{"quantity": Infinity}]}', 422, "Infinity is not a JSON value"),
        (b'{"events": [' + b"{}," * 1_000 + b"{}]}", 422, "at most 1,000 events"),
        (b'{"events": [' + b"[" * 70 + b"]" * 70 + b"]}", 422, "nested deeper"),
        (b"{" + b"[" * 200_000, 422, "not valid JSON"),  # deep where a key should be
        (b"\xff\xfe", 422, "not UTF-8"),
        (b'{"events": ["' + b"x" * 2_000_001 + b'"]}', 413, "larger than 2,000,000 bytes"),
    ],
)
def test_a_bad_batch_is_refused_whole_with_a_clear_body(
    billed: Billed, body: bytes, status: int, words: str
) -> None:
    response = billed.client().post("/v1/events", headers=bearer(billed.admin), content=body)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


EVENT_FIELD = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        ["2026-10-05T00:00:00Z", "2026-10-05T01:00:00.5+02:00", "2026-10-05T00:00:00",
         "fr-post", "team-a", "cpu", "egress", "1", "2.5", "-1", "1e3", "0.0000001"]
    ),
    st.integers(-5, 10**13).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=7).map(str),
)  # fmt: skip
EVENTS = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "org", "resource", "meter", "start", "end", "at", "quantity"]),
        EVENT_FIELD,
    ).map(lambda event: {"id": "x", "org": "fr-post", "resource": "r", **event}),
    max_size=6,
)


@dataclass
class Twins:
    """Two workspaces fed the same batches, one by file, one through the API."""

    root: Path
    by_file: Workspace
    client: TestClient
    key: str
    batches: int = 0


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Twins:
    root = tmp_path_factory.mktemp("twins")
    by_file = write_workspace(root / "file", billed_settings(), SMALL_CATALOG, billed_customers())
    by_api = write_workspace(root / "api", billed_settings(), SMALL_CATALOG, billed_customers())
    key = KeyStore(by_api.state_dir).create(None, []).secret_key
    return Twins(root, by_file, TestClient(create_app(by_api, UNLIMITED, lambda: TODAY)), key)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS)
def test_generated_events_get_the_verdicts_of_the_file_ingest(
    twins: Twins, events: list[dict[str, Any]]
) -> None:
    """Both workspaces see the same batches in the same order (earlier examples included:
    ids already stored make duplicates and conflicts), so every verdict must match."""
    lines = [json.dumps(event) for event in events]
    result = twins.client.post(
        "/v1/events", headers=bearer(twins.key), content=batch_body(lines)
    ).json()
    if not lines:
        assert result["received"] == result["accepted"] == 0
        return
    twins.batches += 1
    path = write_jsonl(twins.root / f"batch-{twins.batches}.jsonl", lines)
    summary = ingest(twins.by_file, [path])
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (
        summary.accepted,
        summary.duplicates,
        summary.rejected,
    )
    file_rejects = (
        [json.loads(line) for line in summary.rejects_path.read_text().split("\n") if line]
        if summary.rejects_path
        else []
    )
    assert [(r["index"], r["reason"]) for r in result["rejects"]] == [
        (r["line"] - 1, r["reason"]) for r in file_rejects
    ]


# --- invoices and payments ------------------------------------------------------------------


def test_invoices_are_listed_with_status_and_filtered(billed: Billed) -> None:
    everything = get(billed, "/v1/invoices", billed.admin)["invoices"]
    by_org = {row["org"]: row for row in everything}
    assert set(by_org) == {"fr-post", "de-pre", "us-prov"}
    assert by_org["fr-post"]["status"] == "open"
    total = by_org["fr-post"]["total_minor"]
    paid = total // 2 - total // 10 + total // 4  # record_payments
    assert by_org["fr-post"]["outstanding_minor"] == total - paid > 0
    assert by_org["fr-post"]["total"] == f"{by_org['fr-post']['total_minor'] / 100:.2f}"
    assert by_org["us-prov"]["status"] == "credited"
    assert by_org["us-prov"]["credit_note"]
    assert (by_org["fr-post"]["period_start"], by_org["fr-post"]["period_end"]) == (
        "2026-10-01",
        "2026-10-31",
    )
    open_only = get(billed, "/v1/invoices", billed.admin, status="open")["invoices"]
    assert [row["org"] for row in open_only] == ["fr-post"]
    assert get(billed, "/v1/invoices", billed.admin, period="2026-09")["invoices"] == []
    assert len(get(billed, "/v1/invoices", billed.admin, period="2026-10")["invoices"]) == 3
    one = get(billed, "/v1/invoices", billed.admin, org="de-pre")["invoices"]
    assert [row["org"] for row in one] == ["de-pre"]
    # Pages: `after` the last number of a page gives the next one.
    first = get(billed, "/v1/invoices", billed.admin, limit=2)
    second = get(billed, "/v1/invoices", billed.admin, limit=2, after=first["next_after"])
    assert [r["number"] for r in first["invoices"] + second["invoices"]] == [
        r["number"] for r in everything
    ]
    assert second["next_after"] is None


def test_overdue_is_dated_by_today(billed: Billed) -> None:
    late = TestClient(create_app(billed.workspace, UNLIMITED, today=lambda: date(2027, 1, 10)))
    response = late.get("/v1/invoices", headers=bearer(billed.keys["fr-post"]), params={})
    assert [row["status"] for row in response.json()["invoices"]] == ["overdue"]


def test_one_invoice_is_its_snapshot_and_its_files_download(billed: Billed) -> None:
    [number] = [n for n, org in invoice_orgs(billed.workspace).items() if org == "fr-post"]
    key = billed.keys["fr-post"]
    detail = get(billed, f"/v1/invoices/{number}", key)
    snapshot = json.loads((billed.workspace.invoices_dir / f"{number}.json").read_text())
    assert detail["document"] == snapshot
    assert detail["summary"]["number"] == number
    client = billed.client()
    for kind, suffix, media in (
        ("pdf", "pdf", "application/pdf"),
        ("cii", "cii.xml", "application/xml"),
        ("ubl", "ubl.xml", "application/xml"),
    ):
        response = client.get(f"/v1/invoices/{number}/{kind}", headers=bearer(key))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert (
            response.content == (billed.workspace.invoices_dir / f"{number}.{suffix}").read_bytes()
        )
    payments = get(billed, f"/v1/invoices/{number}/payments", key)
    assert payments["status"] == "open"
    total = detail["summary"]["total_minor"]
    assert [(m["kind"], m["method"], m["amount_minor"]) for m in payments["movements"]] == [
        ("issued", None, total),
        ("payment", "stripe", -(total // 2)),
        ("charge", "stripe", total // 10),
        ("payment", "bank transfer", -(total // 4)),
    ]


SETTLEMENTS = """
2000-01-01 open Assets:Receivable:Acme EUR
2000-01-01 open Liabilities:Unapplied:Acme EUR
2000-01-01 open Assets:Stripe:Balance EUR
2000-01-01 open Assets:Bank:Operating EUR
2000-01-01 open Income:Usage:Compute EUR
2000-01-01 open Assets:Clearing:Adyen EUR
  connector: "adyen"
2026-11-05 * "Invoice INV-1" ^invoice-INV-1
  txn-id: "invoice:INV-1"
  Assets:Receivable:Acme  30.00 EUR
  Income:Usage:Compute  -30.00 EUR
2026-11-10 * "Stripe payment of invoice INV-1, paid 2.00 too much" ^invoice-INV-1
  Assets:Stripe:Balance  12.00 EUR
  Assets:Receivable:Acme  -10.00 EUR
  Liabilities:Unapplied:Acme  -2.00 EUR
2026-11-11 * "Stripe customer balance settled" ^invoice-INV-1
  Liabilities:Unapplied:Acme  2.00 EUR
  Assets:Receivable:Acme  -2.00 EUR
2026-11-12 * "Adyen payment" ^invoice-INV-1
  Assets:Clearing:Adyen  5.00 EUR
  Assets:Receivable:Acme  -5.00 EUR
2026-11-13 * "Bank transfer" ^invoice-INV-1
  Assets:Bank:Operating  3.00 EUR
  Assets:Receivable:Acme  -3.00 EUR
2026-11-14 * "Stripe refund" ^invoice-INV-1
  Assets:Receivable:Acme  1.00 EUR
  Assets:Stripe:Balance  -1.00 EUR
2026-12-01 * "Paid after today" ^invoice-INV-1
  Assets:Bank:Operating  11.00 EUR
  Assets:Receivable:Acme  -11.00 EUR
"""


def test_the_method_names_the_system_that_settled_not_the_account() -> None:
    """The connector that opened the account, the bank, the customer's balance, or the
    system an account is named after; an overpayment's excess is not how it was paid."""
    entries, errors, _ = beancount_loader.load_string(SETTLEMENTS)
    assert errors == []
    row = InvoiceRow("INV-1", "acme", "Acme", date(2026, 11, 5), None, "EUR", 3000, 1100,
                     Status.OPEN, False, None, "invoice-INV-1", None, None)  # fmt: skip
    found = [(m.kind.value, m.method, m.amount_minor)
             for m in invoice_movements(entries, row, date(2026, 11, 20))]  # fmt: skip
    assert found == [
        ("issued", None, 3000),
        ("payment", "stripe", -1000),
        ("payment", "customer balance", -200),
        ("payment", "adyen", -500),
        ("payment", "bank transfer", -300),
        ("charge", "stripe", 100),
    ]


def test_a_credit_note_is_reached_under_its_number(billed: Billed) -> None:
    [row] = get(billed, "/v1/invoices", billed.keys["us-prov"])["invoices"]
    note = get(billed, f"/v1/invoices/{row['credit_note']}", billed.keys["us-prov"])
    assert note["summary"] is None
    assert note["credit_note_of"] == row["number"]
    assert note["document"]["type"] == "381"
    history = get(billed, f"/v1/invoices/{row['number']}/payments", billed.keys["us-prov"])
    assert [m["kind"] for m in history["movements"]] == ["issued", "credited"]
    assert history["movements"][1]["method"] == f"credit note {row['credit_note']}"
    assert history["outstanding_minor"] == 0


def test_all_payments_of_an_organization_with_their_invoice_and_method(billed: Billed) -> None:
    """Payments, refunds and credit notes of every invoice, read as each invoice's history
    is (one reader): the same movements, the issuances left out, oldest first."""
    [number] = [n for n, org in invoice_orgs(billed.workspace).items() if org == "fr-post"]
    key = billed.keys["fr-post"]
    listed = get(billed, "/v1/organizations/fr-post/payments", key)
    history = get(billed, f"/v1/invoices/{number}/payments", key)["movements"]
    assert listed["org"] == "fr-post" and listed["next_offset"] is None
    shared = ("date", "kind", "amount_minor", "amount", "method", "description")
    assert [{name: payment[name] for name in shared} for payment in listed["payments"]] == [
        movement for movement in history if movement["kind"] != "issued"
    ]
    assert {(p["invoice"], p["org"], p["currency"], p["invoice_status"])
            for p in listed["payments"]} == {(number, "fr-post", "EUR", "open")}  # fmt: skip
    assert [p["date"] for p in listed["payments"]] == ["2026-11-10", "2026-11-12", "2026-11-15"]
    first = get(billed, "/v1/organizations/fr-post/payments", key, limit=2)
    rest = get(billed, "/v1/organizations/fr-post/payments", key, offset=first["next_offset"])
    assert (first["next_offset"], rest["next_offset"]) == (2, None)
    assert first["payments"] + rest["payments"] == listed["payments"]
    # A credit note settles its invoice: the credited movement, named after the note.
    [cancelled] = get(billed, "/v1/invoices", billed.keys["us-prov"])["invoices"]
    [credited] = get(billed, "/v1/organizations/us-prov/payments", billed.keys["us-prov"])[
        "payments"
    ]
    assert (credited["kind"], credited["invoice"], credited["invoice_status"]) == (
        "credited",
        cancelled["number"],
        "credited",
    )
    assert credited["method"] == f"credit note {cancelled['credit_note']}"
    assert credited["amount_minor"] == -cancelled["total_minor"]
    # A team invoiced centrally has none of its own; its parent's list holds them.
    assert get(billed, "/v1/organizations/team-a/payments", key)["payments"] == []
    assert get(billed, "/v1/organizations/de-pre/payments", billed.admin)["payments"] == []
    foreign = billed.client().get("/v1/organizations/fr-post/payments",
                                  headers=bearer(billed.keys["team-a"]))  # fmt: skip
    assert foreign.status_code == 404 and number not in foreign.text


# --- credits ------------------------------------------------------------------------------


def test_credits_show_the_balance_and_lots_with_expiry(billed: Billed) -> None:
    credits = get(billed, "/v1/organizations/de-pre/credits", billed.keys["de-pre"])
    lots = {lot["lot_id"]: lot for lot in credits["lots"]}
    assert lots["de-pre-granted"]["expires"] == "2026-11-30"
    assert lots["de-pre-granted"]["state"] == "expiring"
    assert lots["de-pre-bought"]["expires"] is None
    assert credits["balance_minor"] == sum(lot["remaining_minor"] for lot in lots.values())
    assert credits["held_in_lots_minor"] == credits["balance_minor"]
    assert credits["expiring_minor"] == lots["de-pre-granted"]["remaining_minor"]
    nothing = get(billed, "/v1/organizations/team-a/credits", billed.keys["team-a"])
    assert (nothing["balance_minor"], nothing["lots"]) == (0, [])


# --- usage out ------------------------------------------------------------------------------


def test_usage_drills_down_a_closed_period_and_adds_up(billed: Billed) -> None:
    report = get(billed, "/v1/organizations/fr-post/usage", billed.admin, month="2026-10")
    [period] = report["periods"]
    assert report["provisional"] is False
    assert (period["period"], period["period_start"], period["period_end"]) == (
        "2026-10",
        "2026-10-01",
        "2026-11-01",
    )
    families = {family["family"]: family for family in period["families"]}
    assert set(families) == {"Compute", "Network"}
    [cpu] = families["Compute"]["meters"]
    assert (cpu["meter"], cpu["quantity_unit"], cpu["quantity"]) == ("cpu", "vCPU-second", "72000")
    [resource] = cpu["resources"]
    assert resource["resource"] == "fr-post/app"
    assert [day["day"] for day in resource["days"]] == ["2026-10-05"]
    [egress] = families["Network"]["meters"]
    assert egress["quantity"] == "250.5"
    from decimal import Decimal

    assert sum(Decimal(f["amount"]) for f in period["families"]) == Decimal(period["amount"])
    assert Decimal(cpu["amount"]) == Decimal(72000) * Decimal("0.0000069444")


def test_usage_of_an_open_period_is_not_shown(billed: Billed, tmp_path: Path) -> None:
    november = [
        {"id": "nov-1", "org": "de-pre", "resource": "r", "meter": "egress",
         "at": "2026-11-03T00:00:00Z", "quantity": "1"},
    ]  # fmt: skip
    ingest(billed.workspace, [write_jsonl(tmp_path / "november.jsonl", november)])
    rate_months(billed.workspace, [Month(2026, 11)])
    report = get(billed, "/v1/organizations/de-pre/usage", billed.admin, month="2026-11")
    assert report["periods"] == []
    assert get(billed, "/v1/organizations/de-pre/usage", billed.admin, month="2031-01") == {
        **report,
        "month": "2031-01",
    }


# --- the command line -----------------------------------------------------------------------


def test_api_key_commands_create_list_and_revoke(tmp_path: Path) -> None:
    workspace = write_workspace(
        tmp_path / "ws", billed_settings(), SMALL_CATALOG, billed_customers()
    )
    runner = CliRunner()
    created = runner.invoke(api_key, ["create", "de-pre", "-w", str(workspace.root), "-q"])
    assert created.exit_code == EXIT_OK, created.output
    key = created.output.strip()
    assert KeyStore(workspace.state_dir).authenticate(key) is not None
    admin = runner.invoke(api_key, ["create", "--admin", "-w", str(workspace.root)])
    assert admin.exit_code == EXIT_OK and "admin" in admin.output
    listed = runner.invoke(api_key, ["list", "-w", str(workspace.root)])
    assert key not in listed.output and key.split("_", 2)[-1] not in listed.output
    key_id = key.split("_")[1]
    assert f"{key_id}  de-pre" in listed.output
    revoked = runner.invoke(api_key, ["revoke", key_id, "-w", str(workspace.root)])
    assert revoked.exit_code == EXIT_OK and "revoked" in revoked.output
    assert KeyStore(workspace.state_dir).authenticate(key) is None
    for arguments in (["create", "nobody"], ["create"], ["create", "de-pre", "--admin"],
                      ["revoke", "000000000000"]):  # fmt: skip
        failed = runner.invoke(api_key, [*arguments, "-w", str(workspace.root)])
        assert failed.exit_code == EXIT_ERROR, arguments
        assert "Traceback" not in failed.output


def test_the_keys_database_holds_no_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    created = store.create(None, [])
    with sqlite3.connect(tmp_path / KEYS_FILE) as connection:
        rows = connection.execute("SELECT * FROM api_key").fetchall()
    assert created.secret_key not in repr(rows)


def test_the_api_mounts_beside_the_webhooks(billed: Billed) -> None:
    """The wiring proposed for `beanbill serve`: the API mounted at / after the webhook
    routes of beanbill.sync.serve, which keep answering first."""
    from beanbill.sync.serve import create_app as webhook_app
    from beanbill.sync.state import SqliteSyncState

    server = webhook_app(billed.workspace, [], SqliteSyncState(billed.workspace.state_dir))
    server.mount("/", billed.app)
    client = TestClient(server)  # not entered: the webhook writer thread is not started
    assert client.get("/health").json()["ok"] is True
    assert client.post("/webhooks/stripe", content=b"{}").status_code == 404
    assert client.get("/v1/organizations", headers=bearer(billed.admin)).status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "beanbill customer API"


def test_the_books_are_read_again_when_the_ledger_changes(
    fresh: Callable[[str], tuple[Workspace, TestClient, str]],
) -> None:
    workspace, client, key = fresh("changing")

    def lots() -> list[str]:
        response = client.get("/v1/organizations/de-pre/credits", headers=bearer(key))
        return [lot["lot_id"] for lot in response.json()["lots"]]

    assert lots() == []
    record_credit(workspace, "de-pre", "grant", "5.00", date(2026, 10, 1), None, 10, "first")
    assert lots() == ["first"]
    record_credit(workspace, "de-pre", "grant", "2.00", date(2026, 10, 2), None, 10, "second")
    assert lots() == ["first", "second"]


def test_events_of_a_closed_period_are_kept_and_counted_late(billed: Billed) -> None:
    late = {"id": "late-1", "org": "fr-post", "resource": "fr-post/app", "meter": "egress",
            "at": "2026-10-30T00:00:00Z", "quantity": "1"}  # fmt: skip
    response = billed.client().post(
        "/v1/events", headers=bearer(billed.keys["fr-post"]), json={"events": [late]}
    )
    assert response.json() == {
        "received": 1, "accepted": 1, "duplicates": 0, "rejected": 0, "late": 1, "rejects": []
    }  # fmt: skip
    # The closed period's usage is what was posted, until it is rated and corrected.
    usage = get(billed, "/v1/organizations/fr-post/usage", billed.admin, month="2026-10")
    assert usage["periods"][0]["amount"] == "2.0049968"
