"""Bodies are neither read nor parsed before the caller is known, and limits follow routes.

The app is driven at the ASGI level with a `receive` that counts the body bytes it hands
out, so "refused without being read" is measured, not inferred from the status code.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from support.helpers import ADMIN_TOKEN, FakeClock, serve_in_thread
from support.world import sqlite_settings_in

from scheduler.app import create_app
from scheduler.request_gate import is_upload_route

MiB = 1024 * 1024


class CountingBody:
    """An ASGI `receive` that streams `total` bytes of a JSON array of empty objects."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.handed_out = 0

    async def __call__(self) -> dict[str, Any]:
        if self.handed_out >= self.total:
            await asyncio.sleep(3600)  # the client waits for the answer
        size = min(self.chunk, self.total - self.handed_out)
        self.handed_out += size
        piece = (b"[" + b"{}," * (size // 3))[:size].ljust(size, b" ")
        return {"type": "http.request", "body": piece, "more_body": self.handed_out < self.total}


def call(
    app: Any, method: str, path: str, headers: dict[str, str], body: CountingBody
) -> tuple[int, dict[str, Any]]:
    """Run one request through the ASGI app; returns (status, JSON answer)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(asyncio.wait_for(app(scope, body, send), timeout=30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload)


@pytest.fixture
def app(tmp_path: Path, sqlite_template: Path) -> Any:
    return create_app(
        sqlite_settings_in(tmp_path, sqlite_template), clock=FakeClock(), run_ticks=False
    )


def test_only_the_two_upload_routes_get_the_upload_limit() -> None:
    assert is_upload_route("POST", "/v1/datasets")
    assert is_upload_route("PUT", "/v1/jobs/01J/artifacts/adapter.safetensors")
    # The probe's path merely contained "/artifacts/"; these are ordinary requests.
    assert not is_upload_route("PUT", "/v1/zones/artifacts/tariff")
    assert not is_upload_route("POST", "/v1/datasets/x/../../jobs")
    assert not is_upload_route("POST", "/v1/datasetsX")
    assert not is_upload_route("GET", "/v1/datasets")
    assert not is_upload_route("POST", "/v1/jobs/01J/artifacts/a/b")
    assert not is_upload_route("POST", "/dashboard/v1/datasets")


def test_unauthenticated_32_mib_to_a_path_containing_artifacts_is_not_read(app: Any) -> None:
    body = CountingBody(32 * MiB)
    status, answer = call(
        app,
        "PUT",
        "/v1/zones/artifacts/tariff",
        {"content-type": "application/json", "content-length": str(32 * MiB)},
        body,
    )
    assert status == 413 and answer["field"] == "body"
    assert body.handed_out == 0


@pytest.mark.parametrize("authorization", [None, "Bearer definitely-not-a-key", "Bearer gw_x_y"])
def test_unauthenticated_chunked_body_gets_401_before_a_byte_is_read(
    app: Any, authorization: str | None
) -> None:
    headers = {"content-type": "application/json", "transfer-encoding": "chunked"}
    if authorization:
        headers["authorization"] = authorization
    body = CountingBody(32 * MiB)
    status, answer = call(app, "PUT", "/v1/zones/artifacts/tariff", headers, body)
    assert status == 401 and answer["field"] == "Authorization"
    assert body.handed_out == 0


def test_unauthenticated_upload_is_refused_before_its_body(app: Any) -> None:
    body = CountingBody(100 * MiB)
    for path, method in (("/v1/datasets", "POST"), ("/v1/jobs/01J/artifacts/x.bin", "PUT")):
        status, _ = call(
            app,
            method,
            path,
            {"content-type": "application/zip", "content-length": str(100 * MiB)},
            body,
        )
        assert status == 401, path
    assert body.handed_out == 0


def test_a_chunked_json_body_one_byte_over_the_limit_gets_413(app: Any) -> None:
    body = CountingBody(MiB + 1)
    status, answer = call(
        app,
        "PUT",
        "/v1/zones/ES/tariff",
        {
            "content-type": "application/json",
            "transfer-encoding": "chunked",
            "authorization": f"Bearer {ADMIN_TOKEN}",
        },
        body,
    )
    assert status == 413 and answer["field"] == "body"
    assert body.handed_out == MiB + 1  # read up to the limit, then refused: never parsed


def test_real_server_answers_401_without_waiting_for_the_body(app: Any) -> None:
    """On a socket: only the headers are sent, and the 401 still comes back."""
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"PUT /v1/zones/artifacts/tariff HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[{},"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                piece = sock.recv(4096)
                if not piece:
                    break
                answer += piece
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
