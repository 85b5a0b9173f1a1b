"""The API's error answers: one JSON shape, one named exception per status.

Every error body is ``{"error": {"code": ..., "message": ...}}``: a fixed code a program
can switch on, and a sentence for a person. Messages never quote the API key, and an
object of another organization is "not found", exactly as one that does not exist.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from beanbill.rating.errors import BeanbillError


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str


class ErrorBody(BaseModel):
    """What every error answer of the API holds."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class ApiProblem(BeanbillError):
    """A request answered with an error: its status, code, message and headers."""

    status = 500
    code = "internal"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message)).model_dump()


class Unauthorized(ApiProblem):
    """No key, an unknown key or a revoked one: the same answer for each."""

    status = 401
    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "a valid API key is required: send it as 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )


class NotFound(ApiProblem):
    """Nothing this key may see has that name (it may exist for another organization)."""

    status = 404
    code = "not_found"


class BodyTooLarge(ApiProblem):
    status = 413
    code = "body_too_large"


class InvalidRequest(ApiProblem):
    """The request as a whole cannot be taken (not JSON, no events list, too many events)."""

    status = 422
    code = "invalid_request"


class RateLimited(ApiProblem):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many requests with this key: retry in {retry_after} s",
            {"Retry-After": str(retry_after)},
        )


class Unavailable(ApiProblem):
    """The workspace cannot answer now (books that do not load, a lock held too long)."""

    status = 503
    code = "unavailable"


class ApiSettingsError(BeanbillError):
    """The API's own settings (limits, rate) are out of range."""


def responses(*problems: type[ApiProblem]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of a route for the problems it may answer."""
    return {
        problem.status: {"model": ErrorBody, "description": problem.__doc__ or problem.code}
        for problem in problems
    }
