"""Checks of an uploaded dataset zip: safe member names, bomb limits, the annotation list
and every listed clip present and decodable."""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import soundfile

from worker.training.data.annotations import AUDIO_SUFFIXES, normalise_language, wav_basename

MAX_MEMBERS = 50_000
MAX_UNCOMPRESSED_BYTES = 16 * 1024**3
# Audio barely compresses; a member that shrinks this much is a bomb, not a dataset.
MAX_RATIO = 100.0
RATIO_MIN_BYTES = 1024**2
MAX_LIST_BYTES = 64 * 1024**2
MAX_PROBLEMS = 20
MAX_LINES = 50_000
MAX_AUDIO_SECONDS = 100 * 3600.0


class DatasetInvalid(ValueError):
    """The zip is not an acceptable dataset; the message names the problem."""

    def __init__(self, message: str, *, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    """Zip-bomb limits and the size of a dataset (tests use small ones)."""

    max_members: int = MAX_MEMBERS
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
    max_ratio: float = MAX_RATIO
    # Annotated lines and seconds of audio (summed over lines) per dataset.
    max_lines: int = MAX_LINES
    max_audio_seconds: float = MAX_AUDIO_SECONDS


@dataclass(frozen=True)
class DatasetSummary:
    """What validation learned about a good dataset."""

    list_name: str
    utterances: int
    audio_seconds: float
    speakers: tuple[str, ...]
    languages: tuple[str, ...]


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def check_member_name(name: str) -> None:
    """Refuse names that would escape the dataset directory when unpacked."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise DatasetInvalid(f"zip member '{name}' has an absolute path")
    if ".." in path.parts:
        raise DatasetInvalid(f"zip member '{name}' escapes the archive ('..' in its path)")
    if "\x00" in name:
        raise DatasetInvalid(f"zip member '{name!r}' has a NUL byte in its name")


def check_members(archive: zipfile.ZipFile, limits: Limits) -> list[zipfile.ZipInfo]:
    """Safe names, no links, and totals within the bomb limits; returns the file members."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise DatasetInvalid(f"zip has {len(members)} members; at most {limits.max_members}")
    total = 0
    files = []
    for info in members:
        check_member_name(info.filename)
        if _is_symlink(info):
            raise DatasetInvalid(f"zip member '{info.filename}' is a symbolic link")
        if info.is_dir():
            continue
        total += info.file_size
        if total > limits.max_uncompressed_bytes:
            raise DatasetInvalid(
                f"zip unpacks to more than {limits.max_uncompressed_bytes} bytes (zip bomb?)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_MIN_BYTES and ratio > limits.max_ratio:
            raise DatasetInvalid(
                f"zip member '{info.filename}' expands {ratio:.0f}x (limit "
                f"{limits.max_ratio:.0f}x): refusing a likely zip bomb"
            )
        files.append(info)
    return files


def _is_noise(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part == "__MACOSX" or part.startswith("._") for part in parts)


def find_list(files: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The one `.list` annotation file."""
    lists = [f for f in files if f.filename.lower().endswith(".list") and not _is_noise(f.filename)]
    if not lists:
        raise DatasetInvalid("no .list annotation file (wav_path|speaker|language|text) in zip")
    if len(lists) > 1:
        names = ", ".join(sorted(f.filename for f in lists))
        raise DatasetInvalid(f"exactly one .list annotation file expected, found {names}")
    if lists[0].file_size > MAX_LIST_BYTES:
        raise DatasetInvalid(f"{lists[0].filename} is larger than {MAX_LIST_BYTES} bytes")
    return lists[0]


def refuse_extra_members(files: list[zipfile.ZipInfo], list_info: zipfile.ZipInfo) -> None:
    """A dataset holds its `.list` and audio only: a pickled "checkpoint", a script or any
    other file has no business on a GPU worker, so the upload is refused naming it."""
    for info in files:
        if info is list_info or _is_noise(info.filename):
            continue
        if not info.filename.lower().endswith(AUDIO_SUFFIXES):
            raise DatasetInvalid(
                f"zip member '{info.filename}' is neither the .list nor audio "
                f"({', '.join(AUDIO_SUFFIXES)}); a dataset holds only those",
                field="file",
            )


@dataclass(frozen=True)
class ListLine:
    number: int
    wav: str
    speaker: str
    language: str
    text: str


def parse_list(text: str, list_name: str, max_lines: int = MAX_LINES) -> list[ListLine]:
    """Lines of the annotation list; raises naming every bad line (up to a limit)."""
    # Counted before anything is split: each line costs work here and in training.
    annotated = sum(1 for raw in text.splitlines() if raw.strip())
    if annotated > max_lines:
        raise DatasetInvalid(
            f"{list_name} has {annotated} annotated lines; at most {max_lines} per dataset "
            "(GREENWINDOW_DATASET_MAX_LINES)",
            field="list",
        )
    lines: list[ListLine] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.split("|", 3)
        if len(fields) != 4 or not all(f.strip() for f in fields):
            problems.append(
                f"line {number}: expected wav_path|speaker|language|text, got {raw[:120]!r}"
            )
            continue
        wav, speaker, language, sentence = (f.strip() for f in fields)
        if normalise_language(language) is None:
            problems.append(f"line {number}: unknown language '{language}'")
            continue
        lines.append(ListLine(number, wav, speaker, language, sentence))
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise DatasetInvalid(f"{list_name}: " + "; ".join(shown) + more, field="list")
    if not lines:
        raise DatasetInvalid(f"{list_name} has no annotated lines", field="list")
    return lines


@dataclass(frozen=True)
class Structure:
    """A dataset zip whose structure passed: its list, and the audio member of each line."""

    list_name: str
    lines: tuple[ListLine, ...]
    members: tuple[zipfile.ZipInfo, ...]  # the audio member of each line, in line order

    def summary(self, audio_seconds: float) -> DatasetSummary:
        """What validation learned, once the audio is measured."""
        return DatasetSummary(
            list_name=self.list_name,
            utterances=len(self.lines),
            audio_seconds=audio_seconds,
            speakers=tuple(sorted({line.speaker for line in self.lines})),
            languages=tuple(
                sorted({normalise_language(line.language) or "" for line in self.lines})
            ),
        )


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetInvalid(f"not a readable zip file: {exc}") from None


def check_structure(path: Path, limits: Limits | None = None) -> Structure:
    """The cheap checks, from the zip's directory and its list only (no audio decoded):
    safe names, bomb limits, only a list and audio, the line cap, every clip present."""
    limits = limits or Limits()
    with _open(path) as archive:
        files = check_members(archive, limits)
        list_info = find_list(files)
        refuse_extra_members(files, list_info)
        try:
            raw = archive.read(list_info)
        except (zipfile.BadZipFile, RuntimeError, zlib.error, EOFError) as exc:
            # Corrupt, encrypted or exotically compressed members: the client's archive is bad.
            raise DatasetInvalid(
                f"{list_info.filename} cannot be read from the zip: {exc}", field="list"
            ) from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DatasetInvalid(f"{list_info.filename} is not UTF-8 text", field="list") from None
        lines = parse_list(text, list_info.filename, limits.max_lines)
        audio = {
            PurePosixPath(f.filename.replace("\\", "/")).name: f
            for f in files
            if f.filename.lower().endswith(AUDIO_SUFFIXES) and not _is_noise(f.filename)
        }
        members = []
        for line in lines:
            member = audio.get(wav_basename(line.wav))
            if member is None:
                raise DatasetInvalid(
                    f"{list_info.filename} line {line.number}: audio file "
                    f"'{wav_basename(line.wav)}' is not in the zip",
                    field="list",
                )
            members.append(member)
    return Structure(list_info.filename, tuple(lines), tuple(members))


def probe_audio(data: bytes) -> tuple[int, int]:
    """(frames, sample rate) of an encoded clip; raises what soundfile raises."""
    info = soundfile.info(io.BytesIO(data))
    return info.frames, info.samplerate


def measure_audio(path: Path, structure: Structure, limits: Limits | None = None) -> float:
    """Seconds of audio summed over the list's lines, decoding each distinct clip once;
    raises DatasetInvalid for an undecodable clip or a total over the cap."""
    limits = limits or Limits()
    durations: dict[str, float] = {}
    total = 0.0
    with _open(path) as archive:
        for line, member in zip(structure.lines, structure.members, strict=True):
            seconds = durations.get(member.filename)
            if seconds is None:
                seconds = _duration(archive, member, structure.list_name, line.number)
                durations[member.filename] = seconds
            total += seconds
            if total > limits.max_audio_seconds:
                raise DatasetInvalid(
                    f"{structure.list_name} holds more than {limits.max_audio_seconds:g} s of "
                    f"audio by line {line.number} (GREENWINDOW_DATASET_MAX_AUDIO_SECONDS)",
                    field="list",
                )
    return total


def validate_zip(path: Path, limits: Limits | None = None) -> DatasetSummary:
    """Validate a dataset zip on disk in full; raises DatasetInvalid naming the first problem."""
    structure = check_structure(path, limits)
    return structure.summary(measure_audio(path, structure, limits))


def _duration(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, list_name: str, line: int
) -> float:
    try:
        frames, samplerate = probe_audio(archive.read(member))
    except (
        RuntimeError,
        soundfile.LibsndfileError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
    ) as exc:
        raise DatasetInvalid(
            f"{list_name} line {line}: '{member.filename}' is not decodable audio ({exc})",
            field="list",
        ) from None
    if samplerate <= 0 or frames <= 0:
        raise DatasetInvalid(
            f"{list_name} line {line}: '{member.filename}' holds no audio", field="list"
        )
    return frames / samplerate
