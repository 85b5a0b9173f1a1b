"""The customer portal (beanbill.api.portal): login, scope, isolation, escaping, pages.

One billed workspace per module (October 2026 rated, posted and invoiced) whose parent
organization has a hostile name and a hostile resource name, served in-process by the
API's app with the portal included, as ``create_app`` will include it. Isolation is
checked on every portal page and download of one tenant with another tenant's session.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from beanbill.api.app import create_app
from beanbill.api.keys import KeyStore
from beanbill.api.money import minor_text
from beanbill.api.portal import portal_router
from beanbill.api.portal.session import SECRET_FILE, SESSION_COOKIE
from beanbill.api.portal.static import MEDIA_TYPES, STATIC
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import post, record_credit
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import SMALL_CATALOG, customer, write_jsonl, write_workspace
from tests.test_api import UNLIMITED, billed_settings, invoice_orgs, record_payments

OCTOBER = Month(2026, 10)
TODAY = date(2026, 11, 20)
PROVISIONAL = importlib.util.find_spec("beanbill.rating.provisional") is not None
HOSTILE_NAME = "Acme <script>alert('pwned')</script> \"Quotes\" & {{ 7*7 }} {% raw %}"
HOSTILE_RESOURCE = "fr-post/<img src=x onerror=alert(1)>"


@dataclass(frozen=True)
class Portal:
    """A billed workspace, its app with the portal, and a key per organization."""

    workspace: Workspace
    app: FastAPI
    keys: dict[str, str]  # org → its key
    admin: str

    def numbers(self, org: str) -> list[str]:
        return [n for n, owner in invoice_orgs(self.workspace).items() if owner == org]


def portal_customers() -> list[dict[str, Any]]:
    return [
        customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320", name=HOSTILE_NAME),
        customer("team-a", billing_mode="postpaid", parent="fr-post", name="Team A"),
        customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
    ]


def cpu(event_id: str, org: str, resource: str, day: int, hours: int) -> dict[str, object]:
    start, end = f"2026-10-{day:02d}T00:00:00Z", f"2026-10-{day:02d}T{hours:02d}:00:00Z"
    return {"id": event_id, "org": org, "resource": resource, "meter": "cpu", "quantity": "2",
            "start": start, "end": end}  # fmt: skip


def egress(event_id: str, org: str, resource: str, day: int, gigabytes: str) -> dict[str, object]:
    return {"id": event_id, "org": org, "resource": resource, "meter": "egress",
            "at": f"2026-10-{day:02d}T12:00:00Z", "quantity": gigabytes}  # fmt: skip


def october_events() -> list[dict[str, object]]:
    """Several resources over several days, so the chart and drill-down have shape."""
    events = [
        cpu(f"fr-app-{day}", "fr-post", "fr-post/app", day, 4 + day % 7) for day in range(1, 29, 3)
    ]
    events += [cpu(f"fr-db-{day}", "fr-post", HOSTILE_RESOURCE, day, 12) for day in (2, 9, 16, 23)]
    events += [egress(f"fr-lb-{day}", "fr-post", "fr-post/lb", day, "310.5") for day in (5, 15, 25)]
    events += [cpu(f"team-{day}", "team-a", "team-a/app", day, 6) for day in (4, 11, 18)]
    events += [
        cpu("de-1", "de-pre", "de-pre/app", 7, 20),
        egress("de-2", "de-pre", "de-pre/lb", 8, "250.5"),
    ]
    return events  # fmt: skip


def build_portal(root: Path) -> Portal:
    """October 2026 rated, posted and invoiced; de-pre holds a purchased and a granted lot;
    fr-post's invoice is paid in part (card, a refund, a bank transfer)."""
    workspace = write_workspace(root, billed_settings(), SMALL_CATALOG, portal_customers())
    ingest(workspace, [write_jsonl(root / "october.jsonl", october_events())])
    rate_months(workspace, [OCTOBER])
    first = date(2026, 10, 1)
    record_credit(workspace, "de-pre", "purchase", "1.00", first, None, 100, "de-pre-bought")
    last = date(2026, 11, 30)
    record_credit(workspace, "de-pre", "grant", "5.00", first, last, 10, "de-pre-granted")
    post(workspace, OCTOBER, date(2026, 11, 2))
    issue(workspace, OCTOBER, date(2026, 11, 5))
    [paid] = [n for n, org in invoice_orgs(workspace).items() if org == "fr-post"]
    record_payments(workspace, paid)  # by card, a refund, by bank transfer: still open
    if PROVISIONAL:  # de-pre's open November so far, rated provisionally
        from beanbill.rating.provisional import rate_open

        ingest(workspace, [write_jsonl(root / "november.jsonl", november_events())])
        rate_open(workspace, TODAY)
    app = create_app(workspace, UNLIMITED, today=lambda: TODAY)
    app.include_router(portal_router())
    store = KeyStore(workspace.state_dir)
    orgs = [c.id for c in workspace.customers.customer]
    keys = {org: store.create(org, orgs).secret_key for org in orgs}
    return Portal(workspace, app, keys, store.create(None, orgs, "admin").secret_key)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Portal:
    return build_portal(tmp_path_factory.mktemp("portal") / "ws")


def form_token(html: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def logged_in(portal: Portal, key: str) -> TestClient:
    """A client whose session was opened by pasting ``key`` in the login form."""
    client = TestClient(portal.app)
    token = form_token(client.get("/portal/login").text)
    answer = client.post("/portal/login", data={"key": key, "token": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client


def pages_of(portal: Portal, org: str) -> list[str]:
    """Every portal page and download of ``org`` (its drill-down to one day included)."""
    base = f"/portal/org/{org}"
    pages = [base, f"{base}/usage", f"{base}/usage?month=2026-10", f"{base}/credits",
             f"{base}/invoices", f"{base}/payments",
             f"{base}/usage?month=2026-10&family=Compute&meter=cpu"
             f"&resource={org}/app&day=2026-10-07"]  # fmt: skip
    for number in portal.numbers(org):
        pages += [f"{base}/invoices/{number}"]
        pages += [f"{base}/invoices/{number}/{kind}" for kind in ("pdf", "cii", "ubl")]
    return pages


# --- login and sessions -------------------------------------------------------------------


def test_pages_need_a_session_and_the_login_form_needs_its_token(portal: Portal) -> None:
    client = TestClient(portal.app)
    answer = client.get("/portal/org/fr-post", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/portal/login")
    client.get("/portal/login")
    forged = client.post("/portal/login", data={"key": portal.keys["fr-post"], "token": "x"})
    assert forged.status_code == 400
    assert SESSION_COOKIE not in client.cookies
    token = form_token(client.get("/portal/login").text)
    wrong = client.post(
        "/portal/login", data={"key": "bbk_000000000000_" + "A" * 43, "token": token}
    )
    assert wrong.status_code == 401 and "not valid" in wrong.text


def test_the_session_cookie_is_signed_httponly_strict_and_holds_no_key(portal: Portal) -> None:
    client = TestClient(portal.app)
    token = form_token(client.get("/portal/login").text)
    key = portal.keys["de-pre"]
    answer = client.post("/portal/login", data={"key": key, "token": token}, follow_redirects=False)
    cookie = next(
        v for k, v in answer.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/portal" in cookie
    assert key not in cookie and key.split("_", 2)[-1][:16] not in cookie
    payload = cookie.split("=", 1)[1].split(".")[0]
    held = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert held == {"key_id": key.split("_")[1], "form_token": held["form_token"]}
    secret = portal.workspace.state_dir / SECRET_FILE
    assert secret.stat().st_mode & 0o777 == 0o600
    # A cookie signed otherwise is no session.
    client.cookies.set(SESSION_COOKIE, client.cookies[SESSION_COOKIE][:-3] + "AAA", path="/portal")
    assert client.get("/portal/org/de-pre", follow_redirects=False).status_code == 303


def test_logout_needs_the_form_token_and_ends_the_session(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["de-pre"])
    overview = client.get("/portal/org/de-pre")
    assert overview.status_code == 200
    assert client.post("/portal/logout", data={"token": "forged"}).status_code == 404
    assert client.get("/portal/org/de-pre").status_code == 200
    out = client.post(
        "/portal/logout", data={"token": form_token(overview.text)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert client.get("/portal/org/de-pre", follow_redirects=False).status_code == 303


def test_a_revoked_key_is_logged_out_at_the_next_page(portal: Portal) -> None:
    store = KeyStore(portal.workspace.state_dir)
    created = store.create("de-pre", ["de-pre"], "to revoke")
    client = logged_in(portal, created.secret_key)
    assert client.get("/portal/org/de-pre").status_code == 200
    store.revoke(created.record.key_id)
    for page in pages_of(portal, "de-pre"):
        answer = client.get(page, follow_redirects=False)
        assert (answer.status_code, answer.headers.get("location")) == (303, "/portal/login"), page
    login = TestClient(portal.app)
    token = form_token(login.get("/portal/login").text)
    again = login.post("/portal/login", data={"key": created.secret_key, "token": token})
    assert again.status_code == 401


# --- scope and isolation ------------------------------------------------------------------


def test_a_key_of_one_organization_gets_nothing_of_another(portal: Portal) -> None:
    """Every page and file of each other tenant answers 404, as an unknown one does."""
    related = {("fr-post", "team-a")}  # a parent sees its team
    checked = 0
    for a, key in portal.keys.items():
        client = logged_in(portal, key)
        unknown = client.get("/portal/org/nobody")
        assert unknown.status_code == 404
        for b in portal.keys:
            if a == b or (a, b) in related:
                continue
            for page in pages_of(portal, b):
                answer = client.get(page, follow_redirects=False)
                assert answer.status_code == 404, (a, page)
                assert answer.text == unknown.text, (a, page)
                checked += 1
            # b's invoices under a's own pages: still not found.
            for number in portal.numbers(b):
                for page in (
                    f"/portal/org/{a}/invoices/{number}",
                    f"/portal/org/{a}/invoices/{number}/pdf",
                ):
                    assert client.get(page).status_code == 404, (a, page)  # fmt: skip
    assert checked > 20


def test_every_page_of_its_own_answers(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["de-pre"])
    for page in pages_of(portal, "de-pre"):
        answer = client.get(page)
        assert answer.status_code == 200, (page, answer.text[:500])
    [number] = portal.numbers("de-pre")[-1:]
    pdf = client.get(f"/portal/org/de-pre/invoices/{number}/pdf")
    assert pdf.content == (portal.workspace.invoices_dir / f"{number}.pdf").read_bytes()
    assert pdf.content.startswith(b"%PDF")


def test_a_parent_sees_its_team_and_a_team_not_its_parent(portal: Portal) -> None:
    parent = logged_in(portal, portal.keys["fr-post"])
    overview = parent.get("/portal/org/fr-post").text
    assert 'data-org="team-a"' in overview
    team_usage = parent.get("/portal/org/team-a/usage?month=2026-10&family=Compute&meter=cpu")
    assert team_usage.status_code == 200 and "team-a/app" in team_usage.text
    team = logged_in(portal, portal.keys["team-a"])
    assert team.get("/portal/org/fr-post").status_code == 404
    invoices = team.get("/portal/org/team-a/invoices").text
    assert "invoiced centrally by fr-post" in invoices
    assert team.get("/portal/", follow_redirects=False).headers["location"] == "/portal/org/team-a"


def test_an_admin_key_lists_every_organization(portal: Portal) -> None:
    admin = logged_in(portal, portal.admin)
    listed = admin.get("/portal/").text
    assert all(f"/portal/org/{org}" in listed for org in portal.keys)


# --- what the pages show ------------------------------------------------------------------


def test_hostile_names_are_escaped_everywhere(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["fr-post"])
    pages = [
        "/portal/org/fr-post",
        "/portal/org/team-a",
        "/portal/org/fr-post/invoices",
        "/portal/org/fr-post/payments",
        "/portal/org/fr-post/usage?month=2026-10&family=Compute&meter=cpu",
        f"/portal/org/fr-post/usage?month=2026-10&family=Compute&meter=cpu&resource={HOSTILE_RESOURCE}",
    ]  # fmt: skip
    for page in pages:
        html = client.get(page).text
        assert "<script>alert" not in html and "<img src=x" not in html, page
        assert "{{ 7*7 }}" in html and "{% raw %}" in html, page  # text, never evaluated
    overview = client.get("/portal/org/fr-post").text
    assert (
        "Acme &lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &#34;Quotes&#34; &amp; {{ 7*7 }}"
        in overview
    )
    # Payments' descriptions are the ledger's narrations, which name the customer.
    payments = client.get("/portal/org/fr-post/payments").text
    assert "Stripe payment of invoice" in payments
    assert "— Acme &lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &#34;Quotes&#34;" in payments
    resource = client.get("/portal/org/fr-post/usage?month=2026-10&family=Compute&meter=cpu").text
    assert "fr-post/&lt;img src=x onerror=alert(1)&gt;" in resource
    # The chart's data is JSON in a non-executed block, with < escaped.
    data = re.search(
        r'<script type="application/json" id="usage-chart-data">(.*?)</script>', resource, re.S
    )
    assert data and "<" not in data.group(1)
    labels = [series["label"] for series in json.loads(data.group(1))["series"]]
    assert HOSTILE_RESOURCE in labels


def test_pages_carry_a_strict_content_security_policy(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["de-pre"])
    answer = client.get("/portal/org/de-pre")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["cache-control"] == "no-store"


def test_the_drill_down_adds_up_to_the_api_usage(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["fr-post"])
    api = client.get(
        "/v1/organizations/fr-post/usage",
        params={"month": "2026-10"},
        headers={"Authorization": f"Bearer {portal.keys['fr-post']}"},
    ).json()
    [period] = api["periods"]
    top = client.get("/portal/org/fr-post/usage?month=2026-10").text
    assert f'title="{period["amount"]} EUR"' in top
    listed = re.findall(r'<tr data-name="([^"]+)"', top)
    assert [family["family"] for family in period["families"]] == sorted(listed)
    day = client.get("/portal/org/fr-post/usage?month=2026-10&family=Compute&meter=cpu"
                     "&resource=fr-post/app&day=2026-10-07").text  # fmt: skip
    detail = re.search(r'<section id="day-detail">(.*?)</section>', day, re.S)
    assert detail and "28800 vCPU-second" in detail.group(1).replace(",", "")  # 2 vCPU × 4 h
    assert client.get("/portal/org/fr-post/usage?month=2026-10&family=Nope").status_code == 404
    skipping = "/portal/org/fr-post/usage?month=2026-10&resource=fr-post/app"
    assert client.get(skipping).status_code == 404
    assert client.get("/portal/org/fr-post/usage?month=2026-13").status_code == 404


def test_the_current_month_falls_back_to_the_last_posted_one(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["fr-post"])
    page = client.get("/portal/org/fr-post/usage").text
    assert "No usage yet for 2026-11" in page and "Usage of 2026-10" in page
    overview = client.get("/portal/org/fr-post").text
    assert "Nothing posted yet this month" in overview


def test_credits_show_lots_with_expiry(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["de-pre"])
    page = client.get("/portal/org/de-pre/credits").text
    granted = re.search(r'<tr data-lot="de-pre-granted">(.*?)</tr>', page, re.S)
    assert granted and "2026-11-30" in granted.group(1) and "expiring" in granted.group(1)
    bought = re.search(r'<tr data-lot="de-pre-bought">(.*?)</tr>', page, re.S)
    assert bought and "never expires" in bought.group(1)


def test_invoice_pages_show_status_and_payment_history(portal: Portal) -> None:
    client = logged_in(portal, portal.keys["fr-post"])
    [number] = portal.numbers("fr-post")
    listing = client.get("/portal/org/fr-post/invoices").text
    assert f'data-number="{number}"' in listing and "status-open" in listing
    detail = client.get(f"/portal/org/fr-post/invoices/{number}").text
    assert '<td class="nowrap">issued</td>' in detail


def test_the_payments_page_lists_every_payment_refund_and_credit_note(portal: Portal) -> None:
    """Date, invoice (linked), what, method, amount and the invoice's status, newest first:
    the API's list (``/v1/organizations/{org}/payments``) row for row; linked from every
    page's navigation."""
    key = portal.keys["fr-post"]
    client = logged_in(portal, key)
    [number] = portal.numbers("fr-post")
    overview = client.get("/portal/org/fr-post").text
    assert '<a href="/portal/org/fr-post/payments">Payments</a>' in overview
    page = client.get("/portal/org/fr-post/payments").text
    assert 'href="/portal/org/fr-post/payments" aria-current="page"' in page
    rows = re.findall(r'<tr data-invoice="([^"]+)" data-kind="([^"]+)">(.*?)</tr>', page, re.S)
    api = client.get(
        "/v1/organizations/fr-post/payments", headers={"Authorization": f"Bearer {key}"}
    ).json()["payments"]
    assert [(invoice, kind) for invoice, kind, _ in rows] == [
        (payment["invoice"], payment["kind"]) for payment in reversed(api)
    ]
    assert [kind for _, kind, _ in rows] == ["payment", "charge", "payment"]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for _, _, row in rows]
    assert [(c[0], c[2], c[3], c[4]) for c in cells] == [
        (p["date"], label, p["method"], f"{p['amount']} EUR")
        for p, label in zip(reversed(api), ["payment", "refund or charge", "payment"], strict=True)
    ]
    assert [c[3] for c in cells] == ["bank transfer", "stripe", "stripe"]
    assert all(f'<a href="/portal/org/fr-post/invoices/{number}">{number}</a>' in c[1]
               for c in cells)  # fmt: skip
    assert all("status-open" in c[5] for c in cells)
    # The invoice's own history names the method too.
    detail = client.get(f"/portal/org/fr-post/invoices/{number}").text
    assert '<td class="nowrap">bank transfer</td>' in detail
    assert '<td class="nowrap">stripe</td>' in detail
    # A team invoiced centrally, and an organization with nothing paid yet, say so.
    team = client.get("/portal/org/team-a/payments").text
    assert "its payments appear on the parent's page" in team
    prepaid = logged_in(portal, portal.keys["de-pre"]).get("/portal/org/de-pre/payments").text
    assert "No payment, refund or credit note yet." in prepaid


def test_pages_stay_out_of_the_openapi_document(portal: Portal) -> None:
    paths = TestClient(portal.app).get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/portal")]


# --- the vendored chart library -----------------------------------------------------------


def test_the_shipped_chart_library_is_the_one_recorded(portal: Portal) -> None:
    manifest = json.loads((STATIC / "VENDORED.json").read_text())
    for library in manifest["libraries"]:
        shipped = (STATIC / library["file"]).read_bytes()
        assert hashlib.sha256(shipped).hexdigest() == library["sha256"]
        assert f"v{library['version']}" in shipped[:200].decode()
        assert "MIT License" in (STATIC / library["license_file"]).read_text()
    served = TestClient(portal.app).get("/portal/static/chart.umd.min.js")
    assert served.status_code == 200 and served.headers["content-type"].startswith(
        "text/javascript"
    )
    assert TestClient(portal.app).get("/portal/static/..%2Fpages.py").status_code == 404
    assert set(MEDIA_TYPES) == {path.name for path in STATIC.iterdir()}


# --- the open period: provisional usage and the forecast -----------------------------------


def november_events() -> list[dict[str, object]]:
    return [
        {"id": f"nov-{day}", "org": "de-pre", "resource": "de-pre/app", "meter": "cpu",
         "quantity": "2", "start": f"2026-11-{day:02d}T00:00:00Z",
         "end": f"2026-11-{day:02d}T10:00:00Z"}
        for day in range(2, 20)
    ]  # fmt: skip


@pytest.mark.skipif(not PROVISIONAL, reason="provisional rating of open periods not built yet")
def test_the_open_period_shows_provisional_usage_and_its_forecast(portal: Portal) -> None:
    key = portal.keys["de-pre"]
    client = logged_in(portal, key)
    usage = client.get("/portal/org/de-pre/usage").text
    assert "Usage of 2026-11" in usage and 'id="provisional"' in usage
    overview = client.get("/portal/org/de-pre").text
    assert "provisional usage" in overview
    answer = client.get(
        "/v1/organizations/de-pre/forecast", headers={"Authorization": f"Bearer {key}"}
    )
    if answer.status_code == 200:  # the forecast endpoint is wired into the app
        forecast = answer.json()
        card = re.search(r'<article class="card" id="forecast">(.*?)</article>', overview, re.S)
        expected = f"{minor_text(forecast['expected_minor'], forecast['currency'])} EUR"
        assert card and expected in card.group(1)
