"""Archives and files a worker handles: dataset zips, checkpoint and log tars, snapshots."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from worker.training.data.annotations import AUDIO_SUFFIXES, wav_basename

CHECKPOINT_ARTIFACT = "checkpoint.tar"


def tensorboard_artifact(attempt: int) -> str:
    """One attempt's TensorBoard logs; the service merges them into the job's `tensorboard`."""
    return f"tensorboard-{attempt}.tar"


# Where the workloads (burn-in, training core) write their checkpoints, under the run dir.
CHECKPOINT_DIR = "checkpoints"
# The fine-tune's prepared dataset (features, tokens), under the run dir, and its artifact.
PREPARED_DIR = "prepared"
PREPARED_ARTIFACT = "prepared.tar"


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack a dataset zip into ``dest``: only its `.list` and the audio files it names.

    Anything else a team put in the zip (a pickled "checkpoint", a script) is never written
    to the worker's disk. The list is rewritten with bare file names, so no line can point
    at a path outside the dataset (another job's files, the worker's own).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with zipfile.ZipFile(archive) as bundle:
        members = [info for info in bundle.infolist() if not info.is_dir()]
        for info in members:
            target = (dest / info.filename).resolve()
            if target != root and root not in target.parents:
                raise ValueError(f"dataset archive member escapes the target: {info.filename!r}")
        lists = [
            info
            for info in members
            if info.filename.lower().endswith(".list") and not _is_debris(info.filename)
        ]
        if len(lists) != 1:
            raise ValueError(f"dataset archive needs exactly one .list file, found {len(lists)}")
        text = bundle.read(lists[0]).decode("utf-8-sig")
        lines, wanted = _flatten_list(text)
        audio = {
            PurePosixPath(info.filename.replace("\\", "/")).name: info
            for info in members
            if info.filename.lower().endswith(AUDIO_SUFFIXES) and not _is_debris(info.filename)
        }
        for name in sorted(wanted):
            clip = audio.get(name)
            if clip is None:
                continue  # the training data check names the missing clip
            with bundle.open(clip) as source, open(dest / name, "xb") as target_file:
                shutil.copyfileobj(source, target_file)
    list_name = PurePosixPath(lists[0].filename.replace("\\", "/")).name
    (dest / list_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _is_debris(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part == "__MACOSX" or part.startswith("._") for part in parts)


def _flatten_list(text: str) -> tuple[list[str], set[str]]:
    """The list's lines with each wav path cut to its file name, and those names."""
    lines, names = [], set()
    for line in text.splitlines():
        wav, sep, rest = line.partition("|")
        if not sep:
            lines.append(line)
            continue
        name = wav_basename(wav)
        names.add(name)
        lines.append(f"{name}|{rest}")
    return lines, names


def private_attempt_dir(work_dir: Path, job_id: str, attempt: int) -> Path:
    """A new directory for one attempt, readable by this user only and never reused.

    Other jobs on the host (or a retry of the same attempt) get their own, so no job can
    find or plant files in another's directory.
    """
    jobs = work_dir / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    jobs.chmod(0o700)
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", job_id)[:64]
    # mkdtemp creates the directory with mode 0700 and a name nobody can predict.
    return Path(tempfile.mkdtemp(prefix=f"{safe_id}-attempt-{attempt}-", dir=jobs))


def pack_tar(paths: list[Path], base: Path, archive: Path) -> Path:
    """Tar ``paths`` under names relative to ``base`` (or their own name when outside it)."""
    with tarfile.open(archive, "w") as bundle:
        for path in paths:
            try:
                name = path.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                name = path.name
            bundle.add(path, arcname=name)
    return archive


def unpack_tar(archive: Path, dest: Path) -> None:
    """Unpack a checkpoint tar into ``dest`` with the safe ``data`` filter."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as bundle:
        bundle.extractall(dest, filter="data")


def newest_checkpoint(directory: Path) -> Path | None:
    """The most recently written complete checkpoint file in ``directory``, or None."""
    # Both workloads write "<name>.partial" and rename it into place, so every other regular
    # file here is complete; the newest by mtime is the one to resume from.
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None
    best: tuple[int, str] | None = None
    for entry in entries:
        if entry.name.startswith(".") or entry.name.endswith(".partial"):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            key = (entry.stat(follow_symlinks=False).st_mtime_ns, entry.name)
        except FileNotFoundError:
            continue  # pruned by the workload since the listing
        if best is None or key > best:
            best = key
    return directory / best[1] if best else None


def file_identity(path: Path) -> tuple[str, int, int, int]:
    """What tells one written checkpoint from the next: name, inode, mtime and size."""
    stat = path.stat()
    return (path.name, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def snapshot_file(source: Path, dest: Path) -> tuple[str, int, int, int] | None:
    """Freeze ``source`` as ``dest`` (a hard link, else a copy); its identity, or None if gone."""
    # A hard link keeps this version's inode even when the workload replaces or prunes the
    # file meanwhile, so the tar that follows reads one consistent file.
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
        return (source.name, *file_identity(dest)[1:])
    except FileNotFoundError:
        return None
    except OSError:
        pass  # no hard links on this filesystem: copy through one open handle instead
    try:
        identity = file_identity(source)
        shutil.copy2(source, dest)
    except FileNotFoundError:
        return None
    return identity
