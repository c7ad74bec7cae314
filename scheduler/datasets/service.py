"""Datasets: storing validated uploads, lookups by team, and what estimates need of them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.artifacts.storage import StoredUpload, commit_upload, discard
from scheduler.datasets.models import Dataset
from scheduler.datasets.validation import DatasetInvalid, Limits, validate_zip
from scheduler.db.base import new_id
from scheduler.errors import InvalidInput, NotFound
from scheduler.settings import Settings

ARCHIVE_NAME = "dataset.zip"


def datasets_root(settings: Settings) -> Path:
    """Where dataset archives live."""
    return settings.data_dir / "datasets"


def archive_path(settings: Settings, dataset_id: str) -> Path:
    """The stored zip of a dataset."""
    return datasets_root(settings) / dataset_id / ARCHIVE_NAME


def create_from_upload(
    session: Session,
    settings: Settings,
    *,
    team_id: str,
    name: str,
    upload: StoredUpload,
    now: datetime,
    limits: Limits | None = None,
) -> Dataset:
    """Validate a received zip and keep it; an invalid one is deleted and refused (422)."""
    try:
        summary = validate_zip(upload.temp_path, limits)
    except DatasetInvalid as exc:
        discard(upload)
        raise InvalidInput(str(exc), field=exc.field) from None
    except BaseException:
        # Whatever went wrong, an upload that was not accepted must not stay on disk.
        discard(upload)
        raise
    dataset_id = new_id()
    directory = datasets_root(settings) / dataset_id
    try:
        directory.mkdir(parents=True, exist_ok=False)
    except OSError:
        discard(upload)
        raise
    commit_upload(upload, directory / ARCHIVE_NAME)
    dataset = Dataset(
        id=dataset_id,
        team_id=team_id,
        name=name,
        size=upload.size,
        sha256=upload.sha256,
        utterances=summary.utterances,
        audio_seconds=summary.audio_seconds,
        speakers=len(summary.speakers),
        languages=",".join(summary.languages),
        created_at=now,
    )
    session.add(dataset)
    session.flush()
    return dataset


def list_datasets(session: Session, team_id: str | None) -> list[Dataset]:
    """A team's datasets newest first (every team's for the admin, team_id None)."""
    query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc())
    if team_id is not None:
        query = query.where(Dataset.team_id == team_id)
    return list(session.scalars(query))


def get_dataset(session: Session, dataset_id: str, *, team_id: str | None) -> Dataset:
    """A dataset by id; another team's is NotFound."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or (team_id is not None and dataset.team_id != team_id):
        raise NotFound(f"unknown dataset '{dataset_id}'", field="dataset.id")
    return dataset


def require_dataset(session: Session, team_id: str, dataset_id: str) -> Dataset:
    """For job submission: the dataset must exist and belong to the submitting team (422)."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.team_id != team_id:
        raise InvalidInput(
            f"unknown dataset '{dataset_id}': upload it first with POST /v1/datasets",
            field="dataset.id",
        )
    return dataset


def audio_minutes(session: Session, dataset_id: str) -> float | None:
    """Minutes of audio in a dataset (for duration estimates), or None if it is unknown."""
    dataset = session.get(Dataset, dataset_id)
    return dataset.audio_seconds / 60.0 if dataset is not None else None
