"""HTML answers: Jinja2 templates with autoescape, strict security headers, error pages.

Every page is escaped by default (customer names, resource names and invoice texts are
the customers' own words), served with a Content-Security-Policy that allows scripts and
styles from the portal's own static files only (the chart's data travels as a JSON block
that is never executed), and never cached. An API problem raised while building a page
(another tenant's organization: 404; a revoked key: back to the login page; over the
rate: 429) becomes an HTML page instead of the API's JSON body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import jinja2
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from beanbill.api.money import minor_text
from beanbill.api.portal.access import LoggedOut
from beanbill.api.portal.session import PORTAL_PATH, end_session
from beanbill.api.problems import ApiProblem

TEMPLATES = Path(__file__).parent / "templates"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CENT = Decimal("0.01")


def money(amount: Decimal | str, currency: str) -> str:
    """A rated amount for reading: to the cent (the exact figure is in a ``title``)."""
    rounded = Decimal(amount).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return f"{rounded:,.2f} {currency}"


def minor_money(amount_minor: int, currency: str) -> str:
    return f"{minor_text(amount_minor, currency)} {currency}"


def quantity(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = f"{value.normalize():,f}"
    return text


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = money
    environment.filters["minor_money"] = minor_money
    environment.filters["quantity"] = quantity
    environment.globals["portal"] = PORTAL_PATH
    return environment


ENVIRONMENT = _environment()


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The template ``name`` rendered with ``context``, with the security headers."""
    html = ENVIRONMENT.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def problem_page(problem: ApiProblem) -> Response:
    """An API problem as the portal answers it (the message, escaped; never a key)."""
    if isinstance(problem, LoggedOut):
        back = RedirectResponse(f"{PORTAL_PATH}/login", status_code=303)
        end_session(back)
        return back
    titles = {404: "Not found", 429: "Too many requests", 503: "Unavailable"}
    response = page(
        "error.html",
        status=problem.status,
        title=titles.get(problem.status, "Error"),
        message=problem.message if problem.status != 404 else "There is nothing here.",
    )
    response.headers.update(problem.headers)
    return response


class PortalRoute(APIRoute):
    """A portal route: API problems become HTML pages, not the API's JSON errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def portal_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiProblem as problem:
                return problem_page(problem)

        return portal_handler
