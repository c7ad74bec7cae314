"""Artifact records and where their files live."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.artifacts import tensorboard
from scheduler.artifacts.models import Artifact
from scheduler.artifacts.storage import StoredUpload, check_name, commit_upload
from scheduler.errors import InvalidInput, NotFound
from scheduler.settings import Settings

# The prepared dataset (features, tokens) an attempt uploads so later attempts reuse it.
PREPARED_NAME = "prepared.tar"


def job_directory(settings: Settings, job_id: str) -> Path:
    """The directory holding a job's artifacts."""
    assert settings.artifact_dir is not None
    return settings.artifact_dir / check_name(job_id)


def refuse_case_clash(session: Session, job_id: str, name: str) -> None:
    """Refuse (422) a name that differs only by case from one of the job's artifacts.

    On a case-insensitive file system (a worker's, or a user's download folder) the two
    would be one file, and which one a reader gets would depend on the order of writes.
    """
    folded = name.casefold()
    for existing in session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)):
        if existing != name and existing.casefold() == folded:
            raise InvalidInput(
                f"artifact '{name}' differs only by case from the job's '{existing}'",
                field="name",
            )


def record(
    session: Session, *, job_id: str, name: str, attempt: int, upload: StoredUpload, now: datetime
) -> Artifact:
    """Create or replace the record of a stored artifact."""
    artifact = session.scalar(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
    )
    if artifact is None:
        artifact = Artifact(job_id=job_id, name=name)
        session.add(artifact)
    artifact.attempt = attempt
    artifact.size = upload.size
    artifact.sha256 = upload.sha256
    artifact.created_at = now
    session.flush()
    return artifact


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    """A job's artifacts by name."""
    return list(
        session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name))
    )


def get_artifact(session: Session, job_id: str, name: str) -> Artifact:
    """One artifact, or NotFound."""
    artifact = session.scalar(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
    )
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact '{name}'", field="name")
    return artifact


def rebuild_tensorboard(
    session: Session, settings: Settings, job_id: str, *, now: datetime
) -> Artifact | None:
    """Merge every attempt's TensorBoard logs into the job's one-run ``tensorboard`` tar."""
    directory = job_directory(settings, job_id)
    parts = sorted(
        (a for a in list_artifacts(session, job_id) if tensorboard.is_part(a.name)),
        key=lambda a: tensorboard.part_order(a.name, a.attempt),
    )
    if not parts:
        return None
    upload = tensorboard.merge_parts([directory / a.name for a in parts], directory)
    commit_upload(upload, directory / tensorboard.MERGED_NAME)
    return record(
        session,
        job_id=job_id,
        name=tensorboard.MERGED_NAME,
        attempt=max(a.attempt for a in parts),
        upload=upload,
        now=now,
    )


def prepared_data(session: Session, job_id: str, *, before_attempt: int) -> Artifact | None:
    """The prepared dataset an earlier attempt of the job uploaded, if any."""
    if before_attempt <= 1:
        return None  # uploads carry their (fenced) attempt, which starts at 1
    return session.scalar(
        select(Artifact).where(
            Artifact.job_id == job_id,
            Artifact.name == PREPARED_NAME,
            Artifact.attempt < before_attempt,
        )
    )
