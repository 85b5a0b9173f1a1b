"""The organizations a key sees: its own, a parent's teams, or all (admin).

The starting point of a client: which organizations it may ask about, and how each is
billed. Another organization is "not found", as one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParameter
from pydantic import BaseModel, ConfigDict, Field

from beanbill.api.auth import CallerDependency
from beanbill.api.problems import NotFound, RateLimited, Unauthorized, responses
from beanbill.rating.config import Customer

MAX_ORGANIZATION_LENGTH = 128
OrganizationParameter = Annotated[
    str, PathParameter(max_length=MAX_ORGANIZATION_LENGTH, description="An organization's id.")
]


class Organization(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    parent: str | None = Field(description="The organization invoicing it centrally.")
    teams: list[str] = Field(description="The organizations it invoices centrally.")
    currency: str
    billing_mode: str = Field(description="postpaid, prepaid or provisioned.")
    billing_period: str = Field(description="daily, weekly or monthly.")


class OrganizationList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organizations: list[Organization]


def organization(customer: Customer, everyone: list[Customer]) -> Organization:
    return Organization(
        id=customer.id,
        name=customer.name,
        parent=customer.parent,
        teams=sorted(c.id for c in everyone if c.parent == customer.id),
        currency=customer.currency,
        billing_mode=customer.billing_mode.value,
        billing_period=customer.billing_period.value,
    )


def router() -> APIRouter:
    routes = APIRouter(tags=["organizations"])

    @routes.get(
        "/v1/organizations",
        response_model=OrganizationList,
        summary="The organizations this key sees",
        responses=responses(Unauthorized, RateLimited),
    )
    def list_organizations(caller: CallerDependency) -> OrganizationList:
        everyone = caller.context.workspace.customers.customer
        return OrganizationList(
            organizations=[
                organization(c, everyone) for c in everyone if c.id in caller.organizations
            ]
        )

    @routes.get(
        "/v1/organizations/{org}",
        response_model=Organization,
        summary="One organization",
        responses=responses(Unauthorized, NotFound, RateLimited),
    )
    def get_organization(caller: CallerDependency, org: OrganizationParameter) -> Organization:
        caller.require(org)
        everyone = caller.context.workspace.customers.customer
        [customer] = [c for c in everyone if c.id == org]
        return organization(customer, everyone)

    return routes
