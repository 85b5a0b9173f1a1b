"""Who is asking: the bearer key checked, the rate limit taken, the organizations it sees.

Every ``/v1`` route depends on ``caller``. A missing, unknown or revoked key gets the
same 401; a known key over its rate gets 429 with ``Retry-After``. The key itself is
only hashed and compared: it is never logged, stored or echoed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from beanbill.api.context import ApiContext, context_of
from beanbill.api.keys import Principal, visible_organizations
from beanbill.api.problems import NotFound, RateLimited, Unauthorized
from beanbill.api.rate_limit import retry_after_seconds

MAX_KEY_LENGTH = 200  # longer than any key: not hashed, not looked up

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `beanbill api-key create ORG` (or `--admin`), as a bearer token.",
)


@dataclass(frozen=True)
class Caller:
    """An authenticated request: its key's principal and the organizations it may see."""

    principal: Principal
    organizations: frozenset[str]
    context: ApiContext

    def require(self, org: str) -> str:
        """``org`` if this key sees it; otherwise "not found", as for an unknown one."""
        if org not in self.organizations:
            raise NotFound(f"no organization {org!r}")
        return org


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    context = context_of(request)
    if credentials is None or len(credentials.credentials) > MAX_KEY_LENGTH:
        raise Unauthorized()
    principal = context.keys.authenticate(credentials.credentials)
    if principal is None:
        raise Unauthorized()
    wait = context.buckets.take(principal.key_id)
    if wait > 0:
        raise RateLimited(retry_after_seconds(wait))
    organizations = visible_organizations(principal, context.workspace.customers.customer)
    return Caller(principal, organizations, context)


CallerDependency = Annotated[Caller, Depends(caller)]
