"""The client's one exception hierarchy: every failure the CLI prints as `error: <str(exc)>`.

Scripts using `GreenwindowClient` catch the same classes; `str(exc)` is the CLI's line.
"""

from __future__ import annotations


class ClientError(Exception):
    """A failure the CLI prints as one line, never as a traceback."""

    def one_line(self) -> str:
        """The message shown after `error: `."""
        return str(self)


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code} {detail}".strip())
        self.status_code = status_code
        self.detail = detail


class ConnectionFailed(ClientError):
    """The server could not be reached at all."""


class UnexpectedResponse(ClientError):
    """The server answered, but not with the shape this client knows (an older service?)."""
