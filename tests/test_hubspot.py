"""The HubSpot connector against Prism serving beanbill's own OpenAPI description of the HubSpot
CRM v3 endpoints it calls (tests/peers/hubspot_openapi.json), one Prism per module.

Prism keeps no state: every answer is one of the document's examples, whatever was sent
before, so no test against Prism alone can show a second upsert finding the company the
first made (the HubSpot peer, tests/peers/hubspot.py, puts a front that remembers before
Prism: its tests are at the end). Idempotency rests on the upsert by the unique property
``beanbill_org_id``; what these tests check is that this is what is sent (``idProperty``,
``id``, ``objectWriteTraceId``, the property created with ``hasUniqueValue``) and that a
retry sends the very same upsert.

Between the connector and Prism a recording proxy keeps every exchange (what was sent is
inspected, not guessed) and, by a plan per request, adds the ``Prefer`` header Prism
chooses its answer by (``code=429``, ``example=daily``), answers in Prism's place what
Prism cannot (a malformed answer), or echoes a batch's inputs as HubSpot would upsert them
(Prism's examples name fixed companies; the echo is the HubSpot peer's upsert). After every
test, no request may have drawn a validation violation from Prism (``sl-violations``): Prism
runs with ``--errors``, and it answers an invalid request with the document's 400 example,
which alone would look like HubSpot refusing a valid one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from beanbill.connectors import hubspot
from beanbill.connectors.hubspot import (
    GROUPS_PATH,
    ID_PROPERTY,
    MAX_COMPANIES,
    PROPERTIES,
    PROPERTIES_PATH,
    UPSERT_PATH,
    HubSpotConnector,
    HubSpotPropertyError,
    company_properties,
    property_input,
)
from beanbill.ports import free_port
from beanbill.rating.config import HubSpotSettings
from beanbill.sync.crm import CompanyBilling, CompanyResult, Crm, InvoiceStatus
from beanbill.sync.retry import PermanentError, RetryPolicy, TransientError
from tests.peers.fault_proxy import Fault, fault_proxy
from tests.peers.hubspot import (
    DOCUMENT,
    Answer,
    Companies,
    Front,
    HubSpotPeer,
    forward,
    front,
    is_built,
    running_hubspot,
    served,
)
from tests.peers.prism import running_prism

TOKEN = "pat-na1-0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5"  # a sentinel: must never leak
WORKSPACE = "ws-test"
GROUP = "beanbill_billing"
GROUP_PATH = f"/crm/v3/properties/companies/groups/{GROUP}"


# --- the recording proxy --------------------------------------------------------------------


class Step(NamedTuple):
    """What the proxy does with one request."""

    prefer: str | None = None  # Prism's choice of answer, e.g. "code=429"
    answer: tuple[int, bytes] | None = None  # answered here, never forwarded
    echo: bool = False  # forwarded (validated by Prism), answered with its inputs upserted


Plan = Callable[[int, str, str], Step]  # (request number from 1, method, path) → step


def forward_as_sent(number: int, method: str, path: str) -> Step:
    return Step()


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    status: int
    violations: str | None  # Prism's sl-violations header: the request broke the document

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None


@dataclass
class Recorder:
    upstream: str
    url: str = ""
    plan: Plan = forward_as_sent
    exchanges: list[Exchange] = field(default_factory=list)
    companies: Companies = field(default_factory=Companies)  # as the HubSpot peer keeps them
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, plan: Plan = forward_as_sent) -> None:
        with self.lock:
            self.plan = plan
            self.exchanges = []

    def step(self, method: str, path: str) -> tuple[int, Step]:
        with self.lock:
            number = len(self.exchanges) + 1
            # Reserve the number: a placeholder replaced once answered.
            self.exchanges.append(Exchange(method, path, {}, b"", 0, None))
            return number, self.plan(number, method, path)

    def record(self, number: int, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges[number - 1] = exchange

    def requests(self, method: str | None = None, path: str | None = None) -> list[Exchange]:
        return [
            exchange
            for exchange in self.exchanges
            if (method is None or exchange.method == method)
            and (path is None or exchange.path.split("?")[0] == path)
        ]


def _handler(recorder: Recorder) -> type[Front]:
    class Handler(Front):
        def answer(self, raw: bytes) -> Answer:
            number, step = recorder.step(self.command, self.path)
            sent = self.sent_headers()
            violations = None
            if step.answer is not None:
                status, body = step.answer
                headers = {"Content-Type": "application/json"}
            else:
                status, body, headers, violations = forward(
                    recorder.upstream, self.command, self.path, sent, raw, step.prefer
                )
                if step.echo and status == 200 and violations is None:
                    body = recorder.companies.upsert(raw)
            exchange = Exchange(self.command, self.path, sent, raw, status, violations)
            recorder.record(number, exchange)
            return Answer(status, body, headers)

    return Handler


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prism serving the document, one per module (its log next to the test's files)."""
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    with running_prism(DOCUMENT, log) as url:
        yield url


def recording(upstream: str) -> contextlib.AbstractContextManager[Recorder]:
    """A recording proxy before ``upstream``, served on loopback."""
    recorder = Recorder(upstream)
    return served(recorder, _handler(recorder))


@pytest.fixture(scope="module")
def recorder_server(prism: str) -> Iterator[Recorder]:
    with recording(prism) as recorder:
        yield recorder


@pytest.fixture
def recorder(recorder_server: Recorder) -> Iterator[Recorder]:
    """The proxy, emptied for this test; afterwards, every request it forwarded must have
    passed Prism's validation against the document."""
    recorder_server.reset()
    yield recorder_server
    broken = [
        f"{exchange.method} {exchange.path}: {exchange.violations}"
        for exchange in recorder_server.exchanges
        if exchange.violations is not None
    ]
    assert broken == [], "requests the document refuses:\n" + "\n".join(broken)


@pytest.fixture
def waits() -> list[float]:
    """The waits the connector asked for between tries (nothing sleeps in these tests)."""
    return []


Connect = Callable[..., HubSpotConnector]


@pytest.fixture
def connect(recorder: Recorder, waits: list[float]) -> Iterator[Connect]:
    made: list[HubSpotConnector] = []

    def make(
        batch_size: int = 100, url: str | None = None, attempts: int = 3, timeout: int = 5
    ) -> HubSpotConnector:
        settings = HubSpotSettings(
            api_base=url or recorder.url, batch_size=batch_size, timeout_seconds=timeout
        )
        policy = RetryPolicy(attempts=attempts, base_seconds=0.01, max_wait_seconds=0.02)
        connector = HubSpotConnector(settings, TOKEN, WORKSPACE, policy=policy, sleep=waits.append)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


def plan_of(**steps: Step) -> Plan:
    """A plan by request number (``r1=Step(...)``); other requests are forwarded as sent."""

    def plan(number: int, method: str, path: str) -> Step:
        return steps.get(f"r{number}", Step())

    return plan


def billing(org: str, name: str | None = None, currency: str = "EUR", **changes: Any) -> Any:
    """One organization's figures: ordinary ones, ``changes`` applied (any type: hostile
    inputs are built here too)."""
    values: dict[str, Any] = {
        "org": org,
        "name": name or f"{org.capitalize()} Ltd",
        "country": "FR",
        "currency": currency,
        "as_of": date(2026, 11, 30),
        "balance_due_minor": 12_000,
        "overdue_minor": 0,
        "overdue_days": 0,
        "last_invoice_number": "INV-2026-000042",
        "last_invoice_date": date(2026, 11, 5),
        "last_invoice_amount_minor": 12_000,
        "last_invoice_status": InvoiceStatus.OPEN,
        "credit_balance_minor": 0,
        "credit_soonest_expiry": None,
        "consumption_30_days_minor": 9_999,
    }
    values.update(changes)
    return CompanyBilling(**values)


def inputs_of(exchange: Exchange) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = exchange.body["inputs"]
    return inputs


def all_text(results: list[CompanyResult]) -> str:
    return "\n".join(str(result) for result in results)


# --- Prism holds requests to the document ---------------------------------------------------


def test_prism_refuses_a_request_the_document_does_not_allow(prism: str) -> None:
    """Proof that the suite's check means something: requests HubSpot's reference does not
    allow draw a violation, not an answer as if they were valid."""
    upsert = f"{prism}{UPSERT_PATH}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    item = {"idProperty": ID_PROPERTY, "id": "acme", "properties": {"name": "Acme"}}
    invalid = [
        ({"inputs": [{**item, "bogus": 1}]}, bearer),  # a field HubSpot does not take
        ({"inputs": [{**item, "properties": {"beanbill_balance_due": 1.5}}]}, bearer),
        ({"inputs": [item] * 101}, bearer),  # more than 100 inputs
        ({"inputs": [item]}, {}),  # no token
    ]
    for body, headers in invalid:
        answer = httpx.post(upsert, json=body, headers=headers, timeout=10)
        assert answer.status_code >= 400, body
        assert "sl-violations" in answer.headers, body
    valid = httpx.post(upsert, json={"inputs": [item]}, headers=bearer, timeout=10)
    assert valid.status_code == 200
    assert "sl-violations" not in valid.headers


def validator_of(jsonschema_rs: Any, document: Any, media: Any) -> Any:
    """A validator of one answer's JSON, by the document's schema for it."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **media["schema"],
        "components": document["components"],
    }
    return jsonschema_rs.validator_for(schema)


def test_the_documents_examples_match_their_schemas() -> None:
    """Prism answers with the examples as written, unchecked: check them here."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    document = json.loads(DOCUMENT.read_text())
    problems = []
    checked = 0
    responses = [
        (f"{method} {path} {status}", response)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
    ] + list(document["components"]["responses"].items())
    for where, response in responses:  # a shared one ($ref) is checked once, by its name
        for media in response.get("content", {}).values():
            validator = validator_of(jsonschema_rs, document, media)
            for name, example in media.get("examples", {}).items():
                checked += 1
                for error in validator.iter_errors(example["value"]):
                    problems.append(f"{where} {name}: {error}")
    assert checked > 20
    assert problems == []


# --- check: the properties ------------------------------------------------------------------


def test_check_creates_the_group_and_every_property_of_a_new_portal(
    recorder: Recorder, connect: Connect
) -> None:
    recorder.reset(
        lambda number, method, path: Step(
            prefer="code=404"
            if (method, path) == ("GET", GROUP_PATH)
            else "example=hubspot-defaults"
            if method == "GET"
            else None
        )
    )
    connect().check()
    sent = [(exchange.method, exchange.path.split("?")[0]) for exchange in recorder.exchanges]
    assert sent == [
        ("GET", GROUP_PATH),
        ("POST", "/crm/v3/properties/companies/groups"),
        ("GET", PROPERTIES_PATH),
        *[("POST", PROPERTIES_PATH)] * len(PROPERTIES),
    ]
    assert recorder.exchanges[1].body == {"name": GROUP, "label": "Beanbill billing",
                                          "displayOrder": -1}  # fmt: skip
    assert recorder.exchanges[2].path == f"{PROPERTIES_PATH}?archived=false"
    created = {exchange.body["name"]: exchange.body for exchange in recorder.exchanges[3:]}
    assert list(created) == [definition.name for definition in PROPERTIES]
    key = created[ID_PROPERTY]
    assert (key["type"], key["fieldType"], key["hasUniqueValue"]) == ("string", "text", True)
    assert [name for name, body in created.items() if body["hasUniqueValue"]] == [ID_PROPERTY]
    assert {body["groupName"] for body in created.values()} == {GROUP}
    assert created["beanbill_balance_due"]["type"] == "number"
    assert created["beanbill_last_invoice_date"]["type"] == "date"
    status = created["beanbill_last_invoice_status"]
    assert [option["value"] for option in status["options"]] == [
        "open", "overdue", "paid", "credited"
    ]  # fmt: skip
    for exchange in recorder.exchanges:
        assert exchange.headers["authorization"] == f"Bearer {TOKEN}"


def test_check_creates_nothing_when_everything_exists(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(plan_of(r2=Step(prefer="example=all-present")))
    connect().check()
    assert [exchange.method for exchange in recorder.exchanges] == ["GET", "GET"]


def test_check_creates_only_the_missing_property(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(plan_of(r2=Step(prefer="example=all-but-balance-due")))
    connect().check()
    created = recorder.requests("POST")
    assert [exchange.body["name"] for exchange in created] == ["beanbill_balance_due"]


def test_check_reads_a_property_another_run_created_meanwhile(
    recorder: Recorder, connect: Connect
) -> None:
    recorder.reset(
        plan_of(r2=Step(prefer="example=all-but-balance-due"), r3=Step(prefer="code=409"))
    )
    connect().check()
    assert [(exchange.method, exchange.status) for exchange in recorder.exchanges] == [
        ("GET", 200), ("GET", 200), ("POST", 409), ("GET", 200)
    ]  # fmt: skip
    assert recorder.exchanges[3].path.startswith(f"{PROPERTIES_PATH}/beanbill_balance_due")


def test_check_refuses_an_id_property_that_is_not_unique(
    recorder: Recorder, connect: Connect
) -> None:
    """Upserting by a property HubSpot does not keep unique could update several companies:
    refused, and nothing created (HubSpot cannot make it unique afterwards)."""
    recorder.reset(plan_of(r2=Step(prefer="example=key-not-unique")))
    with pytest.raises(HubSpotPropertyError, match="does not require unique values"):
        connect().check()
    assert recorder.requests("POST") == []


def test_check_raises_what_hubspot_answered(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(lambda number, method, path: Step(prefer="code=500"))
    with pytest.raises(TransientError, match="internal error"):
        connect(attempts=2).check()
    assert len(recorder.exchanges) == 2
    recorder.reset(lambda number, method, path: Step(prefer="code=403"))
    with pytest.raises(PermanentError, match="required scopes") as refused:
        connect().check()
    assert len(recorder.exchanges) == 1
    assert TOKEN not in str(refused.value)


# --- upsert: what is sent -------------------------------------------------------------------


def test_upsert_is_by_the_unique_property_and_maps_results_back(
    recorder: Recorder, connect: Connect
) -> None:
    connector = connect()
    assert isinstance(connector, Crm)
    results = connector.upsert_companies([billing("acme"), billing("globex")])
    # The example answers globex first: results follow the order given, not HubSpot's.
    assert results == [CompanyResult("acme", "1001", None), CompanyResult("globex", "1002", None)]
    (exchange,) = recorder.exchanges
    assert (exchange.method, exchange.path) == ("POST", UPSERT_PATH)
    assert exchange.headers["authorization"] == f"Bearer {TOKEN}"
    for item, org in zip(inputs_of(exchange), ["acme", "globex"], strict=True):
        assert item["idProperty"] == ID_PROPERTY
        assert item["id"] == org
        assert item["objectWriteTraceId"] == org
        assert item["properties"][ID_PROPERTY] == org
        assert item["properties"]["beanbill_workspace_id"] == WORKSPACE


def test_amounts_are_exact_decimal_strings_and_dates_iso(
    recorder: Recorder, connect: Connect
) -> None:
    huge_minor = 10**34 + 12_345  # 35 digits: beyond a float's 17
    acme = billing(
        "acme", balance_due_minor=huge_minor, overdue_minor=5, overdue_days=12,
        credit_balance_minor=-150, credit_soonest_expiry=date(2027, 1, 1),
        last_invoice_status=InvoiceStatus.OVERDUE, consumption_30_days_minor=0,
    )  # fmt: skip
    globex = billing(
        "globex", currency="JPY", balance_due_minor=123_456, last_invoice_number=None,
        last_invoice_date=None, last_invoice_amount_minor=None, last_invoice_status=None,
        consumption_30_days_minor=0,
    )  # fmt: skip
    results = connect().upsert_companies([acme, globex])
    assert [result.error for result in results] == [None, None]
    (exchange,) = recorder.exchanges
    sent = {item["id"]: item["properties"] for item in inputs_of(exchange)}
    assert sent["acme"] == {
        "name": "Acme Ltd",
        ID_PROPERTY: "acme",
        "beanbill_workspace_id": WORKSPACE,
        "beanbill_currency": "EUR",
        "beanbill_as_of": "2026-11-30",
        "beanbill_balance_due": "100000000000000000000000000000123.45",
        "beanbill_overdue_amount": "0.05",
        "beanbill_overdue_days": "12",
        "beanbill_last_invoice_number": "INV-2026-000042",
        "beanbill_last_invoice_date": "2026-11-05",
        "beanbill_last_invoice_amount": "120.00",
        "beanbill_last_invoice_status": "overdue",
        "beanbill_credit_balance": "-1.50",
        "beanbill_credit_soonest_expiry": "2027-01-01",
        "beanbill_consumption_30_days": "0.00",
    }
    japan = sent["globex"]
    assert japan["beanbill_balance_due"] == "123456"  # JPY has no minor unit
    assert japan["beanbill_consumption_30_days"] == "0"
    for cleared in ("number", "date", "amount", "status"):
        assert japan[f"beanbill_last_invoice_{cleared}"] == ""  # "" clears the value
    # On the wire, every value is a JSON string: nothing was ever a float.
    assert b'"beanbill_balance_due":"100000000000000000000000000000123.45"' in exchange.raw
    assert set(PROPERTIES_BY_NAME) == set(sent["acme"]) - {"name"}


PROPERTIES_BY_NAME = {definition.name: definition for definition in PROPERTIES}


def test_batches_are_split_at_batch_size(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(
        plan_of(
            r1=Step(prefer="example=acme-globex"),
            r2=Step(prefer="example=initech-umbrella"),
            r3=Step(prefer="example=hooli"),
        )
    )
    orgs = ["acme", "globex", "initech", "umbrella", "hooli"]
    results = connect(batch_size=2).upsert_companies([billing(org) for org in orgs])
    assert [(result.org, result.remote_id, result.error) for result in results] == [
        ("acme", "1001", None), ("globex", "1002", None), ("initech", "1003", None),
        ("umbrella", "1004", None), ("hooli", "1005", None),
    ]  # fmt: skip
    assert [[item["id"] for item in inputs_of(exchange)] for exchange in recorder.exchanges] == [
        ["acme", "globex"], ["initech", "umbrella"], ["hooli"]
    ]  # fmt: skip


def test_a_batch_never_exceeds_100_inputs(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(lambda number, method, path: Step(echo=True))
    companies = [billing(f"org-{index:03}") for index in range(250)]
    results = connect().upsert_companies(companies)
    assert [len(inputs_of(exchange)) for exchange in recorder.exchanges] == [100, 100, 50]
    assert [result.org for result in results] == [company.org for company in companies]
    assert all(result.error is None and result.remote_id for result in results)


def test_too_many_companies_in_one_call_are_refused_before_sending(
    recorder: Recorder, connect: Connect
) -> None:
    company = billing("acme")
    with pytest.raises(PermanentError, match="at most"):
        connect().upsert_companies([company] * (MAX_COMPANIES + 1))
    assert recorder.exchanges == []


# --- upsert: what HubSpot answers -----------------------------------------------------------


def test_rate_limit_is_retried_after_hubspots_interval(
    recorder: Recorder, connect: Connect, waits: list[float]
) -> None:
    recorder.reset(plan_of(r1=Step(prefer="code=429")))
    results = connect().upsert_companies([billing("acme"), billing("globex")])
    assert [result.error for result in results] == [None, None]
    assert [exchange.status for exchange in recorder.exchanges] == [429, 200]
    # No Retry-After: X-HubSpot-RateLimit-Interval-Milliseconds (10000) says how long.
    assert waits == [10.0]
    first, second = recorder.exchanges
    assert first.raw == second.raw  # the retry is the very same upsert


def test_server_errors_and_locks_are_retried(
    recorder: Recorder, connect: Connect, waits: list[float]
) -> None:
    recorder.reset(plan_of(r1=Step(prefer="code=500"), r2=Step(prefer="code=423")))
    results = connect().upsert_companies([billing("acme"), billing("globex")])
    assert [result.error for result in results] == [None, None]
    assert [exchange.status for exchange in recorder.exchanges] == [500, 423, 200]
    assert waits[1] == 2.0  # HubSpot's record lock lasts 2 s


def test_retries_are_bounded_and_stop_the_run(
    recorder: Recorder, connect: Connect, waits: list[float]
) -> None:
    recorder.reset(lambda number, method, path: Step(prefer="code=500"))
    results = connect(batch_size=1, attempts=3).upsert_companies(
        [billing("acme"), billing("globex")]
    )
    assert len(recorder.exchanges) == 3  # the first batch, three times; the second not sent
    assert len(waits) == 2
    assert results[0].remote_id is None
    assert results[0].error is not None and results[0].error.startswith("internal error")
    assert "HubSpot HTTP 500" in results[0].error
    assert results[1].error is not None and results[1].error.startswith("not sent:")


def test_the_daily_limit_is_not_retried_now(
    recorder: Recorder, connect: Connect, waits: list[float]
) -> None:
    recorder.reset(lambda number, method, path: Step(prefer="code=429, example=daily"))
    results = connect(batch_size=1).upsert_companies([billing("acme"), billing("globex")])
    assert len(recorder.exchanges) == 1
    assert waits == []
    assert results[0].error is not None
    assert results[0].error.startswith("You have reached your daily limit.")
    assert results[1].error is not None and "not sent" in results[1].error


def test_a_migration_longer_than_a_run_is_not_waited_for(
    recorder: Recorder, connect: Connect, waits: list[float]
) -> None:
    recorder.reset(lambda number, method, path: Step(prefer="code=477"))
    (result,) = connect().upsert_companies([billing("acme")])
    assert len(recorder.exchanges) == 1
    assert waits == []
    assert result.error is not None and "asks to wait 3600 s" in result.error


@pytest.mark.parametrize(("code", "message"), [
    ("400", "Property values were not valid"),
    ("409", "Conflict: a company already has beanbill_org_id acme."),
])  # fmt: skip
def test_a_refused_batch_is_a_dead_letter_with_hubspots_message(
    recorder: Recorder, connect: Connect, code: str, message: str
) -> None:
    recorder.reset(plan_of(r1=Step(prefer=f"code={code}"), r2=Step(echo=True)))
    results = connect(batch_size=2).upsert_companies(
        [billing("acme"), billing("globex"), billing("initech")]
    )
    assert [exchange.status for exchange in recorder.exchanges] == [int(code), 200]  # no retry
    for refused in results[:2]:
        assert refused.remote_id is None
        assert refused.error is not None and refused.error.startswith(message)
        assert f"HubSpot HTTP {code}" in refused.error and "correlationId" in refused.error
    # A refused batch stops nothing: the next one is sent and upserted.
    assert results[2].error is None and results[2].remote_id is not None


def test_multi_status_maps_each_error_to_its_company(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(plan_of(r1=Step(prefer="code=207")))
    acme, globex = connect().upsert_companies([billing("acme"), billing("globex")])
    assert acme == CompanyResult("acme", "1001", None)
    assert globex.remote_id is None
    assert globex.error is not None and globex.error.startswith("Property values were not valid")


def test_a_refused_token_stops_the_run_and_never_shows(
    recorder: Recorder, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.reset(lambda number, method, path: Step(prefer="code=401"))
    with caplog.at_level(logging.DEBUG):
        results = connect(batch_size=1).upsert_companies([billing("acme"), billing("globex")])
    assert len(recorder.exchanges) == 1
    assert results[0].error is not None
    assert results[0].error.startswith("Authentication credentials not found")
    assert results[1].error is not None and results[1].error.startswith("not sent")
    assert TOKEN not in all_text(results) + caplog.text


def test_lost_answers_are_retried_with_the_same_upsert(
    recorder: Recorder, connect: Connect, waits: list[float]
) -> None:
    """The network drops the request, then the answer (HubSpot did upsert), then stalls
    past the timeout, then HubSpot fails after upserting: each try sends the same upsert by
    unique property, which HubSpot applies to the same companies."""
    faults = {1: Fault.DROP_BEFORE, 2: Fault.DROP_AFTER, 3: Fault.STALL_AFTER,
              4: Fault.ERROR_AFTER}  # fmt: skip
    with fault_proxy(
        recorder.url, lambda number, method, path: faults.get(number, Fault.NONE), 1.5
    ) as proxy:
        connector = connect(url=proxy.url, attempts=5, timeout=1)  # type: ignore[attr-defined]
        results = connector.upsert_companies([billing("acme"), billing("globex")])
    assert results == [CompanyResult("acme", "1001", None), CompanyResult("globex", "1002", None)]
    assert len(waits) == 4
    upserts = recorder.requests("POST", UPSERT_PATH)
    assert len(upserts) == 4  # the first never reached HubSpot
    assert len({exchange.raw for exchange in upserts}) == 1


@pytest.mark.parametrize(("status", "body"), [
    (200, b"<html>gateway</html>"),
    (200, b"[]"),
    (200, b'{"results": "none"}'),
    (200, b'{"status": "COMPLETE", "results": [{"id": "1", "properties": {}}]}'),
    (200, b'{"results": [{"id": "not-a-number", "properties": {"beanbill_org_id": "acme"}}]}'),
    (200, b'{"results": [{"id": "7", "properties": {"beanbill_org_id": ["acme"]}}]}'),
    (200, b'{"results": [{"id": "7", "properties": {"beanbill_org_id": "stranger"}}]}'),
    (502, b"<html>Bad gateway</html>"),
    (200, b'{"results": [1, 2, 3]}'),
])  # fmt: skip
def test_a_malformed_answer_is_an_error_not_a_crash(
    recorder: Recorder, connect: Connect, status: int, body: bytes
) -> None:
    recorder.reset(lambda number, method, path: Step(answer=(status, body)))
    results = connect(attempts=2).upsert_companies([billing("acme"), billing("globex")])
    assert len(recorder.exchanges) == 2  # retried once (an upsert is safe to repeat)
    assert [result.org for result in results] == ["acme", "globex"]
    for result in results:
        assert result.remote_id is None and result.error


def test_an_oversized_answer_is_not_read_whole(
    recorder: Recorder, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot, "MAX_ANSWER_BYTES", 1_000)
    padding = json.dumps({"status": "COMPLETE", "results": [], "links": {"x": "y" * 5_000}})
    recorder.reset(lambda number, method, path: Step(answer=(200, padding.encode())))
    (result,) = connect(attempts=1).upsert_companies([billing("acme")])
    assert result.error is not None and "exceeds 1000 bytes" in result.error


@pytest.mark.parametrize(("status", "body"), [
    (302, b""),
    (404, b'{"status": "error", "message": "Not found", "category": "OBJECT_NOT_FOUND"}'),
])  # fmt: skip
def test_a_wrong_endpoint_stops_the_run(
    recorder: Recorder, connect: Connect, status: int, body: bytes
) -> None:
    recorder.reset(lambda number, method, path: Step(answer=(status, body)))
    first, second = connect(batch_size=1).upsert_companies([billing("acme"), billing("globex")])
    assert len(recorder.exchanges) == 1
    assert first.error is not None and f"HubSpot HTTP {status}" in first.error
    assert second.error is not None and second.error.startswith("not sent: an earlier batch")


def test_an_answer_silent_about_a_company_leaves_it_an_error(
    recorder: Recorder, connect: Connect
) -> None:
    recorder.reset(plan_of(r1=Step(prefer="example=hooli")))
    hooli, other = connect().upsert_companies([billing("hooli"), billing("pied-piper")])
    assert hooli == CompanyResult("hooli", "1005", None)
    assert other.remote_id is None
    assert other.error == "HubSpot's answer says nothing about this company"


# --- hostile inputs -------------------------------------------------------------------------


def test_hostile_inputs_are_refused_before_sending(recorder: Recorder, connect: Connect) -> None:
    recorder.reset(lambda number, method, path: Step(echo=True))
    quoted = 'Acme "Rockets" <b>&</b> \\ O\'Brien — Zürich 東京'
    companies = [
        billing("acme", name=quoted),  # quotes and markup are text: sent exactly
        billing("newline", name="Evil\nCorp"),
        billing("nul", name="Evil\x00Corp"),
        billing("bidi", name="Evil\u202ecorp"),
        billing("blank", name="   "),
        billing("long", name="x" * 201),
        billing("huge", balance_due_minor=10**40),
        billing("float", balance_due_minor=1.5),
        billing("boolean", overdue_minor=True),
        billing("negative-days", overdue_days=-1),
        billing("timestamp", as_of=datetime(2026, 11, 30, 12, 0)),
        billing("currency", currency="XXX"),
        billing("status", last_invoice_status="paid"),
        billing("number", last_invoice_number="INV\r\nBcc: x"),
        billing("bad org id"),
        billing("o" * 65),
        billing("acme", name="Acme again"),  # given twice: the first wins
        "not a company",
        billing("globex"),
    ]
    results = connect().upsert_companies(companies)
    assert len(results) == len(companies)
    (exchange,) = recorder.exchanges
    sent = {item["id"]: item["properties"] for item in inputs_of(exchange)}
    assert list(sent) == ["acme", "globex"]
    assert sent["acme"]["name"] == quoted
    assert results[0].error is None and results[-1].error is None
    for result in results[1:-1]:
        assert result.remote_id is None
        assert result.error is not None and result.error.startswith("not sent:"), result
    assert "given twice" in (results[-3].error or "")


def test_nothing_is_sent_when_no_company_can_be_sent(recorder: Recorder, connect: Connect) -> None:
    results = connect().upsert_companies([billing("acme", name="a\tb")])
    assert recorder.exchanges == []
    assert results[0].error is not None and "control" in results[0].error


def test_the_token_never_shows(
    recorder: Recorder, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in a refusal, a network error, a log line, the connector's repr; not even when a
    peer echoes it back."""
    echoed = json.dumps({"message": f"bad header Authorization: Bearer {TOKEN}"}).encode()
    recorder.reset(lambda number, method, path: Step(answer=(400, echoed)))
    texts = []
    with caplog.at_level(logging.DEBUG):
        texts.append(all_text(connect().upsert_companies([billing("acme")])))
        unreachable = connect(url=f"http://127.0.0.1:{free_port()}", attempts=2)
        texts.append(all_text(unreachable.upsert_companies([billing("acme")])))
        texts.append(repr(unreachable))
        with pytest.raises(TransientError) as raised:
            unreachable.check()
        texts.append(str(raised.value))
    assert "[token]" in texts[0]
    assert "unreachable" in texts[1]
    assert TOKEN not in "\n".join(texts) + caplog.text


def test_a_malformed_token_is_refused_without_quoting_it() -> None:
    secret = "pat-na1-secret value\n"
    with pytest.raises(PermanentError) as refused:
        HubSpotConnector(HubSpotSettings(), secret, WORKSPACE)
    assert "secret" not in str(refused.value)
    assert "HUBSPOT_TOKEN" in str(refused.value)


# --- the HubSpot peer: Prism behind a front that remembers (tests/peers/hubspot.py) ---------


@pytest.fixture
def peer(prism: str) -> Iterator[HubSpotPeer]:
    """A new portal: the peer's front before this module's Prism."""
    with front(prism) as made:
        yield made


@pytest.fixture
def before_peer(peer: HubSpotPeer) -> Iterator[Recorder]:
    """The recording proxy before the peer: what the connector sends it, and its answers."""
    with recording(peer.url) as recorder:
        yield recorder


BEARER = {"Authorization": f"Bearer {TOKEN}"}
ACME = {"idProperty": ID_PROPERTY, "id": "acme", "properties": {"name": "Acme"}}


def test_the_peer_remembers_what_check_created(before_peer: Recorder, connect: Connect) -> None:
    """A second run's check finds the group and every property: it creates nothing."""
    connect(url=before_peer.url).check()
    created = [exchange.status for exchange in before_peer.requests("POST")]
    assert created == [201] * (1 + len(PROPERTIES))
    before_peer.reset()
    connect(url=before_peer.url).check()
    second = [
        (exchange.method, exchange.path, exchange.status) for exchange in before_peer.exchanges
    ]
    assert second == [("GET", GROUP_PATH, 200), ("GET", f"{PROPERTIES_PATH}?archived=false", 200)]


def test_the_peer_upserts_by_the_unique_property(peer: HubSpotPeer, connect: Connect) -> None:
    connector = connect(url=peer.url)
    connector.check()
    first = connector.upsert_companies([billing("acme"), billing("globex")])
    paid = billing("acme", balance_due_minor=0, last_invoice_number=None, last_invoice_date=None,
                   last_invoice_amount_minor=None, last_invoice_status=None)  # fmt: skip
    (again,) = connector.upsert_companies([paid])
    assert again == CompanyResult("acme", first[0].remote_id, None)  # the same company
    held = peer.companies()
    assert set(held) == {"acme", "globex"}
    assert held["acme"]["beanbill_balance_due"] == "0.00"
    assert held["acme"]["beanbill_last_invoice_number"] == ""  # "" cleared it
    assert held["globex"]["beanbill_balance_due"] == "120.00"


def test_the_peer_refuses_in_hubspots_words_what_prism_flags(peer: HubSpotPeer) -> None:
    """Stricter than Prism's default, never more lenient: a request Prism flags is refused
    (never answered from the examples or the state), its violation named."""
    upsert = f"{peer.url}{UPSERT_PATH}"
    bogus = httpx.post(upsert, json={"inputs": [{**ACME, "bogus": 1}]}, headers=BEARER)
    assert bogus.status_code == 400
    assert bogus.json()["category"] == "VALIDATION_ERROR"
    assert "'bogus'" in bogus.json()["message"]
    anonymous = httpx.post(upsert, json={"inputs": [ACME]})
    assert anonymous.status_code == 401
    assert anonymous.json()["category"] == "INVALID_AUTHENTICATION"
    misnamed = httpx.get(f"{peer.url}{GROUPS_PATH}/Not-A-Group", headers=BEARER)
    assert misnamed.status_code == 400 and "path.groupname" in misnamed.json()["message"]
    # Valid by the document, not on this portal: no unique key yet, a property it lacks.
    unknown = {**ACME, "properties": {"name": "Acme", "nope": "1"}}
    lacking = httpx.post(upsert, json={"inputs": [unknown]}, headers=BEARER)
    assert lacking.status_code == 400
    assert "INVALID_ID_PROPERTY" in lacking.json()["message"]
    assert "PROPERTY_DOESNT_EXIST" in lacking.json()["message"]
    assert peer.companies() == {}
    groupless = property_input(PROPERTIES[0], GROUP)  # before its group exists
    orphan = httpx.post(f"{peer.url}{PROPERTIES_PATH}", json=groupless, headers=BEARER)
    assert orphan.status_code == 400 and GROUP in orphan.json()["message"]
    assert peer.properties == {}


def test_the_peers_own_answers_have_the_documents_shapes(
    peer: HubSpotPeer, connect: Connect
) -> None:
    """What the front answers from its state (not Prism's examples), checked like them."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    document = json.loads(DOCUMENT.read_text())
    group = f"{GROUPS_PATH}/{{groupName}}"
    one = f"{PROPERTIES_PATH}/{{propertyName}}"
    answers = [("get", group, httpx.get(f"{peer.url}{GROUP_PATH}", headers=BEARER))]
    connect(url=peer.url).check()
    upsert = {"inputs": [{**ACME, "properties": company_properties(billing("acme"), WORKSPACE)}]}
    asked = [
        ("get", group, GROUP_PATH, None),
        ("post", GROUPS_PATH, GROUPS_PATH, {"name": GROUP, "label": "Again"}),
        ("get", PROPERTIES_PATH, PROPERTIES_PATH, None),
        ("get", one, f"{PROPERTIES_PATH}/{ID_PROPERTY}", None),
        ("get", one, f"{PROPERTIES_PATH}/beanbill_unknown", None),
        ("post", PROPERTIES_PATH, PROPERTIES_PATH, property_input(PROPERTIES[0], GROUP)),
        ("post", UPSERT_PATH, UPSERT_PATH, upsert),
    ]
    for method, template, path, body in asked:
        sent = httpx.request(method, f"{peer.url}{path}", json=body, headers=BEARER)
        answers.append((method, template, sent))
    statuses = [answer.status_code for _, _, answer in answers]
    assert statuses == [404, 200, 409, 200, 200, 404, 409, 200]
    for method, template, answer in answers:
        response = document["paths"][template][method]["responses"][str(answer.status_code)]
        validator = validator_of(jsonschema_rs, document, response["content"]["application/json"])
        assert list(validator.iter_errors(answer.json())) == [], (method, template)


def test_running_hubspot_serves_a_new_portal(tmp_path: Path, connect: Connect) -> None:
    """What the demo starts: its own Prism (installed: this module's runs) and the front."""
    assert is_built()
    with running_hubspot(tmp_path) as hubspot:
        connector = connect(url=hubspot.url)
        connector.check()
        assert connector.upsert_companies([billing("acme")])[0].error is None
        assert list(hubspot.companies()) == ["acme"]
    assert (tmp_path / "prism.log").exists()
