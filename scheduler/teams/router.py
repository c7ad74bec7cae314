"""HTTP endpoints for teams and API keys (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from scheduler.deps import (
    AdminDep,
    NowDep,
    SessionDep,
    SettingsDep,
    UserDep,
    require_team_access,
)
from scheduler.errors import InvalidInput
from scheduler.teams import service
from scheduler.teams.models import Team
from scheduler.teams.schemas import (
    KeyCreated,
    KeyRead,
    TeamCreate,
    TeamCreated,
    TeamRead,
    WebhookSecret,
)
from scheduler.webhooks import service as webhooks

router = APIRouter(prefix="/v1/teams", tags=["teams"])


def _read(team: Team) -> TeamRead:
    return TeamRead(
        name=team.name,
        created_at=team.created_at,
        webhook_url=team.webhook_url,
        keys=[KeyRead.model_validate(key, from_attributes=True) for key in team.keys],
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TeamCreated)
def create_team(
    body: TeamCreate,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    _: AdminDep,
    response: Response,
) -> TeamCreated:
    """Create a team; the response holds its first API key and webhook secret, shown once."""
    webhook_url = str(body.webhook_url or "") or None
    if webhook_url is not None:
        try:
            webhooks.check_url(webhook_url, allow_internal=settings.webhook_allow_internal)
        except webhooks.WebhookUrlRefused as exc:
            raise InvalidInput(f"webhook_url refused: {exc}", field="webhook_url") from None
    team, key, plaintext = service.create_team(
        session, name=body.name, now=now, webhook_url=webhook_url
    )
    response.headers["Location"] = f"/v1/teams/{team.name}"
    return TeamCreated(
        name=team.name, api_key=plaintext, key_id=key.id, webhook_secret=team.webhook_secret
    )


@router.post("/{team}/webhook-secret", response_model=WebhookSecret)
def rotate_webhook_secret(team: str, session: SessionDep, _: AdminDep) -> WebhookSecret:
    """A new webhook signing secret, shown once; the old one stops signing at once."""
    secret = service.rotate_webhook_secret(session, service.get_team(session, team))
    return WebhookSecret(webhook_secret=secret)


@router.get("", response_model=list[TeamRead])
def list_teams(session: SessionDep, _: AdminDep) -> list[TeamRead]:
    """All teams."""
    return [_read(team) for team in service.list_teams(session)]


@router.get("/{team}", response_model=TeamRead)
def get_team(team: str, session: SessionDep, principal: UserDep) -> TeamRead:
    """One team (admin, or the team itself)."""
    found = service.get_team(session, team)
    require_team_access(principal, found)
    return _read(found)


@router.post("/{team}/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(team: str, session: SessionDep, now: NowDep, _: AdminDep) -> KeyCreated:
    """Issue another key for the team, shown once."""
    key, plaintext = service.issue_key(session, service.get_team(session, team), now=now)
    return KeyCreated(key_id=key.id, api_key=plaintext)


@router.delete("/{team}/keys/{key_id}", response_model=KeyRead)
def revoke_key(team: str, key_id: str, session: SessionDep, now: NowDep, _: AdminDep) -> KeyRead:
    """Revoke a key; requests with it get 401 from now on."""
    key = service.revoke_key(session, service.get_team(session, team), key_id, now=now)
    return KeyRead.model_validate(key, from_attributes=True)
