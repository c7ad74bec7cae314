"""Worker authentication on the protocol's hot path, without a SELECT.

Every call of the worker protocol (claim, heartbeats, complete, fail, release) means the
worker is alive, and the claim and heartbeats already wrote `last_seen_at`. So the token is
checked by that write: one `UPDATE workers SET last_seen_at = now WHERE id = ? AND
token_hash = ? RETURNING *`. No row means an unknown worker or a wrong token.

Nothing is cached, so there is nothing to invalidate: a worker whose row is deleted or
whose token hash changes is refused on its very next call, on every replica, and no
replica can disagree with the database. Comparing the hash in SQL is not a timing
oracle worth having: the secret has 256 random bits and only its SHA-256 is compared.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from scheduler.workers.models import Worker
from scheduler.workers.service import TOKEN_PREFIX


def authenticate_and_touch(session: Session, token: str, *, now: datetime) -> Worker | None:
    """The worker a `gww_<id>_<secret>` token belongs to, marked seen at `now`; or None."""
    prefix, _, rest = token.partition("_")
    worker_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not worker_id or not secret or len(token) > 512:
        return None
    token_hash = hashlib.sha256(secret.encode()).hexdigest()
    return session.scalars(
        update(Worker)
        .where(Worker.id == worker_id, Worker.token_hash == token_hash)
        .values(last_seen_at=now)
        .returning(Worker)
        .execution_options(populate_existing=True, synchronize_session=False)
    ).one_or_none()
