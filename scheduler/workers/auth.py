"""Authentication of workers by their per-worker token, beside the team and admin keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from scheduler import deps
from scheduler.deps import NowDep, Principal, PrincipalDep, SessionDep
from scheduler.errors import Forbidden, Unauthorized
from scheduler.workers import service
from scheduler.workers.models import Worker
from scheduler.workers.token_auth import authenticate_and_touch


def _fleet(principal: PrincipalDep) -> Principal:
    if principal.kind != "worker_fleet":
        raise Forbidden("registering a worker needs the fleet token GREENWINDOW_WORKER_TOKEN")
    return principal


FleetDep = Annotated[Principal, Depends(_fleet)]


def _worker(request: Request, session: SessionDep, now: NowDep) -> Worker:
    token = deps.bearer_token(request)
    if token is None:
        raise Unauthorized("missing worker token: send 'Authorization: Bearer <token>'")
    # The protocol's calls check the token with the liveness write (no SELECT).
    worker = authenticate_and_touch(session, token, now=now)
    if worker is None:
        raise Unauthorized("invalid worker token; register again")
    path_worker = request.path_params.get("worker_id")
    if path_worker is not None and path_worker != worker.id:
        raise Forbidden("this token belongs to another worker", field="worker_id")
    return worker


CurrentWorker = Annotated[Worker, Depends(_worker)]


@dataclass(frozen=True)
class Caller:
    """A worker (by its own token) or a user principal (team key or admin)."""

    worker: Worker | None = None
    principal: Principal | None = None
    now: datetime | None = None

    def can_see_team(self, team_id: str) -> bool:
        """Users see their own team's files (the admin every team's). Workers see none by
        team: only the inputs and outputs of a job they hold a live lease on."""
        if self.worker is not None:
            return False
        assert self.principal is not None
        return self.principal.kind != "worker_fleet" and self.principal.can_see_team(team_id)


def _caller(request: Request, session: SessionDep, now: NowDep) -> Caller:
    token = deps.bearer_token(request)
    if token is not None and token.startswith(f"{service.TOKEN_PREFIX}_"):
        worker = service.authenticate(session, token)
        if worker is None:
            raise Unauthorized("invalid worker token; register again")
        return Caller(worker=worker, now=now)
    return Caller(principal=deps.principal_from_request(request, session, now), now=now)


CallerDep = Annotated[Caller, Depends(_caller)]
