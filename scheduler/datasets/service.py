"""Datasets: storing validated uploads, lookups by team, and what estimates need of them."""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.artifacts.storage import StoredUpload, commit_upload, discard
from scheduler.datasets.models import Dataset
from scheduler.datasets.validation import (
    DatasetInvalid,
    Limits,
    check_structure,
    measure_audio,
)
from scheduler.db.base import new_id
from scheduler.db.session import session_scope
from scheduler.errors import InvalidInput, NotFound
from scheduler.settings import Settings

ARCHIVE_NAME = "dataset.zip"
VALIDATING, READY, INVALID = "validating", "ready", "invalid"

log = logging.getLogger("greenwindow.datasets")


def datasets_root(settings: Settings) -> Path:
    """Where dataset archives live."""
    return settings.data_dir / "datasets"


def archive_path(settings: Settings, dataset_id: str) -> Path:
    """The stored zip of a dataset."""
    return datasets_root(settings) / dataset_id / ARCHIVE_NAME


def limits_from(settings: Settings) -> Limits:
    """The dataset limits the operator set."""
    return Limits(
        max_lines=settings.dataset_max_lines,
        max_audio_seconds=settings.dataset_max_audio_seconds,
    )


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
    """Check a received zip's structure and keep it as `validating` (its audio is decoded
    later, by validate_audio); a malformed one is deleted and refused (422)."""
    try:
        structure = check_structure(upload.temp_path, limits or limits_from(settings))
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
    summary = structure.summary(audio_seconds=0.0)
    dataset = Dataset(
        id=dataset_id,
        team_id=team_id,
        name=name,
        size=upload.size,
        sha256=upload.sha256,
        utterances=summary.utterances,
        audio_seconds=0.0,
        speakers=len(summary.speakers),
        languages=",".join(summary.languages),
        created_at=now,
        state=VALIDATING,
        state_reason="decoding the audio",
    )
    session.add(dataset)
    session.flush()
    return dataset


_in_progress: set[str] = set()
_in_progress_lock = threading.Lock()


def validate_audio(
    factory: sessionmaker[Session],
    settings: Settings,
    dataset_id: str,
    limits: Limits | None = None,
) -> str | None:
    """Decode a `validating` dataset's audio with no transaction open, then mark it `ready`
    or `invalid` (its archive deleted) with the reason. Returns the new state, or None if
    it was not (or no longer) validating, or is being validated by this process already."""
    with _in_progress_lock:
        if dataset_id in _in_progress:
            return None
        _in_progress.add(dataset_id)
    try:
        with session_scope(factory) as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or dataset.state != VALIDATING:
                return None
        path = archive_path(settings, dataset_id)
        limits = limits or limits_from(settings)
        seconds, problem = 0.0, None
        try:
            structure = check_structure(path, limits)
            seconds = measure_audio(path, structure, limits)
        except DatasetInvalid as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - a validator bug must not leave it pending
            log.exception("validating dataset %s failed", dataset_id)
            problem = f"the dataset could not be validated ({type(exc).__name__})"
        with session_scope(factory) as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or dataset.state != VALIDATING:
                return None
            if problem is None:
                dataset.state, dataset.state_reason = READY, ""
                dataset.audio_seconds = seconds
            else:
                dataset.state, dataset.state_reason = INVALID, problem
                # Nothing of a refused upload is kept but the reason.
                shutil.rmtree(path.parent, ignore_errors=True)
            return dataset.state
    finally:
        with _in_progress_lock:
            _in_progress.discard(dataset_id)


def stale_validations(session: Session, *, before: datetime) -> list[str]:
    """Datasets still `validating` that were uploaded before ``before`` (e.g. the process
    that was decoding them stopped)."""
    return list(
        session.scalars(
            select(Dataset.id).where(Dataset.state == VALIDATING, Dataset.created_at < before)
        )
    )


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
    if dataset.state == VALIDATING:
        raise InvalidInput(
            f"dataset '{dataset_id}' is still being validated; submit once it is ready",
            field="dataset.id",
        )
    if dataset.state != READY:
        raise InvalidInput(
            f"dataset '{dataset_id}' is invalid: {dataset.state_reason}", field="dataset.id"
        )
    return dataset


def audio_minutes(session: Session, dataset_id: str) -> float | None:
    """Minutes of audio in a dataset (for duration estimates), or None if it is unknown."""
    dataset = session.get(Dataset, dataset_id)
    return dataset.audio_seconds / 60.0 if dataset is not None else None
