"""Registered GPU workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base, JSONType, UTCDateTime, new_id


class Worker(Base):
    """A worker host; only the SHA-256 of its token is stored."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    host: Mapped[str] = mapped_column(String(255))
    zone: Mapped[str] = mapped_column(String(64), index=True)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    cpu_only: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[str] = mapped_column(String(64), default="")
    token_hash: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    gpu_watts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Base models the worker holds (see worker.training.config.WORKER_BASES); claims and
    # capacity for a job count only workers holding its base.
    bases: Mapped[list[str]] = mapped_column(JSONType, default=lambda: ["none"])
    # The interval this worker was told to keep; it is dead after three missed beats.
    heartbeat_seconds: Mapped[int] = mapped_column(Integer)

    @property
    def slots(self) -> int:
        """GPUs a job may ask for on this worker; a CPU-only worker runs one-GPU jobs."""
        return 1 if self.cpu_only else self.gpu_count
