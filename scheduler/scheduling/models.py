"""Per-zone queue versions: what lets replicas trust their in-memory zone caches."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base


class ZoneVersion(Base):
    """A counter that every committed change to a zone's queue (or its signal or tariff)
    increments, in the same transaction as the change (see scheduling/occupancy.py)."""

    __tablename__ = "zone_versions"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The zone's queue: jobs added, planned, claimed, finished...
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    # What its slot grid is built from: stored intensities, signal status, tariff.
    signal_version: Mapped[int] = mapped_column(BigInteger, default=0)
