"""The Stripe contract check itself: bodies come from the SDK's own encoder, no network."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import pytest
import stripe
from stripe._encode import _api_encode
from stripe._http_client import HTTPClient
from stripe.params import (
    CustomerSearchParams,
    InvoiceAddLinesParams,
    InvoiceCreateParams,
)

from tests.stripe_contract_check import (
    decode_form,
    log_problems,
    match_route,
    request_problems,
    route_table,
)


def encode(params: Mapping[str, Any]) -> str:
    """Exactly what ``stripe._api_requestor._APIRequestor`` puts on the wire."""
    encoded = urlencode(list(_api_encode(params)))
    return encoded.replace("%5B", "[").replace("%5D", "]")


def post(path: str, params: Mapping[str, Any]) -> list[str]:
    return request_problems("POST", path, "", encode(params))


def get(path: str, params: Mapping[str, Any] | None = None) -> list[str]:
    return request_problems("GET", path, encode(params or {}), "")


INVOICE: InvoiceCreateParams = {
    "customer": "cus_1",
    "currency": "eur",
    "collection_method": "send_invoice",
    "auto_advance": False,
    "pending_invoice_items_behavior": "exclude",
    "description": "March 2026",
    "metadata": {"beanbill_number": "INV-2026-0001", "org": "acme"},
    "number": "INV-2026-0001",
    "days_until_due": 30,
}

ADD_LINES: InvoiceAddLinesParams = {
    "lines": [
        {
            "amount": 12300,
            "description": "vCPU hours",
            "metadata": {"line": "1"},
            "tax_amounts": [
                {
                    "amount": 2460,
                    "taxable_amount": 12300,
                    "tax_rate_data": {
                        "display_name": "VAT",
                        "inclusive": False,
                        "percentage": 20.0,  # typed float; encodes as "20.0"
                        "country": "FR",
                        "tax_type": "vat",
                        "jurisdiction": "FR",
                    },
                }
            ],
        },
        {"amount": -500, "description": "credit"},
    ],
}


# --------------------------------------------------------------------------- the route table


def test_the_route_table_is_derived_from_the_sdk_services() -> None:
    table = route_table()
    assert len(table) >= 200
    add_lines = table[("post", "/v1/invoices/{invoice}/add_lines")]
    assert add_lines.params == (InvoiceAddLinesParams,)
    assert add_lines.services == ("stripe._invoice_service.InvoiceService.add_lines",)
    # nested services (invoice line items) and namespaced ones (billing.*) are reached too
    assert ("get", "/v1/invoices/{invoice}/lines") in table
    assert any(template.startswith("/v1/billing/") for _, template in table)
    assert all(template.startswith("/v1/") for _, template in table)
    assert {method for method, _ in table} == {"get", "post", "delete"}
    # two SDK methods share this route with different params types: both are kept
    detach = table[("delete", "/v1/customers/{customer}/sources/{id}")]
    assert len(detach.params) == 2


def test_routes_prefer_literal_segments_over_placeholders() -> None:
    search = match_route("GET", "/v1/customers/search")
    assert search is not None
    assert search.template == "/v1/customers/search"
    assert search.params == (CustomerSearchParams,)
    customer = match_route("GET", "/v1/customers/cus_1")
    assert customer is not None
    assert customer.template == "/v1/customers/{customer}"
    finalize = match_route("post", "/v1/invoices/in_1/finalize")
    assert finalize is not None
    assert finalize.template == "/v1/invoices/{invoice}/finalize"
    assert match_route("PUT", "/v1/invoices/in_1") is None
    assert match_route("GET", "/v1/invoices/") is None
    assert match_route("GET", "/v1/invoices/in_1/nope/x") is None


# --------------------------------------------------------------------------- decoding


def test_decode_form_inverts_the_sdk_encoder() -> None:
    body = encode(ADD_LINES)
    assert "lines[0][tax_amounts][0][tax_rate_data][percentage]=20.0" in body
    assert "lines[0][tax_amounts][0][tax_rate_data][inclusive]=false" in body
    decoded = decode_form(body)
    lines = decoded["lines"]
    assert isinstance(lines, list)
    assert lines[1] == {"amount": "-500", "description": "credit"}
    assert lines[0] == {
        "amount": "12300",
        "description": "vCPU hours",
        "metadata": {"line": "1"},
        "tax_amounts": [
            {
                "amount": "2460",
                "taxable_amount": "12300",
                "tax_rate_data": {
                    "display_name": "VAT",
                    "inclusive": "false",
                    "percentage": "20.0",
                    "country": "FR",
                    "tax_type": "vat",
                    "jurisdiction": "FR",
                },
            }
        ],
    }
    assert decode_form(encode({"expand": ["a", "b"], "metadata": "", "q": "a b&c=d"})) == {
        "expand": ["a", "b"],
        "metadata": "",
        "q": "a b&c=d",
    }
    assert decode_form("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert decode_form("") == {}


def test_decode_form_refuses_ambiguous_bodies() -> None:
    with pytest.raises(ValueError, match="more than once"):
        decode_form("a=1&a=2")
    with pytest.raises(ValueError, match="nests under a scalar"):
        decode_form("a=1&a[b]=2")


# --------------------------------------------------------------------------- valid requests


def test_the_requests_the_connector_makes_are_valid() -> None:
    assert post("/v1/invoices", INVOICE) == []
    assert post("/v1/invoices/in_1/add_lines", ADD_LINES) == []
    assert (
        post(
            "/v1/credit_notes",
            {
                "invoice": "in_1",
                "lines": [
                    {
                        "type": "custom_line_item",
                        "description": "refund of vCPU hours",
                        "quantity": 1,
                        "unit_amount": 1000,
                        "tax_amounts": [
                            {"amount": 200, "tax_rate": "txr_1", "taxable_amount": 1000}
                        ],
                    }
                ],
                "memo": "credit note CN-1",
                "metadata": {"beanbill_number": "CN-1"},
                "credit_amount": 1200,
            },
        )
        == []
    )
    assert get("/v1/customers/search", {"query": "metadata['org']:'acme'", "limit": 2}) == []
    assert (
        get("/v1/invoices", {"customer": "cus_1", "limit": 100, "created": {"gte": 1700000000}})
        == []
    )
    assert (
        request_problems("GET", "/v1/invoices", "customer=cus_1&limit=100&created[gte]=1700000000")
        == []
    )
    assert post("/v1/invoices/in_1/finalize", {"auto_advance": False}) == []
    assert get("/v1/refunds", {"charge": "ch_1"}) == []
    assert get("/v1/charges/ch_1") == []
    assert get("/v1/balance_transactions") == []
    assert get("/v1/balance_transactions", {"limit": 100, "starting_after": "txn_1"}) == []


def test_empty_string_unsets_where_the_sdk_allows_it() -> None:
    assert post("/v1/invoices/in_1", {"metadata": "", "description": ""}) == []
    assert post("/v1/invoices/in_1/add_lines", {"lines": [{"amount": 1, "tax_amounts": ""}]}) == []
    assert post("/v1/invoices", {"days_until_due": ""}) == [
        "POST /v1/invoices: days_until_due: '' is not an integer"
    ]


# --------------------------------------------------------------------------- invalid requests


def test_an_unknown_top_level_parameter_is_named() -> None:
    assert post("/v1/invoices", {**INVOICE, "days_until_duee": 30}) == [
        "POST /v1/invoices: unknown parameter days_until_duee"
    ]


def test_an_unknown_nested_parameter_is_named_with_its_path() -> None:
    body = encode(ADD_LINES) + "&lines[0][tax_amounts][0][rate]=20&lines[1][colour]=red"
    assert request_problems("POST", "/v1/invoices/in_1/add_lines", "", body) == [
        "POST /v1/invoices/{invoice}/add_lines: unknown parameter lines[0].tax_amounts[0].rate",
        "POST /v1/invoices/{invoice}/add_lines: unknown parameter lines[1].colour",
    ]


def test_a_value_outside_the_literal_is_reported() -> None:
    # The SDK types enums as Literal[...]|str; the pinned version's values are the contract.
    assert post("/v1/invoices", {**INVOICE, "collection_method": "by_carrier_pigeon"}) == [
        "POST /v1/invoices: collection_method: 'by_carrier_pigeon' is not one of "
        "'charge_automatically' | 'send_invoice'"
    ]


def test_scalar_shapes_are_checked() -> None:
    assert post("/v1/invoices/in_1/add_lines", {"lines": [{"amount": Decimal("12.5")}]}) == [
        "POST /v1/invoices/{invoice}/add_lines: lines[0].amount: '12.5' is not an integer"
    ]
    assert post("/v1/invoices/in_1/finalize", {"auto_advance": "yes"}) == [
        "POST /v1/invoices/{invoice}/finalize: auto_advance: 'yes' is not a boolean (true/false)"
    ]
    bad_rate = {
        "lines": [
            {
                "amount": 1,
                "tax_amounts": [
                    {
                        "amount": 0,
                        "taxable_amount": 1,
                        "tax_rate_data": {
                            "display_name": "VAT",
                            "inclusive": False,
                            "percentage": Decimal("2E+1"),
                        },
                    }
                ],
            }
        ]
    }
    assert post("/v1/invoices/in_1/add_lines", bad_rate) == [
        "POST /v1/invoices/{invoice}/add_lines: lines[0].tax_amounts[0].tax_rate_data."
        "percentage: '2E+1' is not a decimal number"
    ]
    assert post("/v1/invoices", {"metadata": {"a": {"b": "c"}}}) == [
        "POST /v1/invoices: metadata.a: expected str, got an object"
    ]
    assert post("/v1/invoices/in_1/add_lines", {"lines": {"amount": 1}}) == [
        "POST /v1/invoices/{invoice}/add_lines: lines: expected list[InvoiceAddLinesParamsLine], "
        "got an object"
    ]


def test_missing_required_parameters_are_reported() -> None:
    assert post("/v1/invoices/in_1/add_lines", {}) == [
        "POST /v1/invoices/{invoice}/add_lines: missing required parameter lines"
    ]
    no_taxable_amount = {
        "lines": [
            {
                "amount": 1,
                "tax_amounts": [
                    {
                        "amount": 0,
                        "tax_rate_data": {
                            "display_name": "VAT",
                            "inclusive": False,
                            "percentage": Decimal("20.0"),
                        },
                    }
                ],
            }
        ]
    }
    assert post("/v1/invoices/in_1/add_lines", no_taxable_amount) == [
        "POST /v1/invoices/{invoice}/add_lines: missing required parameter "
        "lines[0].tax_amounts[0].taxable_amount"
    ]
    assert get("/v1/customers/search", {"limit": 2}) == [
        "GET /v1/customers/search: missing required parameter query"
    ]


def test_an_endpoint_the_sdk_does_not_have_is_reported() -> None:
    assert request_problems("POST", "/v1/disputes/dp_1/frobnicate") == [
        f"POST /v1/disputes/dp_1/frobnicate: no such endpoint in stripe-python "
        f"{stripe.VERSION} (API {stripe.api_version})"
    ]
    assert request_problems("PUT", "/v1/invoices/in_1")[0].endswith(
        f"no such endpoint in stripe-python {stripe.VERSION} (API {stripe.api_version})"
    )


def test_request_options_in_the_body_are_reported() -> None:
    assert post("/v1/invoices", {**INVOICE, "idempotency_key": "push-INV-1"}) == [
        "POST /v1/invoices: idempotency_key is a request option (sent as a header), "
        "not a form parameter"
    ]
    assert get("/v1/charges/ch_1", {"stripe_version": "2020-08-27"}) == [
        "GET /v1/charges/{charge}: stripe_version is a request option (sent as a header), "
        "not a form parameter"
    ]


def test_parameters_in_the_wrong_place_are_reported() -> None:
    assert request_problems("POST", "/v1/invoices", "customer=cus_1", "") == [
        "POST /v1/invoices: parameters in the query string of a POST (the SDK sends a body)"
    ]
    assert request_problems("GET", "/v1/charges/ch_1", "", "expand[0]=customer") == [
        "GET /v1/charges/{charge}: a request body on GET (the SDK sends the query string)"
    ]
    assert request_problems("POST", "/v1/invoices", "", "a=1&a[b]=2") == [
        "POST /v1/invoices: malformed body: form key 'a[b]' nests under a scalar value"
    ]


# --------------------------------------------------------------------------- the SDK itself


class RecordingHTTPClient(HTTPClient):
    """A transport that records what the real SDK client sends and answers ``{}``."""

    name: ClassVar[str] = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, str, str]] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        parts = urlsplit(url)
        self.requests.append((method.upper(), parts.path, parts.query, post_data or ""))
        return json.dumps({"object": "list", "data": [], "has_more": False}), 200, {}

    def close(self) -> None:
        pass


def test_what_the_sdk_client_sends_passes_the_check() -> None:
    transport = RecordingHTTPClient()
    client = stripe.StripeClient("sk_test_contract", http_client=transport, max_network_retries=0)
    client.v1.invoices.create(INVOICE, {"idempotency_key": "push-1"})
    client.v1.invoices.add_lines("in_1", ADD_LINES)
    client.v1.invoices.finalize_invoice("in_1", {"auto_advance": False})
    client.v1.invoices.list({"customer": "cus_1", "limit": 100, "created": {"gte": 1700000000}})
    client.v1.customers.search({"query": "metadata['org']:'acme'", "limit": 2})
    client.v1.refunds.list({"charge": "ch_1"})
    client.v1.charges.retrieve("ch_1", {"expand": ["balance_transaction"]})
    client.v1.balance_transactions.list()
    assert len(transport.requests) == 8
    for method, path, query, body in transport.requests:
        assert request_problems(method, path, query, body) == [], (method, path, query, body)


# --------------------------------------------------------------------------- logs


def test_log_problems_reads_a_request_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    entries = [
        {"method": "POST", "path": "/v1/invoices", "query": "", "body": encode(INVOICE)},
        {
            "method": "POST",
            "path": "/v1/invoices/in_1/add_lines",
            "query": "",
            "body": encode(ADD_LINES),
        },
        {
            "method": "GET",
            "path": "/v1/customers/search",
            "query": "query=email%3A%27x%27&limit=2",
            "body": "",
        },
        # the same mistake on two invoices is one problem
        {
            "method": "POST",
            "path": "/v1/invoices/in_1/add_lines",
            "query": "",
            "body": "lines[0][amount]=x",
        },
        {
            "method": "POST",
            "path": "/v1/invoices/in_2/add_lines",
            "query": "",
            "body": "lines[0][amount]=x",
        },
        {"method": "POST", "path": "/v1/disputes/dp_1/frobnicate", "query": "", "body": ""},
    ]
    log.write_text("\n".join(json.dumps(e) for e in entries) + "\n\nnot json\n", encoding="utf-8")
    problems = log_problems(log)
    assert problems[:2] == [
        "POST /v1/invoices/{invoice}/add_lines: lines[0].amount: 'x' is not an integer",
        f"POST /v1/disputes/dp_1/frobnicate: no such endpoint in stripe-python {stripe.VERSION} "
        f"(API {stripe.api_version})",
    ]
    assert len(problems) == 3
    assert problems[2].startswith("requests.jsonl:8: unreadable log line")

    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(entries[0]) + "\n", encoding="utf-8")
    assert log_problems(clean) == []


def test_log_problems_caps_the_list(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    log.write_text(
        "".join(
            json.dumps({"method": "POST", "path": "/v1/invoices", "query": "", "body": f"k{i}=1"})
            + "\n"
            for i in range(12)
        ),
        encoding="utf-8",
    )
    problems = log_problems(log, limit=10)
    assert len(problems) == 11
    assert problems[-1] == "... and 2 more problems"
