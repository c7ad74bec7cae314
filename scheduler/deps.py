"""FastAPI dependencies: the application context, database sessions, clock, settings and the
authenticated principal.

Dependencies that only look something up are `async def`: FastAPI runs them on the event
loop instead of sending each to a worker thread. Those that query the database stay
synchronous; the session is made on the loop and only ended in a thread.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from scheduler.context import AppContext
from scheduler.db.session import finish, is_read_only, session_scope
from scheduler.errors import Forbidden, NotFound, Unauthorized
from scheduler.scheduling.service import Scheduling
from scheduler.settings import Settings
from scheduler.teams.models import ApiKey, Team
from scheduler.teams.service import authenticate_key, find_active_key

# GET and HEAD are safe methods: their handlers read only, on the read path.
READ_METHODS = frozenset({"GET", "HEAD"})
# A team key's last use is recorded at this granularity (as `authenticate_key` does).
KEY_USE_GRANULARITY = timedelta(seconds=60)


async def _context(request: Request) -> AppContext:
    return AppContext.of(request.app)


ContextDep = Annotated[AppContext, Depends(_context)]


async def _session(request: Request, context: ContextDep) -> AsyncIterator[Session]:
    # Making a Session does no I/O (it connects on first use), so it is made here on the
    # event loop; only ending it, which talks to the database, goes to a worker thread.
    # A synchronous generator would take a thread hop more per request.
    if request.method in READ_METHODS:
        session = context.read_session_factory()
        try:
            yield session
        finally:
            await run_in_threadpool(_end_read, request, context, session)
        return
    session = context.session_factory()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(finish, session, commit=False)
        raise
    await run_in_threadpool(finish, session, commit=True)


def _end_read(request: Request, context: AppContext, session: Session) -> None:
    session.close()  # a read has nothing to commit: closing ends its transaction
    # After the read's connection went back: a request holds one connection at a time.
    _record_key_use(request, context)


# The request's unit of work. For GET and HEAD it is a read-only session (on SQLite it
# does not take the write lock, so reads go on while a writer works); otherwise a write
# transaction. scope="function": the commit happens before the response is sent, so a 201
# means committed.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


async def _now(context: ContextDep) -> datetime:
    return context.now()


NowDep = Annotated[datetime, Depends(_now)]


async def _settings(context: ContextDep) -> Settings:
    return context.settings


SettingsDep = Annotated[Settings, Depends(_settings)]


async def _scheduling(context: ContextDep) -> Scheduling:
    return context.scheduling


SchedulingDep = Annotated[Scheduling, Depends(_scheduling)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, a team (by key) or the worker fleet (by fleet token)."""

    kind: Literal["admin", "team", "worker_fleet"]
    team: Team | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    @property
    def team_scope(self) -> str | None:
        """The team whose resources this caller sees: None for the admin (every team).
        The worker fleet sees none (user routes refuse it before this is asked)."""
        if self.is_admin:
            return None
        if self.team is None:
            raise Forbidden("the worker token cannot call user endpoints")
        return self.team.id

    @property
    def label(self) -> str:
        """Who this is, for messages: "admin", "team NAME" or "worker fleet"."""
        if self.is_admin:
            return "admin"
        return f"team {self.team.name}" if self.team is not None else "worker fleet"

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
    settings = AppContext.of(request.app).settings
    if _matches(token, settings.admin_token):
        return Principal("admin")
    if _matches(token, settings.worker_token):
        return Principal("worker_fleet")
    if is_read_only(session):
        return Principal("team", _team_reading(request, session, token, now))
    team = authenticate_key(session, token, now=now)
    if team is None:
        raise Unauthorized("invalid or revoked API key")
    return Principal("team", team)


def _team_reading(request: Request, session: Session, token: str, now: datetime) -> Team:
    """The key's team, on a read-only session: its last use is recorded after the read."""
    key = find_active_key(session, token)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    if key.last_used_at is None or now - key.last_used_at > KEY_USE_GRANULARITY:
        request.state.key_used = (key.id, now)
    return key.team


def _record_key_use(request: Request, context: AppContext) -> None:
    pending: tuple[str, datetime] | None = getattr(request.state, "key_used", None)
    if pending is None:
        return
    key_id, now = pending
    with session_scope(context.session_factory) as session:
        session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - KEY_USE_GRANULARITY),
            )
            .values(last_used_at=now)
        )


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


async def _user(principal: PrincipalDep) -> Principal:
    if principal.kind == "worker_fleet":
        raise Forbidden("the worker token cannot call user endpoints")
    return principal


UserDep = Annotated[Principal, Depends(_user)]


async def _admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this endpoint needs the admin token")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]


def require_team_access(principal: Principal, team: Team) -> None:
    """Another team's resources look absent (404), never forbidden, so names do not leak."""
    if not principal.can_see_team(team.id):
        raise NotFound(f"unknown team '{team.name}'", field="team")
