"""Runs the `greenwindow` CLI in-process against the test app through its TestClient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from scheduler.cli import app
from scheduler.client import ClientHooks

SERVER = "http://testserver"


class AppTransport(httpx.BaseTransport):
    """Hands the CLI's httpx requests to the in-process app through its TestClient."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.client.request(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            content=request.read(),
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


@dataclass
class Cli:
    """Runs CLI commands as a team member whose key is in the environment."""

    client: TestClient
    env: dict[str, str]
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[], None] | None = None

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        hooks = ClientHooks(
            transport=AppTransport(self.client), env=env or self.env, sleep=self._sleep
        )
        # A wide terminal keeps rich from folding ids and figures across lines.
        runner = CliRunner(env={"COLUMNS": "200"})
        return runner.invoke(app, list(args), obj=hooks)
