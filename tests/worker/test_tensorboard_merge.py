"""The service's merge of per-attempt TensorBoard tars into one run directory."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from scheduler.artifacts.tensorboard import is_part, merge_parts, part_order


def part(path: Path, members: dict[str, bytes], *, link: str | None = None) -> Path:
    with tarfile.open(path, "w") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            bundle.addfile(info)
    return path


def test_event_files_of_every_attempt_land_in_one_directory(tmp_path: Path) -> None:
    first = part(
        tmp_path / "tensorboard-1.tar",
        {
            "tensorboard/events.out.tfevents.100.host.1.0": b"attempt one",
            "tensorboard/notes.txt": b"not an event file",
        },
    )
    second = part(
        tmp_path / "tensorboard-2.tar",
        {
            "tensorboard/events.out.tfevents.200.host.2.0": b"attempt two",
            "../../events.out.tfevents.300.escape": b"a path out of the run",
            "tensorboard/events.out.tfevents.100.host.1.0": b"a duplicate name",
        },
        link="tensorboard/events.out.tfevents.400.link",
    )
    broken = tmp_path / "tensorboard-3.tar"
    broken.write_bytes(b"not a tar at all" * 100)

    merged = merge_parts([first, second, broken], tmp_path / "store")

    with tarfile.open(merged.temp_path) as bundle:
        contents = {m.name: bundle.extractfile(m).read() for m in bundle if m.isreg()}
        assert all(m.isreg() for m in bundle.getmembers())
    assert contents == {
        "tensorboard/events.out.tfevents.100.host.1.0": b"attempt one",
        "tensorboard/events.out.tfevents.200.host.2.0": b"attempt two",
        # Only the bare name of an event file is kept, inside the run directory.
        "tensorboard/events.out.tfevents.300.escape": b"a path out of the run",
    }
    assert merged.size == merged.temp_path.stat().st_size and len(merged.sha256) == 64


def test_part_names_and_order() -> None:
    assert is_part("tensorboard-12.tar") and is_part("tensorboard.tar")
    assert not is_part("tensorboard") and not is_part("tensorboard-x.tar")
    names = ["tensorboard-10.tar", "tensorboard-2.tar", "tensorboard.tar"]
    ordered = sorted(names, key=lambda n: part_order(n, attempt=5))
    assert ordered == ["tensorboard-2.tar", "tensorboard.tar", "tensorboard-10.tar"]
