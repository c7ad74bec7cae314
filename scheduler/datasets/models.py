"""Uploaded training datasets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base, UTCDateTime, new_id


class Dataset(Base):
    """A validated zip of wavs plus one `.list` annotation file, owned by a team."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    utterances: Mapped[int] = mapped_column(Integer)
    audio_seconds: Mapped[float] = mapped_column(Float)
    speakers: Mapped[int] = mapped_column(Integer, default=1)
    languages: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # validating -> ready | invalid: the audio is checked off the request path.
    state: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    state_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
