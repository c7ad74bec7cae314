"""Team webhooks cannot freeze the service or reach its own network.

Attacks covered here:
- a receiver that trickles its answer one byte at a time while the database is in use: the
  notification is only written in the tick's transaction and POSTed after commit, under a
  total deadline, so `GET /v1/jobs` answers meanwhile (on SQLite, where a transaction holds
  the write lock);
- webhook URLs pointing at loopback, link-local, private or cloud-metadata addresses
  (literal or behind a host name): refused at team creation (422 naming `webhook_url`) and
  again before each delivery, unless the operator allows internal addresses;
- forged notifications: every body carries an HMAC-SHA256 signature with the team's
  secret, shown once at creation or rotation;
- failing receivers: retried with doubling backoff, then given up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job, serve_in_thread
from support.world import sqlite_settings_in

from scheduler.app import create_app
from scheduler.db.session import session_scope
from scheduler.maintenance import deliver_webhooks, run_tick
from scheduler.webhooks.models import WebhookDelivery
from scheduler.webhooks.service import SIGNATURE_HEADER, WebhookUrlRefused, check_url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://localhost:9000/hook", "internal"),
        ("http://metadata.google.internal/computeMetadata/v1/", "internal"),
        ("ftp://example.org/hook", "http"),
    ],
)
def test_internal_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookUrlRefused, match=reason):
        check_url(url, allow_internal=False, resolve=False)


def test_public_addresses_pass_and_the_operator_may_allow_internal_ones() -> None:
    check_url("https://93.184.216.34/hook", allow_internal=False)
    check_url("http://127.0.0.1:8000/hook", allow_internal=True)


def test_a_team_with_a_metadata_webhook_is_refused(sqlite_client: TestClient) -> None:
    response = sqlite_client.post(
        "/v1/teams",
        json={"name": "probe", "webhook_url": "http://169.254.169.254/latest/meta-data/"},
        headers=admin_headers(),
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "webhook_url"
    assert "metadata" in response.json()["detail"]


# --- receivers on 127.0.0.1 ---------------------------------------------------------------


class TricklingReceiver:
    """Reads a request, then sends a never-ending header one byte every `gap` seconds, so a
    per-read timeout never fires; it stops when told to or when the client hangs up."""

    def __init__(self, gap: float = 0.25) -> None:
        self.gap = gap
        self.connected = threading.Event()
        self.stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(30)
        try:
            connection, _ = self._server.accept()
        except OSError:
            return
        with connection:
            connection.recv(65536)
            self.connected.set()
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
                while not self.stop.is_set():
                    connection.sendall(b"a")
                    time.sleep(self.gap)
            except OSError:
                return  # the client gave up: what the deadline is for

    def close(self) -> None:
        self.stop.set()
        self._server.close()
        self._thread.join(timeout=5)


class RecordingReceiver:
    """Answers each POST with the next status of `statuses`, keeping bodies and headers."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append((body, dict(self.headers.items())))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook_app(tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[Any, FakeClock]]:
    settings = sqlite_settings_in(tmp_path, sqlite_template).model_copy(
        update={
            "webhook_allow_internal": True,  # the receivers of these tests are on 127.0.0.1
            "webhook_deadline_seconds": 2.0,
            "webhook_retry_seconds": 30.0,
            "webhook_max_attempts": 3,
        }
    )
    clock = FakeClock()
    yield create_app(settings, clock=clock, run_ticks=False), clock


def team_over_its_notify_threshold(client: TestClient | httpx.Client, url: str) -> tuple[str, str]:
    """A team whose webhook is `url` and whose submitted job crosses a notify threshold;
    returns (team key, webhook secret)."""
    created = client.post(
        "/v1/teams", json={"name": "loud", "webhook_url": url}, headers=admin_headers()
    )
    assert created.status_code == 201, created.text
    key, secret = created.json()["api_key"], created.json()["webhook_secret"]
    assert secret
    budget = client.put(
        "/v1/teams/loud/budget",
        json={
            "period": "month",
            "limit_kg_co2e": 1e-6,
            "mode": "soft",
            "thresholds": [{"percent": 50, "action": "notify"}],
        },
        headers=admin_headers(),
    )
    assert budget.status_code == 200, budget.text
    submitted = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(key))
    assert submitted.status_code == 201, submitted.text
    return key, secret


def deliveries(app: Any) -> list[WebhookDelivery]:
    with session_scope(app.state.session_factory) as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
    return rows


def test_a_trickling_receiver_does_not_block_the_api(
    webhook_app: tuple[Any, FakeClock],
) -> None:
    app, clock = webhook_app
    receiver = TricklingReceiver(gap=0.25)
    try:
        with serve_in_thread(app) as base:
            # Before the fix the tick held SQLite's write lock for as long as the receiver
            # kept trickling, and this client's reads timed out.
            with httpx.Client(base_url=base, timeout=10) as http:
                key, _ = team_over_its_notify_threshold(http, receiver.url)
                pass_done = threading.Event()

                def notify_then_deliver() -> None:
                    assert run_tick(app, "budget_notify") == 1
                    deliver_webhooks(app)
                    pass_done.set()

                background = threading.Thread(target=notify_then_deliver, daemon=True)
                background.start()
                assert receiver.connected.wait(20), "the webhook was never sent"
                listed = http.get("/v1/jobs", headers=bearer(key))
                # Answered while the webhook was still being delivered.
                assert not pass_done.is_set()
                assert listed.status_code == 200, listed.text
                assert len(listed.json()["items"]) == 1
                background.join(timeout=30)
                assert pass_done.is_set()
    finally:
        receiver.close()
    [row] = deliveries(app)
    # The total deadline ended the attempt; it waits for its retry.
    assert row.state == "pending" and row.attempts == 1
    assert "within 2 s" in (row.last_error or "")
    assert row.next_attempt_at == clock.now + timedelta(seconds=30)


def test_deliveries_are_signed_retried_with_backoff_then_delivered(
    webhook_app: tuple[Any, FakeClock],
) -> None:
    app, clock = webhook_app
    receiver = RecordingReceiver([500, 503, 200])
    try:
        with TestClient(app) as client:
            _, secret = team_over_its_notify_threshold(client, receiver.url)
            assert run_tick(app, "budget_notify") == 1
            assert run_tick(app, "budget_notify") == 0  # fired once per period
            assert len(receiver.received) == 0  # nothing is sent inside the tick
            gaps = []
            for _ in range(3):
                before = clock.now
                deliver_webhooks(app)
                [row] = deliveries(app)
                if row.state == "pending":
                    gaps.append(row.next_attempt_at - before)
                    assert deliver_webhooks(app) == 0  # not due yet
                    clock.now = row.next_attempt_at
            assert gaps == [timedelta(seconds=30), timedelta(seconds=60)]
            assert row.state == "delivered" and row.attempts == 3
            body, headers = receiver.received[-1]
            expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
            payload = json.loads(body)
            assert payload["event"] == "budget_threshold" and payload["team"] == "loud"
            assert payload["percent"] == 50

            rotated = client.post("/v1/teams/loud/webhook-secret", headers=admin_headers())
            assert rotated.status_code == 200, rotated.text
            assert rotated.json()["webhook_secret"] != secret
            team = client.get("/v1/teams/loud", headers=admin_headers()).json()
            assert "webhook_secret" not in team  # shown once, never listed
    finally:
        receiver.close()


def test_a_receiver_that_keeps_failing_is_given_up(
    webhook_app: tuple[Any, FakeClock],
) -> None:
    app, clock = webhook_app
    receiver = RecordingReceiver([500] * 10)
    try:
        with TestClient(app) as client:
            team_over_its_notify_threshold(client, receiver.url)
            run_tick(app, "budget_notify")
            for _ in range(5):
                deliver_webhooks(app)
                clock.advance(hours=1)
    finally:
        receiver.close()
    [row] = deliveries(app)
    assert row.state == "failed" and row.attempts == 3 and row.last_error == "HTTP 500"
    assert len(receiver.received) == 3


def test_an_internal_url_is_refused_again_at_delivery(
    webhook_app: tuple[Any, FakeClock],
) -> None:
    """A URL accepted while internal addresses were allowed (or a name that now resolves
    inward) is checked again before every POST."""
    app, _ = webhook_app
    receiver = RecordingReceiver([200])
    try:
        with TestClient(app) as client:
            team_over_its_notify_threshold(client, receiver.url)
            run_tick(app, "budget_notify")
            app.state.settings = app.state.settings.model_copy(
                update={"webhook_allow_internal": False}
            )
            deliver_webhooks(app)
    finally:
        receiver.close()
    [row] = deliveries(app)
    assert row.state == "pending" and "loopback" in (row.last_error or "")
    assert receiver.received == []
