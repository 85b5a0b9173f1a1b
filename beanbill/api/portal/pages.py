"""The portal's routes: log in with an API key, then read cost, usage, invoices, payments
and credits.

Every page but the login page needs a session (``access.portal_caller``); every page of
an organization first asks the API's ``Caller.require``, so another tenant's pages and
files answer 404 exactly as unknown ones. Pages are excluded from the OpenAPI document:
they are for people, the ``/v1`` routes for programs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from beanbill.api.auth import Caller
from beanbill.api.context import ApiContext, context_of
from beanbill.api.portal import figures
from beanbill.api.portal.access import authenticate_pasted_key, portal_caller
from beanbill.api.portal.drilldown import Selection, drill_down
from beanbill.api.portal.rendering import PortalRoute, page
from beanbill.api.portal.session import (
    PORTAL_PATH,
    Session,
    end_session,
    form_token_matches,
    login_token_matches,
    new_login_token,
    remember_login_token,
    start_session,
)
from beanbill.api.portal.static import static_response
from beanbill.api.problems import NotFound
from beanbill.rating.errors import BeanbillError
from beanbill.rating.periods import Month

MAX_FORM_BYTES = 4_096  # a key and a token: anything longer is not a login


@dataclass(frozen=True)
class Viewer:
    """A logged-in request: the API's caller, its session, and the context of pages."""

    caller: Caller
    session: Session

    def common(self, org: str, tab: str) -> dict[str, Any]:
        """What every organization page shows: who, where, and the way out."""
        customers = self.caller.context.workspace.customers.customer
        return {
            "org": figures.customer_of(self.caller, org),
            "visible": [c for c in customers if c.id in self.caller.organizations],
            "tab": tab,
            "form_token": self.session.form_token,
            "today": self.caller.context.today(),
        }


def _viewer(request: Request, org: str | None = None) -> Viewer:
    caller, session = portal_caller(request, context_of(request))
    if org is not None:
        caller.require(org)
    return Viewer(caller, session)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each), bounded: no multipart needed."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=8)
    return {name: values[0] for name, values in fields.items() if values}


def _month(text: str | None, today: date) -> Month:
    if text is None:
        return Month.of(today)
    try:
        return Month.parse(text)
    except (BeanbillError, ValueError) as error:
        raise NotFound("no such month") from error


def _selection(request: Request) -> Selection:
    query = request.query_params
    day = query.get("day")
    try:
        chosen_day = date.fromisoformat(day) if day else None
    except ValueError as error:
        raise NotFound("no such day") from error
    return Selection(query.get("family"), query.get("meter"), query.get("resource"), chosen_day)


def _login_page(context: ApiContext, request: Request, message: str, status: int) -> Response:
    token = new_login_token()
    response = page("login.html", status=status, message=message, token=token)
    remember_login_token(request, response, context.workspace.state_dir, token)
    return response


def portal_router() -> APIRouter:
    """The portal's pages under ``/portal``, to include in the API's app."""
    routes = APIRouter(prefix=PORTAL_PATH, include_in_schema=False, route_class=PortalRoute)
    _session_routes(routes)
    _organization_routes(routes)
    _invoice_routes(routes)

    @routes.get("/static/{name}")
    def static(name: str) -> Response:
        return static_response(name)

    return routes


def _session_routes(routes: APIRouter) -> None:
    @routes.get("/login")
    def login_form(request: Request) -> Response:
        return _login_page(context_of(request), request, "", 200)

    @routes.post("/login")
    async def login(request: Request) -> Response:
        context = context_of(request)
        fields = await _form(request)
        if not login_token_matches(request, context.workspace.state_dir, fields.get("token", "")):
            return _login_page(context, request, "The form expired: please try again.", 400)
        key = fields.get("key", "").strip()
        principal = await run_in_threadpool(authenticate_pasted_key, context, key)
        if principal is None:
            return _login_page(context, request, "This key is not valid.", 401)
        response = RedirectResponse(f"{PORTAL_PATH}/", status_code=303)
        start_session(request, response, context.workspace.state_dir, principal.key_id)
        return response

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        viewer = await run_in_threadpool(_viewer, request)
        fields = await _form(request)
        if not form_token_matches(viewer.session, fields.get("token", "")):
            raise NotFound("no such form")
        response = RedirectResponse(f"{PORTAL_PATH}/login", status_code=303)
        end_session(response)
        return response

    @routes.get("/")
    def home(request: Request) -> Response:
        viewer = _viewer(request)
        principal = viewer.caller.principal
        if principal.org is not None:
            return RedirectResponse(f"{PORTAL_PATH}/org/{principal.org}", status_code=303)
        customers = viewer.caller.context.workspace.customers.customer
        return page("organizations.html", organizations=customers,
                    form_token=viewer.session.form_token)  # fmt: skip


def _organization_routes(routes: APIRouter) -> None:
    @routes.get("/org/{org}")
    def overview(request: Request, org: str) -> Response:
        viewer = _viewer(request, org)
        caller, today = viewer.caller, viewer.caller.context.today()
        this_month = Month.of(today)
        teams = [
            figures.Team(
                team,
                figures.month_cost(caller, team.id, this_month),
                figures.month_cost(caller, team.id, this_month.previous()),
            )
            for team in figures.teams_of(caller, org)
        ]
        invoices = figures.invoices_of(caller, org)
        return page(
            "overview.html",
            **viewer.common(org, "overview"),
            this_month=figures.month_cost(caller, org, this_month),
            last_month=figures.month_cost(caller, org, this_month.previous()),
            provisional_available=figures.provisional_shown(),
            forecast=figures.forecast_of(caller, org),
            credits=figures.credits_of(caller, org),
            owed=figures.outstanding_of(invoices),
            recent=invoices[:5],
            teams=teams,
        )

    @routes.get("/org/{org}/usage")
    def usage(request: Request, org: str, month: str | None = None) -> Response:
        viewer = _viewer(request, org)
        caller, today = viewer.caller, viewer.caller.context.today()
        chosen = _month(month, today)
        report = figures.usage_report(caller, org, chosen)
        fallback = month is None and not report.periods
        if fallback:  # nothing posted yet this month: show the last month's
            chosen = chosen.previous()
            report = figures.usage_report(caller, org, chosen)
        base = f"{PORTAL_PATH}/org/{org}/usage"
        return page(
            "usage.html",
            **viewer.common(org, "usage"),
            view=drill_down(report, base, chosen, _selection(request)),
            fell_back_from=Month.of(today) if fallback else None,
            provisional=report.provisional,
            previous_href=f"{base}?month={chosen.previous().key}",
            next_href=f"{base}?month={chosen.next().key}",
        )

    @routes.get("/org/{org}/credits")
    def credits(request: Request, org: str) -> Response:
        viewer = _viewer(request, org)
        view = figures.credits_of(viewer.caller, org)
        return page("credits.html", **viewer.common(org, "credits"), credits=view)


def _invoice_routes(routes: APIRouter) -> None:
    @routes.get("/org/{org}/invoices")
    def invoices(request: Request, org: str) -> Response:
        viewer = _viewer(request, org)
        listed = figures.invoices_of(viewer.caller, org)
        return page("invoices.html", **viewer.common(org, "invoices"), invoices=listed)

    @routes.get("/org/{org}/payments")
    def payments(request: Request, org: str) -> Response:
        viewer = _viewer(request, org)
        customers = viewer.caller.context.workspace.customers.customer
        return page(
            "payments.html",
            **viewer.common(org, "payments"),
            payments=figures.payments_of(viewer.caller, org),
            names={c.id: c.name for c in customers if c.id in viewer.caller.organizations},
        )

    @routes.get("/org/{org}/invoices/{number}")
    def invoice(request: Request, org: str, number: str) -> Response:
        viewer = _viewer(request, org)
        view = figures.invoice_of(viewer.caller, org, number)
        return page("invoice.html", **viewer.common(org, "invoices"), invoice=view)

    @routes.get("/org/{org}/invoices/{number}/{kind}")
    def download(request: Request, org: str, number: str, kind: str) -> Response:
        viewer = _viewer(request, org)
        path, media_type = figures.document_path(viewer.caller, org, number, kind)
        return FileResponse(path, media_type=media_type, filename=path.name,
                            headers={"Cache-Control": "no-store"})  # fmt: skip
