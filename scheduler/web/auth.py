"""Who is looking at the dashboard: the admin token or a team key, carried in a cookie.

The token arrives once (login form, or `?token=` on a first link) and is then kept in an
HttpOnly, SameSite=Strict cookie scoped to /dashboard, so scripts on the page never see it
and other sites cannot send it. The worker fleet token never opens the dashboard.
"""

from __future__ import annotations

import hmac
from datetime import datetime

from fastapi import Request, Response
from sqlalchemy.orm import Session

from scheduler.deps import Principal
from scheduler.settings import Settings
from scheduler.teams.service import authenticate_key

COOKIE_NAME = "greenwindow_dashboard"
COOKIE_PATH = "/dashboard"
COOKIE_MAX_AGE_S = 12 * 3600


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


def cookie_token(request: Request) -> str | None:
    """The token kept in the dashboard cookie, if any."""
    return request.cookies.get(COOKIE_NAME) or None


def remember(response: Response, token: str, *, secure: bool) -> None:
    """Keep the token in the dashboard cookie."""
    response.set_cookie(
        COOKIE_NAME,
        token.strip(),
        max_age=COOKIE_MAX_AGE_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def forget(response: Response) -> None:
    """Drop the dashboard cookie."""
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
