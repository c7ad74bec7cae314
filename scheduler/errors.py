"""Domain errors raised by services; the app maps them to HTTP statuses."""

from __future__ import annotations

from typing import Any


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
