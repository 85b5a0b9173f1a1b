"""The customer API against its own OpenAPI document, property-based (Schemathesis).

Every operation, with data the document allows and data it forbids (Schemathesis'
positive and negative modes), on a billed workspace: never a server error, every answer
of a documented status with a body matching its schema. Run twice: with an admin key
(everything visible) and with one organization's key, where a check of our own adds that
no answer ever names another organization's objects.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from beanbill.api.app import create_app, routes
from beanbill.api.context import ApiContext, ApiSettings
from beanbill.api.rate_limit import RateLimit
from tests.test_api import TODAY, UNLIMITED, Billed, build_billed, invoice_orgs

SLOW = [HealthCheck.too_slow, HealthCheck.filter_too_much]
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=SLOW)
# Each events batch is an ingest (a DuckDB run): fewer examples keep the suite quick.
EVENT_EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=SLOW)
UNLIMITED_RATE = RateLimit(per_second=1e6, burst=1_000_000)
# Small limits for the customer run, so that generated bodies reach them.
LIMITED = ApiSettings(max_events_per_batch=5, max_body_bytes=5_000, rate_limit=UNLIMITED_RATE)

# The apps are built at import, so that Schemathesis reads their own documents; the
# fixture binds them to a billed workspace (``ApiContext``) before the first call.
ADMIN_APP = routes(UNLIMITED)
CUSTOMER_APP = routes(LIMITED)
schema = schemathesis.openapi.from_asgi("/openapi.json", ADMIN_APP)
limited = schemathesis.openapi.from_asgi("/openapi.json", CUSTOMER_APP)
for loaded in (schema, limited):
    # The key is the test's to send (a real one): Schemathesis neither generates nor
    # mutates the Authorization header, so no case counts a request it sent with a valid
    # key as "negative". (Its ignored_auth check still probes every operation keyless.)
    loaded.config.generation.update(with_security_parameters=False)


@pytest.fixture(scope="module")
def billed_for_schema(tmp_path_factory: pytest.TempPathFactory) -> Billed:
    billed = build_billed(tmp_path_factory.mktemp("schema") / "ws")
    ADMIN_APP.state.context = ApiContext(billed.workspace, UNLIMITED, lambda: TODAY)
    CUSTOMER_APP.state.context = ApiContext(billed.workspace, LIMITED, lambda: TODAY)
    return billed


def test_the_documents_are_the_apps_own(billed_for_schema: Billed) -> None:
    assert billed_for_schema.app.openapi() == schema.raw_schema
    bound = create_app(billed_for_schema.workspace, LIMITED, today=lambda: TODAY)
    assert bound.openapi() == limited.raw_schema
    assert schema.raw_schema["openapi"].startswith("3.1")
    assert len(list(schema.get_all_operations())) == 13
    assert "/v1/organizations/{org}/payments" in schema.raw_schema["paths"]
    assert "/v1/organizations/{org}/forecast" in schema.raw_schema["paths"]


def admin_call(case: Any, billed: Billed) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {billed.admin}"})


@schema.exclude(path="/v1/events").parametrize()
@EXAMPLES
def test_every_answer_of_the_admin_matches_the_document(
    case: Any, billed_for_schema: Billed
) -> None:
    admin_call(case, billed_for_schema)


@schema.include(path="/v1/events").parametrize()
@EVENT_EXAMPLES
def test_every_events_answer_of_the_admin_matches_the_document(
    case: Any, billed_for_schema: Billed
) -> None:
    admin_call(case, billed_for_schema)


def _foreign_identifiers(billed: Billed, org: str) -> set[str]:
    """What ``org``'s key must never read: the other organizations' invoice numbers,
    names and credit lots (ids alone may be echoed back when a request names them)."""
    visible = {org, "team-a"} if org == "fr-post" else {org}
    numbers = {n for n, owner in invoice_orgs(billed.workspace).items() if owner not in visible}
    names = {f"{other} Ltd" for other in billed.keys if other not in visible}
    lots = set() if "de-pre" in visible else {"de-pre-bought", "de-pre-granted"}
    return numbers | names | lots


def customer_call(case: Any, billed: Billed) -> None:
    """As the parent fr-post: valid answers, and never another organization's objects."""
    response = case.call_and_validate(headers={"Authorization": f"Bearer {billed.keys['fr-post']}"})
    leaked = {text for text in _foreign_identifiers(billed, "fr-post") if text in response.text}
    assert leaked == set(), (case.method, case.formatted_path, leaked)


@limited.exclude(path="/v1/events").parametrize()
@EXAMPLES
def test_every_answer_to_a_customer_matches_the_document_and_leaks_nothing(
    case: Any, billed_for_schema: Billed
) -> None:
    customer_call(case, billed_for_schema)


@limited.include(path="/v1/events").parametrize()
@EVENT_EXAMPLES
def test_every_events_answer_to_a_customer_matches_the_document(
    case: Any, billed_for_schema: Billed
) -> None:
    customer_call(case, billed_for_schema)
