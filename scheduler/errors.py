"""Domain errors raised by services; the app maps them to HTTP statuses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class DomainError(Exception):
    """Base of the errors a service may raise for a client mistake."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON error body: a message naming the problem, and the field when there is one."""
        body: dict[str, Any] = {"detail": self.message}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return body


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class InvalidInput(DomainError):
    status_code = 422


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class PayloadTooLarge(DomainError):
    status_code = 413


class ErrorBody(BaseModel):
    """Every error answer: what went wrong, and the field or header it concerns."""

    model_config = ConfigDict(extra="allow")

    detail: str
    field: str | None = None


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Documented on every operation (the OpenAPI must not hide the answers clients will get).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed JSON body"),
    401: _error("Missing, invalid or revoked key"),
    403: _error("The key may not call this endpoint"),
    404: _error("Not found (another team's resources are not found either)"),
    409: _error("Conflict with the current state (e.g. budget denial, stale lease)"),
    413: _error("Request body too large"),
    503: _error("Database unavailable or busy; retry"),
}
