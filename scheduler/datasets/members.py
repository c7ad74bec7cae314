"""Checks on a dataset zip's member names that need only its central directory."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from scheduler.errors import InvalidInput
from worker.training.data.annotations import AUDIO_SUFFIXES


def _is_noise(name: str) -> bool:
    # Finder's resource forks: never audio, whatever their suffix says.
    parts = PurePosixPath(name).parts
    return any(part == "__MACOSX" or part.startswith("._") for part in parts)


def refuse_ambiguous_audio(path: Path) -> None:
    """Refuse (422) a zip holding two audio files with the same file name.

    The annotation list names clips by file name (paths from other machines are matched
    that way), so with two such files only one would be validated and either one might be
    trained on. Names that differ only by case count as the same: a case-insensitive file
    system would keep just one of them.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # not a readable zip: the full validation says so, with its own message
    seen: dict[str, str] = {}
    for raw in names:
        name = raw.replace("\\", "/")
        if name.endswith("/") or _is_noise(name) or not name.lower().endswith(AUDIO_SUFFIXES):
            continue
        base = PurePosixPath(name).name
        first = seen.get(base.casefold())
        if first is not None:
            raise InvalidInput(
                f"the zip holds two audio files named '{base}' ('{first}' and '{raw}'); "
                "clips are matched by file name, so each must be unique",
                field="file",
            )
        seen[base.casefold()] = raw
