"""Teams and API keys: creation, lookup, revocation and key authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from scheduler.errors import Conflict, NotFound
from scheduler.teams.models import ApiKey, Team
from scheduler.webhooks import service as webhooks

KEY_PREFIX = "gw"

# Every authenticated call runs this: built once (options and all), so a call only binds
# the key's id to an already compiled statement. The team comes in the same statement.
_KEY_WITH_TEAM = (
    select(ApiKey).options(joinedload(ApiKey.team)).where(ApiKey.id == bindparam("key_id"))
)


def _hash_secret(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _issue_key(session: Session, team: Team, now: datetime) -> tuple[ApiKey, str]:
    secret = secrets.token_urlsafe(32)
    key = ApiKey(team_id=team.id, secret_hash=_hash_secret(secret), created_at=now)
    session.add(key)
    session.flush()
    return key, f"{KEY_PREFIX}_{key.id}_{secret}"


def create_team(
    session: Session, *, name: str, now: datetime, webhook_url: str | None = None
) -> tuple[Team, ApiKey, str]:
    """Create a team and its first key; returns the key in clear text (shown once)."""
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise Conflict(f"team '{name}' already exists", field="name")
    team = Team(
        name=name, created_at=now, webhook_url=webhook_url, webhook_secret=webhooks.new_secret()
    )
    session.add(team)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"team '{name}' already exists", field="name") from None
    key, plaintext = _issue_key(session, team, now)
    return team, key, plaintext


def list_teams(session: Session) -> list[Team]:
    """All teams, by name."""
    return list(session.scalars(select(Team).order_by(Team.name)))


def get_team(session: Session, name: str) -> Team:
    """The team with that name, or NotFound."""
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        raise NotFound(f"unknown team '{name}'", field="team")
    return team


def issue_key(session: Session, team: Team, *, now: datetime) -> tuple[ApiKey, str]:
    """A new key for the team; returns it in clear text (shown once)."""
    return _issue_key(session, team, now)


def revoke_key(session: Session, team: Team, key_id: str, *, now: datetime) -> ApiKey:
    """Revoke one of the team's keys (idempotent)."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.team_id == team.id))
    if key is None:
        raise NotFound(f"unknown key '{key_id}' for team '{team.name}'", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = now
    return key


def authenticate_key(session: Session, presented: str, *, now: datetime) -> Team | None:
    """The team a presented key belongs to, or None when it is unknown, malformed or revoked."""
    key = find_active_key(session, presented)
    if key is None:
        return None
    # Cheap enough at our request rates and useful for audits; minute granularity avoids
    # turning every read into a write.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        key.last_used_at = now
    return key.team


def find_active_key(session: Session, presented: str) -> ApiKey | None:
    """The unrevoked key a presented secret matches, without recording its use."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    key = session.execute(_KEY_WITH_TEAM, {"key_id": parts[1]}).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.secret_hash, _hash_secret(parts[2])):
        return None
    return key


def rotate_webhook_secret(session: Session, team: Team) -> str:
    """A new webhook signing secret for the team (the old one stops signing at once)."""
    team.webhook_secret = webhooks.new_secret()
    session.flush()
    return team.webhook_secret
