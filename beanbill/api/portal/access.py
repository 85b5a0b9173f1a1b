"""Who is looking at a portal page: the session's key, checked again at every request.

The API's own rules decide everything: ``KeyStore.authenticate`` checks the key pasted
at login, ``visible_organizations`` gives what the key sees (its organization and, for a
parent, its teams; all for an admin key), ``Caller.require`` answers "not found" for any
other organization, and the key's rate-limit bucket is the API's. Only the key id travels
in the cookie, so each request reads the key's record: a revoked key logs out at once.
"""

from __future__ import annotations

from starlette.requests import Request

from beanbill.api.auth import MAX_KEY_LENGTH, Caller
from beanbill.api.context import ApiContext
from beanbill.api.keys import Principal, visible_organizations
from beanbill.api.portal.session import Session, read_session
from beanbill.api.problems import ApiProblem, RateLimited
from beanbill.api.rate_limit import retry_after_seconds


class LoggedOut(ApiProblem):
    """No session, an expired one, or one whose key was revoked: back to the login page."""

    status = 303
    code = "logged_out"


def principal_of_key_id(context: ApiContext, key_id: str) -> Principal | None:
    """The principal of an unrevoked key by its id (the session's), or None."""
    records = context.keys.keys()  # at most 10,000: the store bounds them
    for record in records:
        if record.key_id == key_id:
            return None if record.revoked else Principal(record.key_id, record.org)
    return None


def caller_of(principal: Principal, context: ApiContext) -> Caller:
    """The API's ``Caller`` for ``principal``, after taking from its rate-limit bucket."""
    wait = context.buckets.take(principal.key_id)
    if wait > 0:
        raise RateLimited(retry_after_seconds(wait))
    customers = context.workspace.customers.customer
    return Caller(principal, visible_organizations(principal, customers), context)


def portal_caller(request: Request, context: ApiContext) -> tuple[Caller, Session]:
    """The caller and session of a portal page; ``LoggedOut`` when there is none."""
    session = read_session(request, context.workspace.state_dir)
    if session is None:
        raise LoggedOut("please log in")
    principal = principal_of_key_id(context, session.key_id)
    if principal is None:
        raise LoggedOut("this key is no longer valid")
    return caller_of(principal, context), session


def authenticate_pasted_key(context: ApiContext, key: str) -> Principal | None:
    """The principal of a key pasted in the login form (the API's check, same bound)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    return context.keys.authenticate(key)
