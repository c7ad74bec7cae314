"""A team must never run code on a GPU worker, nor reach another job's files through one.

Attacks covered here:
- a real malicious pickle (its ``__reduce__`` runs code) as a resumed training checkpoint
  and as a base-weights file: it is refused with a clear error and its code never runs
  (tests/worker/test_agent_isolation.py drives the same file through a whole agent);
- extra files in a dataset zip (a pickled "checkpoint"): refused at upload naming the
  member, and never written to the worker's disk even if an old archive holds them;
- `.list` lines naming paths on the worker (another job's clips, the worker's own files);
- attempt directories that other jobs on the host could find or share;
- worker paths and stack traces leaking to the team through a job's ``error``.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from support.helpers import bearer, burn_in_job, tiny_dataset_zip
from support.world import make_ready, register_worker

from worker.archives import private_attempt_dir, unpack_zip
from worker.errors import public_error
from worker.training.checkpoint import UnsafeCheckpoint, load_checkpoint
from worker.training.pretrained import load_pretrained_s1, load_pretrained_s2


class _Payload:
    """Unpickling this runs ``exec``: it writes the marker file, as an attacker's code would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A genuine torch checkpoint file whose pickle carries the payload beside real tensors."""
    torch.save({"weight": {"layer.weight": torch.zeros(2, 2)}, "config": _Payload(marker)}, path)
    return path


def test_the_payload_is_real(tmp_path: Path) -> None:
    """The control: unpickled the unsafe way, the file does run its code."""
    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("stage", ["s1", "s2"])
def test_malicious_base_weights_are_refused_without_running(tmp_path: Path, stage: str) -> None:
    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / f"base_{stage}G.ckpt", marker)
    model = torch.nn.Linear(2, 2)  # the file is refused before any model is touched
    with pytest.raises(ValueError, match=f"base_{stage}G.ckpt"):
        if stage == "s1":
            load_pretrained_s1(model, path)
        else:
            load_pretrained_s2(model, torch.nn.Linear(2, 2), path)
    assert not marker.exists()


def test_malicious_training_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "ckpt-000001-s1-step1.pt", marker)
    with pytest.raises(UnsafeCheckpoint, match="holds more than tensors"):
        load_checkpoint(path)
    assert not marker.exists()


def _zip(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _with_members(extra: dict[str, bytes | str]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(tiny_dataset_zip())) as base:
        members: dict[str, bytes | str] = {n: base.read(n) for n in base.namelist()}
    return _zip({**members, **extra})


@pytest.mark.parametrize("member", ["weights/base_s1.ckpt", "run.py", "voice.list.bak"])
def test_extra_files_in_a_dataset_zip_are_refused_naming_them(
    sqlite_client: TestClient, alpha_key: str, tmp_path: Path, member: str
) -> None:
    marker = tmp_path / "marker"
    payload = malicious_checkpoint(tmp_path / "evil.ckpt", marker).read_bytes()
    response = sqlite_client.post(
        "/v1/datasets",
        content=_with_members({member: payload}),
        headers={**bearer(alpha_key), "content-type": "application/zip"},
    )
    assert response.status_code == 422, response.text
    assert member in response.json()["detail"] and response.json()["field"] == "file"
    assert not marker.exists()


def test_worker_unpacks_only_the_list_and_the_clips_it_names(tmp_path: Path) -> None:
    """An archive stored before the upload check (or by any other path) still cannot put
    anything else on the worker, and its list cannot point at the worker's files."""
    secret = tmp_path / "elsewhere" / "u9.wav"
    secret.parent.mkdir()
    secret.write_bytes(b"another job's clip")
    archive = tmp_path / "dataset.zip"
    archive.write_bytes(
        _with_members(
            {
                "weights/base_s1.ckpt": b"pickle",
                "notes/run.py": "print('x')",
                "wavs/unlisted.wav": b"not listed",
                "voice.list": f"/home/someone/data/u0.wav|spk|en|hello\n{secret}|spk|en|stolen\n",
            }
        )
    )
    dest = unpack_zip(archive, tmp_path / "dataset")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["u0.wav", "voice.list"]
    assert (dest / "voice.list").read_text() == "u0.wav|spk|en|hello\nu9.wav|spk|en|stolen\n"

    from worker.training.data.annotations import parse_list

    with pytest.raises(ValueError, match="missing wav"):
        parse_list(dest / "voice.list", dest)  # u9.wav is not read from outside the dataset


def test_a_list_cannot_name_an_absolute_path_on_the_worker(tmp_path: Path) -> None:
    from worker.training.data.annotations import parse_list

    outside = tmp_path / "other-job" / "clip.wav"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "train.list").write_text(f"{outside}|spk|en|hello\n")
    with pytest.raises(ValueError, match="missing wav"):
        parse_list(dataset / "train.list", dataset)


def test_attempt_directories_are_private_and_unique(tmp_path: Path) -> None:
    first = private_attempt_dir(tmp_path, "job-1", 1)
    again = private_attempt_dir(tmp_path, "job-1", 1)  # a retry of the very same attempt
    other = private_attempt_dir(tmp_path, "../job-2", 1)
    assert len({first, again, other}) == 3
    for directory in (first, again, other, tmp_path / "jobs"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert other.parent == tmp_path / "jobs"  # a hostile id cannot move it


def test_public_error_keeps_one_line_without_paths() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/opt/greenwindow/worker/child.py", line 120, in child_main\n'
        "    outcome = run_workload(\n"
        "FileNotFoundError: [Errno 2] No such file or directory: "
        "'/var/lib/greenwindow/jobs/abc-attempt-1-x/run/prepared/meta.json'\n"
    )
    assert public_error(traceback) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'meta.json'"
    )
    assert public_error("loss is NaN") == "loss is NaN"
    assert len(public_error("x" * 10_000)) <= 500


def test_a_traceback_sent_by_a_worker_never_reaches_the_team(
    sqlite_client: TestClient, alpha_key: str
) -> None:
    job = sqlite_client.post("/v1/jobs", json=burn_in_job(), headers=bearer(alpha_key))
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    make_ready(sqlite_client, job_id)
    worker_id, token = register_worker(sqlite_client)
    claim = sqlite_client.post(f"/v1/workers/{worker_id}/claim", json={}, headers=bearer(token))
    assert claim.status_code == 200, claim.text
    lease = {k: claim.json()[k] for k in ("attempt", "lease_token")}
    error = (
        "Traceback (most recent call last):\n"
        '  File "/srv/gw/worker/training/runner.py", line 141, in _run_rank\n'
        "ValueError: refused /srv/gw/jobs/j-attempt-1-q/run/checkpoints/ckpt-1.pt\n"
    )
    failed = sqlite_client.post(
        f"/v1/workers/{worker_id}/jobs/{job_id}/fail",
        json={**lease, "error": error, "retryable": False},
        headers=bearer(token),
    )
    assert failed.status_code == 200, failed.text
    seen = sqlite_client.get(f"/v1/jobs/{job_id}", headers=bearer(alpha_key)).json()
    assert seen["error"] == "ValueError: refused ckpt-1.pt"
    for text in (seen["error"], seen["state_reason"]):
        assert "/srv/gw" not in text and "Traceback" not in text
