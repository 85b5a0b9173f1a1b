"""The customer portal: server-rendered pages over the customer API, same keys as a login.

``portal_router()`` gives the pages under ``/portal`` (to include in the app made by
``beanbill.api.app.create_app``): log in by pasting an API key, then read the current
period's cost, a usage drill-down chart (family → meter → resource → day), invoices with
their PDF, CII and UBL files and payment histories, every payment, refund and credit note,
and credits with their expiry; a parent organization also sees its teams. Scope and
isolation are the API's own.
"""

from __future__ import annotations

from beanbill.api.portal.pages import portal_router

__all__ = ["portal_router"]
