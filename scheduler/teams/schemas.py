"""Request and response bodies for teams and API keys."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

TEAM_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=TEAM_NAME_PATTERN,
        description="Lower-case letters, digits, '-' and '_', at most 64 characters.",
    )
    webhook_url: HttpUrl | None = Field(
        default=None, description="Where budget `notify` thresholds are POSTed."
    )


class TeamCreated(BaseModel):
    name: str
    api_key: str = Field(description="Shown once; only its hash is stored.")
    key_id: str
    webhook_secret: str | None = Field(
        default=None,
        description="Shown once: the key of the X-Greenwindow-Signature HMAC on webhooks.",
    )


class WebhookSecret(BaseModel):
    webhook_secret: str = Field(
        description="Shown once: the key of the X-Greenwindow-Signature HMAC on webhooks."
    )


class KeyRead(BaseModel):
    id: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(BaseModel):
    key_id: str
    api_key: str = Field(description="Shown once; only its hash is stored.")


class TeamRead(BaseModel):
    name: str
    created_at: datetime
    webhook_url: str | None
    keys: list[KeyRead]
