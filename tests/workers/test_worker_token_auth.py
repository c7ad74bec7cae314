"""Worker authentication checks the database on every protocol call, with no SELECT.

The request gate remembers valid credentials for a few seconds (known_credentials.py), so
these tests make sure a worker whose row or token changed is refused by the route at once,
even right after a successful call put its token in the gate's memory.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from support.fleet_helpers import register
from support.helpers import FakeClock, bearer

from scheduler.db.session import session_scope
from scheduler.known_credentials import KnownCredentials
from scheduler.workers.models import Worker
from scheduler.workers.token_auth import authenticate_and_touch


def _claim(client: TestClient, registration: dict, token: str | None = None):  # noqa: ANN202
    return client.post(
        f"/v1/workers/{registration['worker_id']}/claim",
        json={},
        headers=bearer(token or registration["token"]),
    )


def test_a_deleted_worker_is_refused_on_its_next_call(client: TestClient) -> None:
    registration = register(client)
    assert _claim(client, registration).status_code == 204  # the gate now knows the token
    with session_scope(client.app.state.session_factory) as session:
        session.execute(delete(Worker).where(Worker.id == registration["worker_id"]))
    refused = _claim(client, registration)
    assert refused.status_code == 401
    assert "invalid worker token" in refused.json()["detail"]  # the route refused, not the gate


def test_a_changed_token_hash_refuses_the_old_token_at_once(client: TestClient) -> None:
    registration = register(client)
    assert _claim(client, registration).status_code == 204
    with session_scope(client.app.state.session_factory) as session:
        session.execute(
            update(Worker).where(Worker.id == registration["worker_id"]).values(token_hash="0" * 64)
        )
    assert _claim(client, registration).status_code == 401


def test_a_wrong_secret_neither_authenticates_nor_marks_the_worker_seen(
    client: TestClient, clock: FakeClock
) -> None:
    registration = register(client)
    prefix, worker_id, _secret = registration["token"].split("_", 2)
    forged = f"{prefix}_{worker_id}_{'x' * 43}"
    clock.advance(minutes=5)
    assert _claim(client, registration, forged).status_code == 401
    factory = client.app.state.session_factory
    with session_scope(factory) as session:
        worker = session.get(Worker, worker_id)
        assert clock() - worker.last_seen_at >= timedelta(minutes=5)
        assert authenticate_and_touch(session, forged, now=clock()) is None
        assert authenticate_and_touch(session, "gww_only-two", now=clock()) is None
        seen = authenticate_and_touch(session, registration["token"], now=clock())
        assert seen is not None and seen.id == worker_id and seen.last_seen_at == clock()


def test_known_credentials_forget_after_their_ttl_and_beyond_their_bound() -> None:
    known = KnownCredentials(ttl_seconds=30, max_entries=2)
    known.remember("a", now=100.0)
    assert known.recently_valid("a", now=129.0)
    assert not known.recently_valid("a", now=131.0)
    assert not known.recently_valid("never-seen", now=100.0)
    for token in ("b", "c", "d"):
        known.remember(token, now=200.0)
    assert not known.recently_valid("b", now=200.0)  # the oldest went first
    assert known.recently_valid("c", now=200.0) and known.recently_valid("d", now=200.0)
