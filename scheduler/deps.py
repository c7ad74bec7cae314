"""FastAPI dependencies: database session, clock, settings and the authenticated principal."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from scheduler.db.session import session_scope
from scheduler.errors import Forbidden, NotFound, Unauthorized
from scheduler.settings import Settings
from scheduler.teams.models import Team
from scheduler.teams.service import authenticate_key


def _session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.session_factory) as session:
        yield session


# scope="function": the commit happens before the response is sent, so a 201 means committed.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def _now(request: Request) -> datetime:
    return request.app.state.clock()


NowDep = Annotated[datetime, Depends(_now)]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(_settings)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, a team (by key) or the worker fleet (by fleet token)."""

    kind: Literal["admin", "team", "worker_fleet"]
    team: Team | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def can_see_team(self, team_id: str) -> bool:
        """Admins see every team; a team only itself."""
        return self.is_admin or (self.team is not None and self.team.id == team_id)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _matches(presented: str, configured: str | None) -> bool:
    return configured is not None and hmac.compare_digest(presented.encode(), configured.encode())


def principal_from_request(request: Request, session: Session, now: datetime) -> Principal:
    """Authenticate the request's bearer token as the admin, the worker fleet or a team."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    settings: Settings = request.app.state.settings
    if _matches(token, settings.admin_token):
        return Principal("admin")
    if _matches(token, settings.worker_token):
        return Principal("worker_fleet")
    team = authenticate_key(session, token, now=now)
    if team is None:
        raise Unauthorized("invalid or revoked API key")
    return Principal("team", team)


# Declares bearer authentication in the OpenAPI; the token itself is read by bearer_token.
_bearer_scheme = HTTPBearer(auto_error=False, description="A team key, or the admin token.")


def _principal(
    request: Request,
    session: SessionDep,
    now: NowDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> Principal:
    return principal_from_request(request, session, now)


PrincipalDep = Annotated[Principal, Depends(_principal)]


def _user(principal: PrincipalDep) -> Principal:
    if principal.kind == "worker_fleet":
        raise Forbidden("the worker token cannot call user endpoints")
    return principal


UserDep = Annotated[Principal, Depends(_user)]


def _admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this endpoint needs the admin token")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]


def require_team_access(principal: Principal, team: Team) -> None:
    """Another team's resources look absent (404), never forbidden, so names do not leak."""
    if not principal.can_see_team(team.id):
        raise NotFound(f"unknown team '{team.name}'", field="team")
