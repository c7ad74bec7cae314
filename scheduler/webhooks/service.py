"""Team webhooks: URL checks, the outbox, signed delivery after commit with retries.

A notification is written as a `webhook_deliveries` row inside the transaction that decides
it (so it is never lost and never sent for a rolled-back decision), and a background pass
POSTs it later with no transaction open: a slow receiver can hold only its own delivery,
never the database. Each POST has a total deadline (not a per-read timeout, which a
receiver trickling one byte at a time would keep resetting), failures are retried with
exponential backoff, and the body is signed with the team's secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.db.session import session_scope
from scheduler.settings import Settings
from scheduler.teams.models import Team
from scheduler.webhooks.models import WebhookDelivery

log = logging.getLogger("greenwindow.webhooks")

SIGNATURE_HEADER = "X-Greenwindow-Signature"
SECRET_PREFIX = "whsec_"
# Retries back off from the setting's base up to this gap between attempts.
MAX_RETRY_GAP = timedelta(hours=6)
BATCH = 20
# Cloud instance-metadata endpoints, refused even where they are not link-local.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "instance-data"})


class WebhookUrlRefused(ValueError):
    """The URL points at an address the service must not call; the message says which."""


def new_secret() -> str:
    """A signing secret for a team's webhooks."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of the body, in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for label, flag in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("an unspecified address", address.is_unspecified),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
    ):
        if flag:
            return label
    return None


def check_url(url: str, *, allow_internal: bool, resolve: bool = True) -> None:
    """Refuse URLs (WebhookUrlRefused) that reach the service's own network: loopback,
    link-local, private, metadata addresses, also behind a host name, unless allowed."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise WebhookUrlRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookUrlRefused("webhook URLs must be http:// or https:// with a host")
    if allow_internal:
        return
    host = parsed.host.lower().rstrip(".")
    if host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise WebhookUrlRefused(f"host '{host}' is internal to the service's network")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return
        try:
            infos = socket.getaddrinfo(host, parsed.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            return  # unresolvable now: checked again before every delivery
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        reason = _refusal(address)
        if reason is not None:
            raise WebhookUrlRefused(f"host '{host}' resolves to {address}, {reason}")


def enqueue(
    session: Session, team: Team, event: str, payload: dict[str, Any], *, now: datetime
) -> WebhookDelivery | None:
    """Write a delivery of ``event`` to the team's webhook in the current transaction."""
    if not team.webhook_url:
        return None
    body = json.dumps({"event": event, **payload}, separators=(",", ":"), sort_keys=True)
    delivery = WebhookDelivery(
        team_id=team.id,
        event=event,
        url=team.webhook_url,
        body=body,
        state="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(delivery)
    return delivery


@dataclass(frozen=True)
class _Outgoing:
    id: int
    url: str
    body: bytes
    secret: str | None
    event: str


def _claim_due(session: Session, *, now: datetime, hold: timedelta, limit: int) -> list[_Outgoing]:
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    outgoing = []
    for row in session.scalars(query):
        # Held while in flight, so another replica's pass leaves it alone.
        row.next_attempt_at = now + hold
        team = session.get(Team, row.team_id)
        secret = team.webhook_secret if team is not None else None
        outgoing.append(_Outgoing(row.id, row.url, row.body.encode(), secret, row.event))
    return outgoing


async def _post(item: _Outgoing, settings: Settings) -> str | None:
    """POST one delivery within the total deadline; None on a 2xx, else what went wrong."""
    headers = {"content-type": "application/json", "user-agent": "greenwindow-webhooks"}
    headers["X-Greenwindow-Event"] = item.event
    if item.secret:
        headers[SIGNATURE_HEADER] = sign(item.secret, item.body)
    deadline = settings.webhook_deadline_seconds

    async def attempt() -> httpx.Response:
        await asyncio.to_thread(check_url, item.url, allow_internal=settings.webhook_allow_internal)
        # No redirects: a 3xx to an internal address would walk around the check.
        async with httpx.AsyncClient(timeout=deadline, follow_redirects=False) as client:
            return await client.post(item.url, content=item.body, headers=headers)

    try:
        response = await asyncio.wait_for(attempt(), timeout=deadline)
    except TimeoutError:
        return f"no complete answer within {deadline:g} s"
    except WebhookUrlRefused as exc:
        return f"refused: {exc}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


async def _post_all(batch: list[_Outgoing], settings: Settings) -> list[str | None]:
    return list(await asyncio.gather(*(_post(item, settings) for item in batch)))


def retry_gap(settings: Settings, attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failure: doubling from the base."""
    gap = timedelta(seconds=settings.webhook_retry_seconds * 2 ** max(0, attempts - 1))
    return min(gap, MAX_RETRY_GAP)


def deliver_due(
    factory: sessionmaker[Session], settings: Settings, clock: Callable[[], datetime]
) -> int:
    """One delivery pass: claim what is due, POST it with no transaction open, record the
    outcomes. Returns how many were delivered."""
    hold = timedelta(seconds=settings.webhook_deadline_seconds * 2 + 30)
    with session_scope(factory) as session:
        batch = _claim_due(session, now=clock(), hold=hold, limit=BATCH)
    if not batch:
        return 0
    outcomes = asyncio.run(_post_all(batch, settings))
    delivered = 0
    with session_scope(factory) as session:
        now = clock()
        for item, error in zip(batch, outcomes, strict=True):
            row = session.get(WebhookDelivery, item.id)
            if row is None:
                continue  # the team was deleted meanwhile
            row.attempts += 1
            if error is None:
                row.state, row.delivered_at, row.last_error = "delivered", now, None
                delivered += 1
                continue
            row.last_error = error
            if row.attempts >= settings.webhook_max_attempts:
                row.state = "failed"
                log.warning(
                    "webhook %s to team %s given up after %d attempts: %s",
                    row.id,
                    row.team_id,
                    row.attempts,
                    error,
                )
            else:
                row.next_attempt_at = now + retry_gap(settings, row.attempts)
                log.info(
                    "webhook %s attempt %d failed (%s); retry at %s",
                    row.id,
                    row.attempts,
                    error,
                    row.next_attempt_at.isoformat(),
                )
    return delivered
