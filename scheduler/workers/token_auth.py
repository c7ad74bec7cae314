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
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from scheduler.workers.models import Worker
from scheduler.workers.service import TOKEN_PREFIX

_workers = cast(Table, Worker.__table__)
# Built once: this runs on every protocol call. A plain UPDATE ... RETURNING loaded as
# Worker rows (rather than an ORM bulk update) skips the bulk-update bookkeeping, which
# has nothing to do here: the row is not in the session before this statement.
_TOUCH = (
    select(Worker)
    .from_statement(
        update(_workers)
        .where(_workers.c.id == bindparam("b_id"))
        .where(_workers.c.token_hash == bindparam("b_token_hash"))
        .values(last_seen_at=bindparam("b_now", type_=_workers.c.last_seen_at.type))
        .returning(*_workers.c)
    )
    .execution_options(populate_existing=True)
)


def authenticate_and_touch(session: Session, token: str, *, now: datetime) -> Worker | None:
    """The worker a `gww_<id>_<secret>` token belongs to, marked seen at `now`; or None."""
    prefix, _, rest = token.partition("_")
    worker_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not worker_id or not secret or len(token) > 512:
        return None
    token_hash = hashlib.sha256(secret.encode()).hexdigest()
    return session.scalars(
        _TOUCH, {"b_id": worker_id, "b_token_hash": token_hash, "b_now": now}
    ).one_or_none()
