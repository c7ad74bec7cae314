"""One TensorBoard run per job, merged from the log tar each attempt uploads.

Every attempt (finished, paused, released, failed or cancelled) uploads its event files as
``tensorboard-<attempt>.tar``. After each such upload the service rebuilds the artifact
``tensorboard``: one tar whose event files all sit in one directory, ``tensorboard/``, which
TensorBoard reads as a single run. The steps continue across attempts because a resumed
attempt counts on from its checkpoint's step.

The parts come from workers, so only regular files named like event files are copied, under
their bare names: no path, link or device in a part reaches the merged tar.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import tarfile
from pathlib import Path

from scheduler.artifacts.storage import TEMP_PREFIX, StoredUpload

log = logging.getLogger(__name__)

MERGED_NAME = "tensorboard"
RUN_DIR = "tensorboard"
# Before per-attempt logs, a finished job uploaded this one tar; it is merged like a part.
LEGACY_NAME = "tensorboard.tar"
PART_NAME = re.compile(r"tensorboard-(\d{1,6})\.tar")
EVENT_FILE = re.compile(r"events\.out\.tfevents\.[A-Za-z0-9._-]{1,200}")
COPY_CHUNK = 1 << 20


def is_part(name: str) -> bool:
    """Whether an artifact name is one attempt's TensorBoard logs."""
    return PART_NAME.fullmatch(name) is not None or name == LEGACY_NAME


def part_order(name: str, attempt: int) -> tuple[int, str]:
    """Sort key: by the attempt in the name (else the recorded attempt)."""
    match = PART_NAME.fullmatch(name)
    return (int(match.group(1)) if match else attempt, name)


def merge_parts(parts: list[Path], directory: Path) -> StoredUpload:
    """Write the event files of ``parts`` (in order) into one tar under ``RUN_DIR/``.

    The result is a temporary file in ``directory``, ready for ``storage.commit_upload``. A
    damaged part is skipped (logged); a name already taken keeps its first file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    temp_path = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    seen: set[str] = set()
    try:
        with tarfile.open(temp_path, "w") as merged:
            for part in parts:
                try:
                    _copy_events(part, merged, seen)
                except (tarfile.TarError, OSError, EOFError) as exc:
                    log.warning("TensorBoard part %s skipped: %s", part.name, exc)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    digest = hashlib.sha256()
    size = 0
    with temp_path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return StoredUpload(temp_path, size, digest.hexdigest())


def _copy_events(part: Path, merged: tarfile.TarFile, seen: set[str]) -> None:
    with tarfile.open(part) as source:
        for member in source:
            if not member.isreg():
                continue
            name = member.name.replace("\\", "/").rsplit("/", 1)[-1]
            if not EVENT_FILE.fullmatch(name) or name in seen:
                continue
            data = source.extractfile(member)
            if data is None:
                continue
            info = tarfile.TarInfo(f"{RUN_DIR}/{name}")
            info.size = member.size
            info.mtime = member.mtime
            info.mode = 0o644
            merged.addfile(info, data)
            seen.add(name)
