"""Per-zone queue versions and change log: what lets replicas trust their in-memory zone
caches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base, JSONType


class ZoneVersion(Base):
    """A counter that every committed change to a zone's queue (or its signal or tariff)
    increments, in the same transaction as the change (see scheduling/occupancy.py)."""

    __tablename__ = "zone_versions"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The zone's queue: jobs added, planned, claimed, finished...
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    # What its slot grid is built from: stored intensities, signal status, tariff.
    signal_version: Mapped[int] = mapped_column(BigInteger, default=0)


class ZoneChange(Base):
    """What the transaction that took a zone's queue to `version` did, when all it did was
    insert jobs: the jobs, as the caches hold them. Other processes and replicas replay
    these to follow each other's submissions without re-reading the queue. A version with
    no row (any other change, or pruned) makes a reader re-read."""

    __tablename__ = "zone_changes"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # [[job_id, state, gpus, planned_end (ISO or null), [[start, end] ISO, ...]], ...]
    jobs: Mapped[list[Any]] = mapped_column(JSONType)
