"""HTTP endpoints for datasets: upload (multipart or raw zip), listing, reads and download."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from scheduler.artifacts.storage import StoredUpload, discard, receive_to_temp
from scheduler.datasets import service
from scheduler.datasets.members import refuse_ambiguous_audio
from scheduler.db.session import session_scope
from scheduler.deps import ContextDep, SessionDep, SettingsDep, UserDep
from scheduler.errors import InvalidInput, NotFound
from scheduler.workers import service as workers
from scheduler.workers.auth import CallerDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
NAME_PATTERN = re.compile(r"[^\x00-\x1f]{1,200}")
CHUNK = 1024 * 1024


class DatasetRead(BaseModel):
    id: str
    name: str
    size: int
    sha256: str
    utterances: int
    audio_seconds: float
    speakers: int
    languages: list[str]
    created_at: datetime
    state: str = Field(
        description="validating (audio being decoded; audio_seconds is 0 until then), "
        "ready (jobs may use it) or invalid (see state_reason; the archive is deleted)"
    )
    state_reason: str


def to_read(dataset: service.Dataset) -> DatasetRead:
    """The public view of a dataset."""
    return DatasetRead(
        id=dataset.id,
        name=dataset.name,
        size=dataset.size,
        sha256=dataset.sha256,
        utterances=dataset.utterances,
        audio_seconds=dataset.audio_seconds,
        speakers=dataset.speakers,
        languages=[lang for lang in dataset.languages.split(",") if lang],
        created_at=dataset.created_at,
        state=dataset.state,
        state_reason=dataset.state_reason,
    )


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetRead)
async def upload_dataset(
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    context: ContextDep,
    principal: UserDep,
    name: Annotated[str | None, Query(max_length=200)] = None,
) -> DatasetRead:
    """Upload a zip of wavs plus one `.list` file, as multipart field `file` or a raw
    `application/zip` body. Its structure is checked before it is kept (422 naming the
    problem); its audio is decoded afterwards, off the request path: the dataset is
    `validating` until it turns `ready` or `invalid`."""
    if principal.team is None:
        raise InvalidInput("datasets are uploaded with a team's key", field="Authorization")
    team_id = principal.team.id
    # End the key check's transaction now: on SQLite it holds the write lock, and an upload
    # may take minutes.
    await run_in_threadpool(session.commit)
    settings = context.settings
    incoming = service.datasets_root(settings) / "incoming"
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidInput("multipart upload needs a 'file' part holding the zip", field="file")
        name = _checked_name(name or _text(form.get("name")) or part.filename)
        upload = await receive_to_temp(
            _file_chunks(part), incoming, max_bytes=settings.max_upload_bytes
        )
        await part.close()
    elif content_type.split(";")[0].strip() in ("application/zip", "application/octet-stream"):
        name = _checked_name(name)
        upload = await receive_to_temp(
            request.stream(), incoming, max_bytes=settings.max_upload_bytes
        )
    else:
        raise InvalidInput(
            "send the zip as multipart/form-data (field 'file') or as application/zip",
            field="content-type",
        )

    def keep(upload: StoredUpload) -> DatasetRead:
        try:
            refuse_ambiguous_audio(upload.temp_path)
        except InvalidInput:
            discard(upload)
            raise
        with session_scope(context.session_factory) as session:
            dataset = service.create_from_upload(
                session,
                settings,
                team_id=team_id,
                name=name,
                upload=upload,
                now=context.now(),
            )
            return to_read(dataset)

    kept = await run_in_threadpool(keep, upload)
    background.add_task(service.validate_audio, context.session_factory, settings, kept.id)
    return kept


def _checked_name(name: str | None) -> str:
    name = (name or "dataset").strip()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput("dataset name must be 1-200 printable characters", field="name")
    return name


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


@router.get("", response_model=list[DatasetRead])
def list_datasets(session: SessionDep, principal: UserDep) -> list[DatasetRead]:
    """The caller team's datasets, newest first (the admin sees all)."""
    return [to_read(d) for d in service.list_datasets(session, principal.team_scope)]


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: str, session: SessionDep, principal: UserDep) -> DatasetRead:
    """One dataset."""
    return to_read(service.get_dataset(session, dataset_id, team_id=principal.team_scope))


@router.get("/{dataset_id}/archive")
def download_archive(
    dataset_id: str, session: SessionDep, settings: SettingsDep, caller: CallerDep
) -> FileResponse:
    """The dataset zip, for the owning team, or a worker while it runs a job that uses it."""
    dataset = service.get_dataset(session, dataset_id, team_id=None)
    if caller.worker is not None:
        assert caller.now is not None
        allowed = workers.leases_dataset(session, caller.worker, dataset.id, caller.now)
    else:
        allowed = caller.can_see_team(dataset.team_id)
    if not allowed:
        raise NotFound(f"unknown dataset '{dataset_id}'", field="dataset.id")
    path = service.archive_path(settings, dataset.id)
    if not path.is_file():
        raise NotFound(f"dataset '{dataset_id}' is missing from the store", field="dataset.id")
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"{dataset.id}.zip",
        headers={"X-Content-SHA256": dataset.sha256},
    )
