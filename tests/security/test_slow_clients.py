"""Slow clients cannot take the API: a real uvicorn server on 127.0.0.1, raw sockets trickling.

Every loop here is bounded (a number of bytes, or a deadline) and every socket is closed by
the test, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.helpers import ADMIN_TOKEN, FakeClock, admin_headers, bearer, burn_in_job

from scheduler.app import create_app
from scheduler.request_gate import Admission, header_timeout_protocol
from scheduler.serving import serve_in_thread
from scheduler.settings import Settings


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[tuple[str, int]]:
    """The app under uvicorn with the header-timeout protocol `greenwindow serve` uses."""
    app = create_app(settings, clock=FakeClock(), run_ticks=False)
    protocol = header_timeout_protocol(settings.header_timeout_seconds)
    with serve_in_thread(app, http=protocol) as url:
        yield url, int(url.rsplit(":", 1)[1])


def settings_for(tmp_path: Path, sqlite_template: Path, **limits: Any) -> Settings:
    import shutil

    shutil.copy(sqlite_template, tmp_path / "greenwindow.db")
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'greenwindow.db'}",
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        **limits,
    )


def team_key(url: str) -> str:
    response = httpx.post(f"{url}/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert response.status_code == 201, response.text
    return response.json()["api_key"]


class Trickler:
    """Sockets sending a POST's headers, then one body byte per interval, in a thread."""

    def __init__(self, port: int, key: str | None, count: int, interval_s: float) -> None:
        self.sockets: list[socket.socket] = []
        auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + auth
                + b"Content-Length: 400\r\n\r\n{"
            )
            self.sockets.append(sock)
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _ in range(300):  # at most 300 bytes: never the whole 400-byte body
            if self.stop.wait(self.interval_s):
                return
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


def read_status(sock: socket.socket, timeout_s: float) -> bytes:
    """The status line the server sent, or b'' if it closed without one."""
    sock.settimeout(timeout_s)
    answer = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in answer:
            piece = sock.recv(4096)
            if not piece:
                break
            answer += piece
    return answer.split(b"\r\n", 1)[0]


def test_api_answers_while_more_slow_bodies_than_slots_are_connected(
    tmp_path: Path, sqlite_template: Path
) -> None:
    slots = 2
    settings = settings_for(
        tmp_path,
        sqlite_template,
        max_concurrent_requests=slots,
        body_timeout_seconds=60,
        body_idle_timeout_seconds=30,
    )
    with serve(settings) as (url, port):
        key = team_key(url)
        authenticated = Trickler(port, key, count=slots + 1, interval_s=0.2)
        anonymous = Trickler(port, None, count=slots + 1, interval_s=0.2)
        try:
            time.sleep(0.5)  # every slow client is connected and trickling
            started = time.monotonic()
            listing = httpx.get(f"{url}/v1/jobs", headers=bearer(key), timeout=10)
            assert listing.status_code == 200, listing.text
            submitted = httpx.post(
                f"{url}/v1/jobs", json=burn_in_job(), headers=bearer(key), timeout=10
            )
            assert submitted.status_code == 201, submitted.text
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            assert time.monotonic() - started < 10
            # The anonymous ones were answered at once, without their bodies.
            for sock in anonymous.sockets:
                assert read_status(sock, 5).startswith(b"HTTP/1.1 401")
        finally:
            authenticated.close()
            anonymous.close()


def test_a_trickled_body_is_cut_off_by_the_body_timeout(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings = settings_for(
        tmp_path, sqlite_template, body_timeout_seconds=1.5, body_idle_timeout_seconds=1.0
    )
    with serve(settings) as (url, port):
        key = team_key(url)
        trickling = Trickler(port, key, count=1, interval_s=0.2)  # never idle for 1 s
        stalled = Trickler(port, key, count=1, interval_s=3600)  # sends nothing more
        try:
            started = time.monotonic()
            assert read_status(stalled.sockets[0], 10).startswith(b"HTTP/1.1 408")
            assert read_status(trickling.sockets[0], 10).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 8
        finally:
            trickling.close()
            stalled.close()


def test_a_stalled_upload_holds_no_api_slot_and_times_out(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings = settings_for(
        tmp_path, sqlite_template, max_concurrent_requests=1, body_idle_timeout_seconds=1.5
    )
    with serve(settings) as (url, port):
        key = team_key(url)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as upload:
            upload.sendall(
                b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Length: 100000\r\n\r\nPK\x03\x04"
            )
            time.sleep(0.3)  # the upload is admitted and waiting for more bytes
            listing = httpx.get(f"{url}/v1/jobs", headers=bearer(key), timeout=5)
            assert listing.status_code == 200
            started = time.monotonic()
            assert read_status(upload, 10).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 5
        # Nothing of the interrupted upload is kept.
        incoming = tmp_path / "data" / "datasets" / "incoming"
        assert not incoming.exists() or list(incoming.iterdir()) == []


def test_headers_sent_too_slowly_close_the_connection(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings = settings_for(tmp_path, sqlite_template, header_timeout_seconds=1.0)
    with serve(settings) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v1/jobs HTTP/1.1\r\n")
            started = time.monotonic()
            closed = False
            for _ in range(40):  # one header byte per 0.1 s: a slowloris
                try:
                    sock.sendall(b"X")
                    sock.settimeout(0.1)
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
            assert closed, "the server kept a connection whose headers never ended"
            assert time.monotonic() - started < 3.5
        # An idle connection that sends nothing at all is closed too.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            assert idle.recv(1) == b""


def test_healthz_says_503_while_every_slot_is_stuck(tmp_path: Path, sqlite_template: Path) -> None:
    settings = settings_for(
        tmp_path, sqlite_template, max_concurrent_requests=1, health_saturation_seconds=0.5
    )
    with serve(settings) as (url, _):
        key = team_key(url)
        # Another process's transaction holds the database: the next request waits inside
        # its slot (SQLite's busy timeout), which is what a stuck service looks like.
        holder = sqlite3.connect(tmp_path / "greenwindow.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        result: dict[str, int] = {}
        stuck = threading.Thread(
            target=lambda: result.update(
                status=httpx.get(f"{url}/v1/jobs", headers=bearer(key), timeout=40).status_code
            )
        )
        stuck.start()
        try:
            # Past the bound: healthz answers from the slot count, without the stuck database.
            time.sleep(1.0)
            health = httpx.get(f"{url}/healthz", timeout=5)
            assert health.status_code == 503, health.text
            assert "slot" in health.json()["requests"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            stuck.join(timeout=40)
        assert result["status"] == 200
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


def test_admission_saturation_clock_restarts_when_a_request_finishes() -> None:
    now = [100.0]
    admission = Admission(limit=2, upload_limit=1, clock=lambda: now[0])

    async def scenario() -> None:
        first = admission.slot()
        second = admission.slot()
        await first.__aenter__()
        now[0] += 5
        assert admission.saturated_for() == 0.0  # one slot still free
        await second.__aenter__()
        now[0] += 7
        assert admission.saturated_for() == pytest.approx(7.0)
        await first.__aexit__(None, None, None)
        assert admission.saturated_for() == 0.0
        third = admission.slot()
        await third.__aenter__()  # full again: the clock starts over
        now[0] += 1
        assert admission.saturated_for() == pytest.approx(1.0)
        await third.__aexit__(None, None, None)
        await second.__aexit__(None, None, None)
        # Uploads have their own pool and never count against the API's slots.
        async with admission.slot(upload=True):
            assert admission.in_use == 0

    asyncio.run(scenario())
