"""Dashboard sign-in: server-side sessions, CSRF on every form, no keys in addresses."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.helpers import ADMIN_TOKEN, admin_headers

from scheduler.db.session import session_scope
from scheduler.web.auth import COOKIE_NAME, LOGIN_CSRF_COOKIE
from scheduler.web.models import DashboardSession

OWN_ORIGIN = "http://testserver"


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def sign_in(client: TestClient, token: str, **headers: str) -> str:
    """Sign in through the form; returns the session cookie's value."""
    csrf = csrf_of(client.get("/dashboard/login").text)
    response = client.post(
        "/dashboard/login",
        data={"token": token, "csrf": csrf},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client.cookies[COOKIE_NAME]


def signed_in(client: TestClient) -> bool:
    return client.get("/dashboard/api/budgets").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_site_sign_in_is_refused_and_sets_no_cookie(
    sqlite_client: TestClient, headers: dict[str, str]
) -> None:
    csrf = csrf_of(sqlite_client.get("/dashboard/login").text)
    response = sqlite_client.post(
        "/dashboard/login",
        data={"token": ADMIN_TOKEN, "csrf": csrf},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert COOKIE_NAME not in response.headers.get("set-cookie", "")
    assert not signed_in(sqlite_client)


@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_a_sign_in_without_its_forms_token_is_refused(
    sqlite_client: TestClient, csrf: str | None
) -> None:
    sqlite_client.get("/dashboard/login")  # the browser holds the form's cookie
    data = {"token": ADMIN_TOKEN} if csrf is None else {"token": ADMIN_TOKEN, "csrf": csrf}
    response = sqlite_client.post(
        "/dashboard/login", data=data, headers={"Origin": OWN_ORIGIN}, follow_redirects=False
    )
    assert response.status_code == 403
    assert not signed_in(sqlite_client)
    # Another site cannot read the form's cookie either: without it, no token matches.
    sqlite_client.cookies.delete(LOGIN_CSRF_COOKIE, path="/dashboard")
    response = sqlite_client.post(
        "/dashboard/login", data={"token": ADMIN_TOKEN, "csrf": "x"}, follow_redirects=False
    )
    assert response.status_code == 403


def test_same_origin_sign_in_works_with_origin_or_fetch_metadata(
    sqlite_client: TestClient,
) -> None:
    sign_in(sqlite_client, ADMIN_TOKEN, Origin=OWN_ORIGIN)
    assert signed_in(sqlite_client)
    sqlite_client.cookies.clear()
    sign_in(sqlite_client, ADMIN_TOKEN, **{"Sec-Fetch-Site": "same-origin"})
    assert signed_in(sqlite_client)
    # What Chromium sends from our pages: their no-referrer policy makes the Origin null.
    sqlite_client.cookies.clear()
    sign_in(sqlite_client, ADMIN_TOKEN, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert signed_in(sqlite_client)


def test_sign_out_needs_the_pages_token_and_origin(sqlite_client: TestClient) -> None:
    sign_in(sqlite_client, ADMIN_TOKEN)
    page = sqlite_client.get("/dashboard/budgets")
    csrf = csrf_of(page.text)
    for data, headers in (
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": csrf}, {"Origin": "https://evil.example"}),
    ):
        refused = sqlite_client.post(
            "/dashboard/logout", data=data, headers=headers, follow_redirects=False
        )
        assert refused.status_code == 403
        assert signed_in(sqlite_client)
    out = sqlite_client.post("/dashboard/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert not signed_in(sqlite_client)


def test_the_cookie_holds_a_session_id_whose_hash_alone_is_stored_and_sign_out_revokes_it(
    sqlite_client: TestClient, alpha_key: str
) -> None:
    session_id = sign_in(sqlite_client, alpha_key)
    assert alpha_key not in session_id and session_id not in alpha_key
    factory = sqlite_client.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as session:
        rows = list(session.scalars(select(DashboardSession)))
        assert [r.id_hash for r in rows] == [hashlib.sha256(session_id.encode()).hexdigest()]
        assert all(session_id not in (r.credential_hash, r.id_hash) for r in rows)
    csrf = csrf_of(sqlite_client.get("/dashboard").text)
    sqlite_client.post("/dashboard/logout", data={"csrf": csrf})
    # Replaying the old cookie (stolen before sign-out) opens nothing.
    sqlite_client.cookies.set(COOKIE_NAME, session_id, path="/dashboard")
    assert not signed_in(sqlite_client)
    with session_scope(factory) as session:
        assert session.scalars(select(DashboardSession)).one().revoked_at is not None


def test_revoking_the_key_or_waiting_12_hours_ends_the_session(
    sqlite_client: TestClient, alpha_key: str
) -> None:
    sign_in(sqlite_client, alpha_key)
    assert signed_in(sqlite_client)
    key_id = alpha_key.split("_")[1]
    revoked = sqlite_client.delete(f"/v1/teams/alpha/keys/{key_id}", headers=admin_headers())
    assert revoked.status_code == 200
    assert not signed_in(sqlite_client)

    sqlite_client.cookies.clear()
    sign_in(sqlite_client, ADMIN_TOKEN)
    clock = sqlite_client.app.state.clock  # type: ignore[attr-defined]
    clock.advance(hours=11, minutes=59)
    assert signed_in(sqlite_client)
    clock.advance(minutes=2)
    assert not signed_in(sqlite_client)


def test_keys_in_the_address_are_refused(sqlite_client: TestClient, alpha_key: str) -> None:
    for path in (f"/dashboard?token={alpha_key}", f"/dashboard/budgets?token={ADMIN_TOKEN}"):
        response = sqlite_client.get(path, follow_redirects=False)
        assert response.status_code == 400
        # At most a deletion of the session cookie; never a new session.
        assert not re.search(f'{COOKIE_NAME}=[^";]', response.headers.get("set-cookie", ""))
        assert alpha_key not in response.text and ADMIN_TOKEN not in response.text
    assert not signed_in(sqlite_client)
