"""Test helpers for the carbon providers: recorded responses served by httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parents[1] / "carbon" / "fixtures"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def recorded(name: str) -> Any:
    """A recorded JSON response body from tests/carbon/fixtures."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def json_reply(name: str, status: int = 200, **headers: str) -> httpx.Response:
    """An HTTP response carrying a recorded body."""
    return httpx.Response(status, json=recorded(name), headers=headers)


class FakeApi:
    """Answers each request path from a queue of replies and keeps the requests it saw.

    The last reply of a queue is repeated, so a path that always fails needs one entry.
    """

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, path: str, *replies: Reply) -> FakeApi:
        self.routes[path] = list(replies)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get(request.url.path)
        if not queue:
            return httpx.Response(404, json={"error": f"no route for {request.url.path}"})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx.Response):
            return reply(request)
        return reply

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]
