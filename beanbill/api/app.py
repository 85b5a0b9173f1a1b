"""``create_app``: the customer API over one workspace, with its OpenAPI 3 document.

Routes (every one needs an API key, ``Authorization: Bearer <key>``):

- ``POST /v1/events``: usage events in (the file ingest's rules);
- ``GET /v1/organizations[/{org}]``: what the key sees;
- ``GET /v1/organizations/{org}/usage?month=YYYY-MM``: closed periods, drilled down, and
  open ones from the provisional rating (flagged ``provisional``);
- ``GET /v1/organizations/{org}/forecast``: the current period's expected total;
- ``GET /v1/organizations/{org}/credits``: credit balance and lots;
- ``GET /v1/organizations/{org}/payments``: every payment, refund and credit note of its
  invoices (a parent's teams' too);
- ``GET /v1/invoices``, ``/v1/invoices/{number}`` and its ``pdf``, ``cii``, ``ubl`` and
  ``payments``;
- ``/portal/``: the customer portal's pages (``beanbill.api.portal``; the same keys as a
  login; not in the document).

The document is served at ``/openapi.json`` (and read at ``/docs``). Mounting it beside
the webhooks in ``beanbill serve`` is the server's business; the app itself starts no
thread and holds no connection between requests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from beanbill.api import credits, events, forecast, invoices, organizations, usage
from beanbill.api.context import ApiContext, ApiSettings, today_utc
from beanbill.api.portal import portal_router
from beanbill.api.problems import ApiProblem
from beanbill.rating.workspace import Workspace

TITLE = "beanbill customer API"
VERSION = "1"


async def _problem(request: Request, error: Exception) -> JSONResponse:
    """An ``ApiProblem`` as its status, JSON body and headers (never the key)."""
    if not isinstance(error, ApiProblem):  # pragma: no cover - registered for ApiProblem only
        raise error
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def routes(settings: ApiSettings) -> FastAPI:
    """The application's routes and document, not yet bound to a workspace (its OpenAPI
    document depends only on the settings: the events endpoint states its limits)."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=(
            "Usage events in; usage, invoices, payments and credits out. Money is exact: "
            "integer minor units (`*_minor`) and decimal strings, never floats. Another "
            "organization's object answers 404, as one that does not exist."
        ),
    )
    app.add_exception_handler(ApiProblem, _problem)
    app.include_router(events.router(settings))
    app.include_router(organizations.router())
    app.include_router(usage.router())
    app.include_router(forecast.router())
    app.include_router(credits.router())
    app.include_router(invoices.router())
    return app


def openapi_document(settings: ApiSettings | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document of an app with ``settings`` (to publish, or to test against)."""
    return routes(settings or ApiSettings()).openapi()


def create_app(
    workspace: Workspace,
    settings: ApiSettings | None = None,
    today: Callable[[], date] = today_utc,
) -> FastAPI:
    """The API over ``workspace``; ``today`` dates statuses (overdue, expiring lots)."""
    settings = settings or ApiSettings()
    app = routes(settings)
    app.include_router(portal_router())  # the customer portal: /portal/ (not in the document)
    app.state.context = ApiContext(workspace, settings, today)
    return app
