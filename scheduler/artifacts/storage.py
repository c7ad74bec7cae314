"""Streaming uploads to disk: size limit, SHA-256 on the fly, atomic rename into place."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from anyio import to_thread

from scheduler.errors import DomainError, InvalidInput, PayloadTooLarge

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
TEMP_PREFIX = ".upload-"


class InsufficientStorage(DomainError):
    """The store cannot take the file (disk full, read-only, no permission)."""

    status_code = 507


@dataclass(frozen=True)
class StoredUpload:
    """A fully received upload, still under its temporary name."""

    temp_path: Path
    size: int
    sha256: str


def check_name(name: str) -> str:
    """An artifact name: letters, digits, dot, dash, underscore; not '.' or '..'."""
    if not NAME_PATTERN.fullmatch(name) or name in {".", ".."} or name.startswith(TEMP_PREFIX):
        raise InvalidInput(
            f"invalid artifact name '{name[:140]}': use 1-128 of A-Z a-z 0-9 . _ -", field="name"
        )
    return name


def _storage_error(exc: OSError, directory: Path) -> InsufficientStorage:
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }
    why = reasons.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return InsufficientStorage(
        f"cannot store the upload under {directory}: {why}; the operator must free space "
        "or fix the storage directory",
        field="storage",
    )


async def receive_to_temp(
    chunks: AsyncIterator[bytes], directory: Path, *, max_bytes: int
) -> StoredUpload:
    """Write a request body to a temporary file in `directory`, hashing as it arrives."""
    try:
        await to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
        temp_path = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        handle = await to_thread.run_sync(lambda: open(temp_path, "wb"))  # noqa: SIM115
    except OSError as exc:
        raise _storage_error(exc, directory) from None
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"upload larger than {max_bytes} bytes (GREENWINDOW_MAX_UPLOAD_BYTES)",
                        field="body",
                    )
                digest.update(chunk)
                await to_thread.run_sync(handle.write, chunk)
            await to_thread.run_sync(handle.flush)
            await to_thread.run_sync(os.fsync, handle.fileno())
        finally:
            handle.close()
    except OSError as exc:
        temp_path.unlink(missing_ok=True)
        raise _storage_error(exc, directory) from None
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return StoredUpload(temp_path, size, digest.hexdigest())


def commit_upload(upload: StoredUpload, final_path: Path) -> None:
    """Atomically move a received upload to its final name (replacing an older one)."""
    try:
        os.replace(upload.temp_path, final_path)
    except OSError as exc:
        upload.temp_path.unlink(missing_ok=True)
        raise _storage_error(exc, final_path.parent) from None


def discard(upload: StoredUpload) -> None:
    """Drop a received upload that will not be kept."""
    upload.temp_path.unlink(missing_ok=True)
