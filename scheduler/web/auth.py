"""Who is looking at the dashboard, and whether a form post really came from it.

A token (the admin token or a team key) is typed into the sign-in form once. The service
then opens a server-side session and the browser keeps only its random id, in an HttpOnly,
SameSite=Strict cookie scoped to /dashboard: the key itself never sits in the browser, and
signing out revokes the session for good. Keys are never taken from the address (it ends up
in access logs and browser history). The worker fleet token never opens the dashboard.

Every form post (sign in, sign out) must come from the dashboard's own origin (`Origin`,
else `Sec-Fetch-Site`) and carry a CSRF token: before sign-in, one that matches a
short-lived cookie (double submit); after, one derived from the session id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scheduler.deps import Principal
from scheduler.settings import Settings
from scheduler.teams.models import ApiKey
from scheduler.teams.service import authenticate_key, find_active_key
from scheduler.web.models import DashboardSession

COOKIE_NAME = "greenwindow_dashboard"
LOGIN_CSRF_COOKIE = "greenwindow_login_csrf"
COOKIE_PATH = "/dashboard"
SESSION_LIFETIME = timedelta(hours=12)
LOGIN_CSRF_MAX_AGE_S = 3600


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _same_secret(presented: str, configured: str | None) -> bool:
    # compare_digest keeps the comparison time independent of where the strings differ.
    return configured is not None and hmac.compare_digest(presented.encode(), configured.encode())


def principal_for_token(
    session: Session, settings: Settings, token: str, *, now: datetime
) -> Principal | None:
    """The admin or the team a presented token stands for; None for anything else."""
    token = token.strip()
    if not token or len(token) > 512:
        return None
    if _same_secret(token, settings.admin_token):
        return Principal("admin")
    if _same_secret(token, settings.worker_token):
        return None
    team = authenticate_key(session, token, now=now)
    return Principal("team", team) if team is not None else None


def open_session(session: Session, settings: Settings, token: str, *, now: datetime) -> str | None:
    """Start a dashboard session for a valid token; returns the id for the cookie, or None."""
    principal = principal_for_token(session, settings, token, now=now)
    if principal is None:
        return None
    token = token.strip()
    key = None if principal.is_admin else find_active_key(session, token)
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at < now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        DashboardSession(
            id_hash=_sha256(session_id),
            kind="admin" if principal.is_admin else "team",
            api_key_id=key.id if key is not None else None,
            credential_hash=_sha256(token),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    session.flush()
    return session_id


def principal_for_session(
    session: Session, settings: Settings, session_id: str | None, *, now: datetime
) -> Principal | None:
    """The admin or team behind a live session id; None if unknown, expired or revoked."""
    if not session_id or len(session_id) > 128:
        return None
    row = session.get(DashboardSession, _sha256(session_id))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if row.kind == "admin":
        current = settings.admin_token
        if current is None or not hmac.compare_digest(row.credential_hash, _sha256(current)):
            return None
        return Principal("admin")
    key = session.scalar(select(ApiKey).where(ApiKey.id == row.api_key_id))
    if key is None or key.revoked_at is not None:
        return None
    return Principal("team", key.team)


def close_session(session: Session, session_id: str | None, *, now: datetime) -> None:
    """Revoke a session (sign-out): its id opens nothing any more, even if replayed."""
    if not session_id or len(session_id) > 128:
        return
    row = session.get(DashboardSession, _sha256(session_id))
    if row is not None and row.revoked_at is None:
        row.revoked_at = now


def cookie_session_id(request: Request) -> str | None:
    """The session id kept in the dashboard cookie, if any."""
    return request.cookies.get(COOKIE_NAME) or None


def remember(response: Response, session_id: str, *, secure: bool) -> None:
    """Keep the session id in the dashboard cookie."""
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def forget(response: Response) -> None:
    """Drop the dashboard cookie."""
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")


def session_csrf_token(session_id: str) -> str:
    """The CSRF token of a signed-in page: unguessable without the session id."""
    return hmac.new(session_id.encode(), b"greenwindow dashboard form", "sha256").hexdigest()


def login_csrf_token(request: Request, response: Response) -> str:
    """The sign-in form's CSRF token, kept (or set) in its own short-lived cookie."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token or len(token) > 128:
        token = secrets.token_urlsafe(32)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=LOGIN_CSRF_MAX_AGE_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return token


def login_csrf_ok(request: Request, presented: str) -> bool:
    """Whether a sign-in post carries the token of its own form (double submit)."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(expected) and _same_secret(presented, expected)


def session_csrf_ok(request: Request, presented: str) -> bool:
    """Whether a signed-in post carries its session's CSRF token."""
    session_id = cookie_session_id(request)
    return session_id is not None and _same_secret(presented, session_csrf_token(session_id))


def same_origin(request: Request) -> bool:
    """Whether a post comes from a page of this service, by `Origin` or `Sec-Fetch-Site`.

    The host is compared, not the scheme: behind a TLS-terminating proxy the service sees
    http while the browser says https.
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc.lower() == host.lower()
    # Browsers send `Origin: null` for posts from pages with `Referrer-Policy: no-referrer`
    # (ours) as well as from sandboxed frames; fetch metadata tells the two apart.
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    # Neither header: not a current browser (a script or an old client); the CSRF token decides.
    return origin is None
