"""The GPU worker agent: register, heartbeat, claim jobs and run each one in a child process.

One job at a time per agent. The agent meters the job (NVML + CodeCarbon) in its own
process, so a crashed or killed child still gets an energy report.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from worker.child import KIND_FINETUNE, ChildJob, ChildSpec
from worker.client import ChecksumMismatch, Claim, LeaseLost, ProtocolError, WorkerClient
from worker.errors import public_error
from worker.metering.codecarbon_meter import CodeCarbonMeter, country_for_zone
from worker.metering.host import HostEnergyMeter, HostRegistry, HostShare
from worker.metering.nvml import GpuInfo, Nvml, NvmlMeter
from worker.metering.session import MeteringSession
from worker.training.bases import BaseModelsError, scan_models_dir
from worker.training.config import FinetuneConfig, adapter_filename, config_stages, parent_job_id
from worker.training.data.annotations import AUDIO_SUFFIXES, wav_basename

log = logging.getLogger("greenwindow.worker")

PROGRESS_KEYS = ("stage", "step", "total_steps", "loss", "steps_per_s")
CHECKPOINT_ARTIFACT = "checkpoint.tar"
TENSORBOARD_ARTIFACT = "tensorboard.tar"
# Where the workloads (burn-in, training core) write their checkpoints, under the run dir.
CHECKPOINT_DIR = "checkpoints"
UPLOAD_EVERY_ENV = "GREENWINDOW_CHECKPOINT_UPLOAD_SECONDS"


def agent_version() -> str:
    """The installed greenwindow version."""
    try:
        from importlib.metadata import version

        return version("greenwindow")
    except Exception:
        return "0.0.0"


def now_rfc3339() -> str:
    """Current UTC time, RFC 3339."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


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
        lists = [info for info in members
                 if info.filename.lower().endswith(".list") and not _is_debris(info.filename)]
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
            info = audio.get(name)
            if info is None:
                continue  # the training data check names the missing clip
            with bundle.open(info) as source, open(dest / name, "xb") as target_file:
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


@dataclass
class AgentOptions:
    """How an agent runs."""

    work_dir: Path
    zone: str | None = None
    cpu_only: bool = False
    poll_seconds: float = 2.0
    max_jobs: int | None = None
    sample_seconds: float = 1.0
    stop_grace_seconds: float = 120.0
    lease_lost_grace_seconds: float = 10.0
    codecarbon: bool = True
    # Only for a CPU meter passed in by the caller: the default host meter always reads the
    # whole machine and splits it between the host's jobs by CPU time (worker/metering/host.py).
    tracking_mode: str = "machine"
    # CodeCarbon's country (ISO alpha-3) for its own CO2e cross-check; default: from the zone.
    country_iso_code: str | None = None
    keep_job_dirs: bool = False
    # While a job runs, a newer checkpoint goes up at most this often, so a worker killed
    # mid-job (kill -9, lost host) leaves something recent for the next attempt to resume.
    checkpoint_upload_seconds: float = 60.0
    # Upstream-layout base models (--models) and the bases found there at start.
    models_dir: Path | None = None
    bases: list[str] = field(default_factory=lambda: ["none"])


@dataclass
class _JobRun:
    """What the agent learns while a child runs."""

    claim: Claim
    run_dir: Path
    progress: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    pending_events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    stop_reason: str | None = None  # cancel | pause | shutdown | lease_lost
    # For config.base job:<id>: that job's adapter file per stage, downloaded here.
    continued_from: dict[str, str] = field(default_factory=dict)
    # The checkpoint uploader adds events from its own thread.
    _event_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_event(self, kind: str, message: str) -> None:
        """Record an event for the job's history and the next heartbeat."""
        event = {"type": kind, "message": message, "at": now_rfc3339()}
        with self._event_lock:
            self.events.append(event)
            self.pending_events.append(event)

    def unsent_events(self) -> list[dict[str, Any]]:
        """Events no heartbeat has delivered yet."""
        with self._event_lock:
            return list(self.pending_events)

    def mark_sent(self, count: int) -> None:
        """Forget the first ``count`` pending events: a heartbeat delivered them."""
        with self._event_lock:
            del self.pending_events[:count]


class Agent:
    """Claims and runs jobs until told to stop."""

    def __init__(
        self,
        client: WorkerClient,
        options: AgentOptions,
        *,
        nvml: Nvml,
        gpus: list[tuple[GpuInfo, Any]],
        cpu_meter_factory: Callable[[str], CodeCarbonMeter | HostShare | None] | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self._nvml = nvml
        self._gpus = gpus
        self._cpu_meter_factory = cpu_meter_factory or self._default_cpu_meter
        self._shutdown = threading.Event()
        self._fleet_meter = NvmlMeter(nvml, gpus)
        self.heartbeat_seconds = 15.0
        self.jobs_run = 0
        self._host_meter: HostEnergyMeter | None = None

    def _default_cpu_meter(self, country: str) -> HostShare | None:
        # CPU and RAM energy is host-wide: one CodeCarbon tracker for the host, started once,
        # and each attempt gets its share by the CPU time of its process tree.
        if not self.options.codecarbon:
            return None
        if self._host_meter is None:
            # The whole machine, read once; the split between this host's jobs (this agent's
            # and other agents') is by CPU time, through a registry private to this user.
            tracker = CodeCarbonMeter(
                country_iso_code=self.options.country_iso_code or country,
                tracking_mode="machine",
                measure_power_secs=max(1.0, self.options.sample_seconds),
            )
            tracker.start()
            registry = HostRegistry.open(
                Path(tempfile.gettempdir()) / f"greenwindow-host-meter-{os.getuid()}"
            )
            self._host_meter = HostEnergyMeter(
                tracker.kwh_so_far, method=tracker.cpu_method, registry=registry
            )
        return self._host_meter.join()

    def request_shutdown(self) -> None:
        """Finish up: checkpoint and release a running job, then return from ``run``."""
        self._shutdown.set()

    def register(self) -> None:
        """Register this host and its GPUs with the service."""
        registration = self.client.register(
            host=socket.gethostname(),
            zone=self.options.zone,
            gpus=[info.to_json() for info, _ in self._gpus],
            cpu_only=self.options.cpu_only,
            version=agent_version(),
            bases=self.options.bases,
        )
        self.heartbeat_seconds = registration.heartbeat_seconds
        log.info("registered as worker %s", registration.worker_id)

    def run(self) -> None:
        """Register, then claim and run jobs until shutdown or ``max_jobs``."""
        if not self._register_when_reachable():
            return
        beat = threading.Thread(target=self._worker_heartbeats, name="worker-heartbeat",
                                daemon=True)
        beat.start()
        try:
            while not self._shutdown.is_set():
                if self.options.max_jobs is not None and self.jobs_run >= self.options.max_jobs:
                    break
                claim = self._claim()
                if claim is None:
                    self._shutdown.wait(self.options.poll_seconds)
                    continue
                try:
                    self.run_job(claim)
                except Exception:
                    # The lease will lapse and the service requeues the job; the agent lives on.
                    log.exception("unexpected error while running job %s", claim.job_id)
                self.jobs_run += 1
        finally:
            self._shutdown.set()
            beat.join(timeout=5)
            if self._host_meter is not None:
                self._host_meter.close()

    def _register_when_reachable(self) -> bool:
        # A worker host may boot before the service: keep trying until it answers.
        # A refused fleet token (a 4xx) is a configuration error and ends the agent.
        wait = self.options.poll_seconds
        while not self._shutdown.is_set():
            try:
                self.register()
                return True
            except ProtocolError as exc:
                if exc.status_code is not None and exc.status_code < 500:
                    raise
                log.warning("registration failed: %s", exc)
            except httpx.HTTPError as exc:
                log.warning("service unreachable, retrying registration: %s", exc)
            self._shutdown.wait(wait)
            wait = min(wait * 2, 60.0)
        return False

    def _claim(self) -> Claim | None:
        try:
            return self.client.claim()
        except ProtocolError as exc:
            log.warning("claim failed: %s", exc)
            if exc.status_code == 401:
                self._register_again()
        except httpx.HTTPError as exc:
            log.warning("claim failed: %s", exc)
        return None

    def _register_again(self) -> None:
        # The service forgot this worker (e.g. a fresh database): join the fleet anew.
        try:
            self.register()
        except (httpx.HTTPError, ProtocolError) as exc:
            log.warning("registering again failed: %s", exc)

    def _worker_heartbeats(self) -> None:
        while not self._shutdown.wait(self.heartbeat_seconds):
            try:
                self._fleet_meter.sample()
                self.client.heartbeat(self._fleet_meter.watts_by_gpu())
            except Exception as exc:  # a missed beat is retried on the next tick
                log.warning("worker heartbeat failed: %s", exc)

    # --- one job -------------------------------------------------------------------------

    def run_job(self, claim: Claim) -> str:
        """Run one claimed job to its end; returns what was reported (complete, fail, ...)."""
        job_dir = private_attempt_dir(self.options.work_dir, claim.job_id, claim.attempt)
        run = _JobRun(claim=claim, run_dir=job_dir / "run")
        job_gpus = self._job_gpus(claim)
        session = MeteringSession(
            attempt=claim.attempt,
            gpu_meter=NvmlMeter(self._nvml, job_gpus),
            cpu_meter=self._cpu_meter_factory(
                country_for_zone(self.options.zone or claim.job.get("zone"))
            ),
            sample_seconds=self.options.sample_seconds,
        )
        session.start()
        try:
            return self._run_attempt(run, job_dir, job_gpus, session)
        finally:
            session.stop()  # no-op when a finishing call already took the report
            if not self.options.keep_job_dirs:
                # Everything worth keeping was uploaded; GPU hosts have finite disks.
                shutil.rmtree(job_dir, ignore_errors=True)

    def _run_attempt(self, run: _JobRun, job_dir: Path, job_gpus: list[tuple[GpuInfo, Any]],
                     session: MeteringSession) -> str:
        claim = run.claim
        keeper = _LeaseKeeper(self.client, run, session, self.heartbeat_seconds)
        keeper.start()  # a large dataset can take longer to fetch than a lease lasts
        error = None
        try:
            dataset_dir = self._prepare_inputs(run, job_dir)
        except LeaseLost:
            keeper.stop()
            session.stop()
            return "lease_lost"
        except Exception as exc:
            error = f"could not prepare inputs: {exc}"
        keeper.stop()
        if error is not None:
            return self._report_failure(run, session, error, retryable=True)
        spec = ChildSpec(
            kind=str(claim.job.get("kind")),
            config=dict(claim.job.get("config") or {}),
            work_dir=str(run.run_dir),
            dataset_dir=str(dataset_dir) if dataset_dir else None,
            gpus=max(1, len(job_gpus)),
            cuda_visible_devices=",".join(info.uuid for info, _ in job_gpus),
            models_dir=str(self.options.models_dir) if self.options.models_dir else None,
            base=str(claim.job.get("base") or "none"),
            continued_from=dict(run.continued_from),
        )
        # Made after the restore and before the child writes: the restored checkpoint counts
        # as uploaded already.
        uploader = _CheckpointUploader(self.client, run, self.options.checkpoint_upload_seconds)
        child = ChildJob(spec)
        try:
            child.start()
        except Exception as exc:
            return self._report_failure(run, session, f"could not start the job process: {exc}",
                                        retryable=True)
        if child.process.pid is not None:
            session.track_process(child.process.pid)
        uploader.start()
        try:
            try:
                self._supervise(run, child, session, uploader)
            finally:
                child.kill()
                exitcode = child.exitcode
                child.close()
            return self._finish(run, exitcode, session, uploader)
        finally:
            uploader.stop(timeout=5)  # no-op when _finish already stopped it

    def _job_gpus(self, claim: Claim) -> list[tuple[GpuInfo, Any]]:
        if self.options.cpu_only:
            return []
        wanted = int(claim.job.get("gpus") or 1)
        return self._gpus[:wanted]

    def _prepare_inputs(self, run: _JobRun, job_dir: Path) -> Path | None:
        claim = run.claim
        run.run_dir.mkdir(parents=True)
        dataset_dir = None
        dataset = claim.job.get("dataset") or {}
        if claim.job.get("kind") == KIND_FINETUNE or dataset.get("id"):
            if not dataset.get("id"):
                raise ValueError("job has no dataset id")
            archive = self.client.download_dataset(str(dataset["id"]), job_dir / "dataset.zip")
            dataset_dir = unpack_zip(archive, job_dir / "dataset")
            archive.unlink()
            self._fetch_continued(run, job_dir)
        if claim.resume_from:
            self._restore_checkpoint(run, job_dir, claim.resume_from)
        return dataset_dir

    def _fetch_continued(self, run: _JobRun, job_dir: Path) -> None:
        """For `config.base: job:<id>`, download that job's adapters (one per stage)."""
        config = FinetuneConfig.model_validate(run.claim.job.get("config") or {})
        parent = parent_job_id(config.base)
        if parent is None:
            return
        for stage in config_stages(config):
            name = adapter_filename(stage, config)
            path = self.client.download_artifact(parent, name, job_dir / "continued" / name)
            run.continued_from[stage] = str(path)

    def _restore_checkpoint(self, run: _JobRun, job_dir: Path, resume: dict[str, Any]) -> None:
        name = str(resume.get("artifact") or CHECKPOINT_ARTIFACT)
        archive = job_dir / "resume.tar"
        try:
            self.client.download_artifact(
                run.claim.job_id, name, archive, expected_sha256=resume.get("sha256")
            )
            unpack_tar(archive, run.run_dir)
        except (ChecksumMismatch, tarfile.TarError, OSError, ProtocolError) as exc:
            if isinstance(exc, ProtocolError) and exc.status_code != 404:
                raise
            # Never train on a damaged (or vanished) checkpoint: start over and say so.
            shutil.rmtree(run.run_dir, ignore_errors=True)
            run.run_dir.mkdir(parents=True)
            # The team reads job events: the reason without this host's paths.
            run.add_event("checkpoint_rejected",
                          f"checkpoint {name} refused, restarting from scratch: "
                          f"{public_error(str(exc))}")
            log.warning("checkpoint refused for job %s: %s", run.claim.job_id, exc)
            return
        finally:
            archive.unlink(missing_ok=True)
        run.add_event("resumed", f"restored checkpoint {name}")

    def _supervise(self, run: _JobRun, child: ChildJob, session: MeteringSession,
                   uploader: _CheckpointUploader) -> None:
        next_beat = time.monotonic()
        kill_at: float | None = None
        while True:
            alive = child.is_alive()
            self._take_messages(run, child.messages(wait_seconds=0.2 if alive else 1.0))
            if not alive:
                self._take_messages(run, child.messages())
                return
            if uploader.lease_lost.is_set() and run.stop_reason != "lease_lost":
                self._lose_lease(run, child)
                lost_at = time.monotonic() + self.options.lease_lost_grace_seconds
                kill_at = lost_at if kill_at is None else min(kill_at, lost_at)
            if self._shutdown.is_set() and run.stop_reason is None:
                run.stop_reason = "shutdown"
                child.request_stop("pause")
                kill_at = time.monotonic() + self.options.stop_grace_seconds
            if run.stop_reason != "lease_lost" and time.monotonic() >= next_beat:
                self._job_heartbeat(run, child, session)
                next_beat = time.monotonic() + self.heartbeat_seconds
                if run.stop_reason is not None and kill_at is None:
                    grace = (self.options.lease_lost_grace_seconds
                             if run.stop_reason == "lease_lost"
                             else self.options.stop_grace_seconds)
                    kill_at = time.monotonic() + grace
            if kill_at is not None and time.monotonic() >= kill_at:
                log.warning("job %s did not stop in time; killing it", run.claim.job_id)
                child.kill()

    @staticmethod
    def _take_messages(run: _JobRun, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            kind = message.get("type")
            if kind == "progress":
                run.progress = {k: message[k] for k in PROGRESS_KEYS if k in message}
            elif kind == "event":
                run.add_event("workload", str(message.get("message", "")))
            elif kind == "result":
                run.result = message
            elif kind == "error":
                run.error = str(message.get("error", "unknown error"))

    def _job_heartbeat(self, run: _JobRun, child: ChildJob, session: MeteringSession) -> None:
        energy = {"kwh_so_far": session.kwh_so_far(), "watts": session.watts_now()}
        events = run.unsent_events()
        try:
            answer = self.client.job_heartbeat(
                run.claim, progress=run.progress, energy=energy, events=events
            )
        except LeaseLost:
            self._lose_lease(run, child)
            return
        except (httpx.HTTPError, ProtocolError) as exc:
            log.warning("job heartbeat failed: %s", exc)
            return
        run.mark_sent(len(events))
        action = answer.get("action", "continue")
        if run.stop_reason is not None:
            return
        if action == "cancel":
            run.stop_reason = "cancel"
            child.request_stop("stop")
        elif action == "pause":
            run.stop_reason = "pause"
            child.request_stop("pause")

    @staticmethod
    def _lose_lease(run: _JobRun, child: ChildJob) -> None:
        log.warning("lease lost for job %s; stopping it", run.claim.job_id)
        run.stop_reason = "lease_lost"
        child.request_stop("stop")

    def _finish(self, run: _JobRun, exitcode: int | None, session: MeteringSession,
                uploader: _CheckpointUploader) -> str:
        if run.stop_reason == "lease_lost":
            # The job has a new owner: write no outcome, but the energy used is still charged.
            self._send_orphan_energy(run, session)
            return "lease_lost"
        keeper = _LeaseKeeper(self.client, run, session, self.heartbeat_seconds)
        keeper.start()
        try:
            uploader.stop()  # an upload in flight finishes first; the keeper holds the lease
            return self._report_outcome(run, exitcode, session, uploader)
        finally:
            keeper.stop()

    def _report_outcome(self, run: _JobRun, exitcode: int | None,
                        session: MeteringSession, uploader: _CheckpointUploader) -> str:
        result = run.result
        status = result.get("status") if result else None
        try:
            if run.stop_reason == "cancel":
                self.client.fail(run.claim, energy=session.stop(), error="cancelled by the user",
                                 retryable=False, cancelled=True)
                return "cancelled"
            if status == "succeeded":
                return self._complete(run, result, session)
            if run.stop_reason in ("pause", "shutdown"):
                return self._release(run, result, session, uploader)
            reason = run.error or (
                f"job stopped with status {status!r}" if result
                else f"job process exited with code {exitcode} without a result"
            )
            # The retry resumes from the newest checkpoint the crashed run left, not an older one.
            uploader.flush()
            return self._report_failure(run, session, reason, retryable=True)
        except LeaseLost:
            log.warning("lease lost while finishing job %s", run.claim.job_id)
            self._send_orphan_energy(run, session)
            return "lease_lost"

    def _complete(self, run: _JobRun, result: dict[str, Any], session: MeteringSession) -> str:
        uploaded = self._upload_outputs(run, result)
        uploaded += self._upload_checkpoint(run, result)
        uploaded += self._upload_tensorboard(run)
        self.client.complete(run.claim, energy=session.stop(), result={
            "steps": result.get("steps"),
            "metrics": result.get("metrics", {}),
            "artifacts": uploaded,
            "events": run.events,
        })
        return "completed"

    def _release(self, run: _JobRun, result: dict[str, Any] | None,
                 session: MeteringSession, uploader: _CheckpointUploader) -> str:
        reason = "paused" if run.stop_reason == "pause" else "shutdown"
        if result and result.get("checkpoint"):
            self._upload_checkpoint(run, result)
        elif not uploader.flush():
            run.add_event("no_checkpoint", "the job stopped without a new checkpoint")
        self.client.release(run.claim, energy=session.stop(), reason=reason)
        return f"released:{reason}"

    def _report_failure(self, run: _JobRun, session: MeteringSession, error: str, *,
                        retryable: bool) -> str:
        # The whole story (traceback, paths) stays in this host's log; the team sees one line.
        log.error("job %s attempt %s failed: %s", run.claim.job_id, run.claim.attempt, error)
        try:
            self.client.fail(run.claim, energy=session.stop(), error=public_error(error),
                             retryable=retryable)
        except LeaseLost:
            self._send_orphan_energy(run, session)
            return "lease_lost"
        return "failed"

    def _send_orphan_energy(self, run: _JobRun, session: MeteringSession) -> None:
        """Best effort: a report the service cannot take any more is only logged."""
        try:
            self.client.orphan_energy(run.claim, energy=session.stop())
        except Exception as exc:  # noqa: BLE001 - the job is gone either way
            log.warning("energy of job %s after the lease was lost not kept: %s",
                        run.claim.job_id, exc)

    def _upload_outputs(self, run: _JobRun, result: dict[str, Any]) -> list[str]:
        names = []
        for output in result.get("outputs", []):
            path = Path(output)
            if path.is_dir():
                archive = pack_tar([path], path.parent, run.run_dir.parent / f"{path.name}.tar")
                names.append(self._upload(run, archive.name, archive))
            elif path.is_file():
                names.append(self._upload(run, path.name, path))
        return names

    def _upload_checkpoint(self, run: _JobRun, result: dict[str, Any]) -> list[str]:
        checkpoint = result.get("checkpoint")
        if not checkpoint or not Path(checkpoint).exists():
            return []
        archive = pack_tar([Path(checkpoint)], run.run_dir,
                           run.run_dir.parent / CHECKPOINT_ARTIFACT)
        return [self._upload(run, CHECKPOINT_ARTIFACT, archive)]

    def _upload_tensorboard(self, run: _JobRun) -> list[str]:
        event_files = sorted(run.run_dir.rglob("events.out.tfevents.*"))
        if not event_files:
            return []
        archive = pack_tar(event_files, run.run_dir, run.run_dir.parent / TENSORBOARD_ARTIFACT)
        return [self._upload(run, TENSORBOARD_ARTIFACT, archive)]

    def _upload(self, run: _JobRun, name: str, path: Path) -> str:
        self.client.upload_artifact(run.claim, name, path)
        return name


class _LeaseKeeper:
    """Keeps renewing a job's lease while no child runs (input download, artifact upload)."""

    def __init__(self, client: WorkerClient, run: _JobRun, session: MeteringSession,
                 every_seconds: float) -> None:
        self._client = client
        self._run = run
        self._session = session
        self._every = every_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-keeper", daemon=True)

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (before or after the final call)."""
        self._done.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        while not self._done.wait(self._every):
            try:
                self._client.job_heartbeat(
                    self._run.claim, progress=self._run.progress,
                    energy={"kwh_so_far": self._session.kwh_so_far(),
                            "watts": self._session.watts_now()},
                )
            except LeaseLost:
                return  # the next fenced call reports it
            except Exception as exc:  # transient: try again on the next tick
                log.warning("lease renewal failed: %s", exc)


class _CheckpointUploader:
    """Uploads the child's newest checkpoint while it runs, at most once per ``every_seconds``.

    It runs in its own thread so a large upload never delays the job heartbeats; a 409 sets
    ``lease_lost`` for the supervising loop, which then stops the job as for a heartbeat's 409.
    """

    def __init__(self, client: WorkerClient, run: _JobRun, every_seconds: float) -> None:
        self._client = client
        self._run = run
        self._every = max(0.0, every_seconds)
        # Look for new files often; the rate limit applies to uploads, not to this stat.
        self._poll = min(1.0, max(self._every, 0.05))
        self._checkpoints = run.run_dir / CHECKPOINT_DIR
        self._staging = run.run_dir.parent / "checkpoint-snapshot"
        self._archive = run.run_dir.parent / "checkpoint-periodic.tar"
        newest = newest_checkpoint(self._checkpoints)
        # A restored checkpoint is already on the service.
        self._uploaded = file_identity(newest) if newest else None
        self._tried_at = float("-inf")
        self._lock = threading.Lock()  # the thread and a final flush never upload together
        self._done = threading.Event()
        self.lease_lost = threading.Event()
        self.uploads = 0
        self._thread = threading.Thread(target=self._loop, name="checkpoint-upload",
                                        daemon=True)

    def start(self) -> None:
        """Start watching for new checkpoints."""
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching; waits for an upload in flight (up to ``timeout`` seconds)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def flush(self) -> bool:
        """Upload a checkpoint newer than the last one now, rate limit aside; True if one went."""
        try:
            return self._upload_if_newer()
        except LeaseLost:
            raise
        except Exception as exc:  # the job's outcome is still worth reporting
            log.warning("checkpoint upload for job %s failed: %s", self._run.claim.job_id, exc)
            return False

    def _loop(self) -> None:
        while not self._done.wait(self._poll):
            if self._run.stop_reason is not None:
                continue  # stopping: the final report uploads what the child left
            if time.monotonic() - self._tried_at < self._every:
                continue
            try:
                self._upload_if_newer()
            except LeaseLost:
                self.lease_lost.set()
                return
            except Exception as exc:  # e.g. service disk full: try again after the interval
                log.warning("checkpoint upload for job %s failed: %s",
                            self._run.claim.job_id, exc)

    def _upload_if_newer(self) -> bool:
        with self._lock:
            newest = newest_checkpoint(self._checkpoints)
            if newest is None:
                return False
            try:
                if file_identity(newest) == self._uploaded:
                    return False
            except FileNotFoundError:
                return False  # pruned just now; a newer one exists for the next look
            self._tried_at = time.monotonic()
            staged = self._staging / CHECKPOINT_DIR / newest.name
            try:
                identity = snapshot_file(newest, staged)
                if identity is None:
                    return False
                pack_tar([staged], self._staging, self._archive)
                self._client.upload_artifact(self._run.claim, CHECKPOINT_ARTIFACT, self._archive)
            finally:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._archive.unlink(missing_ok=True)
            self._uploaded = identity
            self.uploads += 1
        self._run.add_event("checkpoint_uploaded",
                            f"uploaded {CHECKPOINT_DIR}/{newest.name} as {CHECKPOINT_ARTIFACT}")
        log.info("job %s: uploaded checkpoint %s", self._run.claim.job_id, newest.name)
        return True


def default_tracking_mode(offered_gpus: int, host_gpus: int) -> str:
    """CodeCarbon mode: the whole machine, unless other agents share this host's GPUs."""
    # Agents started per GPU (--gpus 0, --gpus 1, ...) would each count the whole host's
    # CPU and RAM in machine mode; process mode counts only this agent and its job.
    return "process" if 0 < offered_gpus < host_gpus else "machine"


def resolve_worker_gpus(
    nvml: Nvml, gpus: list[int] | None, cpu_only: bool
) -> list[tuple[GpuInfo, Any]]:
    """The GPUs this worker offers: NVML indices from ``--gpus``, else every GPU."""
    if cpu_only:
        return []
    every = nvml.all_gpus()
    if gpus is None:
        chosen = every
    else:
        by_index = {info.index: (info, handle) for info, handle in every}
        missing = [index for index in gpus if index not in by_index]
        if missing:
            raise SystemExit(f"GPU index {missing} not found (this host has {len(every)})")
        chosen = [by_index[index] for index in gpus]
    if not chosen:
        reason = nvml.error or "no GPU found"
        raise SystemExit(f"{reason}; start the worker with --cpu-only to run jobs on the CPU")
    return chosen


def held_bases(models_dir: Path | None) -> list[str]:
    """Check the --models directory at start: the bases to register (always `none`).

    A directory given but holding no complete base is a configuration error: the worker
    says what is missing instead of quietly offering only the random-init base.
    """
    try:
        held = scan_models_dir(models_dir)
    except BaseModelsError as exc:
        raise SystemExit(str(exc)) from None
    for base, problems in held.problems.items():
        log.warning("base %s not held: %s", base, "; ".join(problems))
    if models_dir is not None and not held.files:
        details = "; ".join(p for problems in held.problems.values() for p in problems)
        raise SystemExit(f"{models_dir} holds no complete base model: {details}")
    log.info("holding bases: %s", ", ".join(held.names))
    return held.names


def run_agent(
    server: str,
    token: str,
    *,
    gpus: list[int] | None,
    zone: str | None,
    work_dir: Path,
    cpu_only: bool,
    poll_seconds: float,
    max_jobs: int | None = None,
    transport: httpx.BaseTransport | None = None,
    nvml_module: Any | None = None,
    options: dict[str, Any] | None = None,
    models_dir: Path | None = None,
) -> None:
    """Run a worker agent until SIGTERM/SIGINT (or ``max_jobs`` jobs); returns normally."""
    zone = zone or os.environ.get("GREENWINDOW_ZONE")
    if not zone:
        raise SystemExit("the worker needs its grid zone: pass --zone (or set GREENWINDOW_ZONE)")
    bases = held_bases(models_dir)
    nvml = Nvml.open(nvml_module, load=not cpu_only)
    worker_gpus = resolve_worker_gpus(nvml, gpus, cpu_only)
    client = WorkerClient(server, token, transport=transport)
    settings: dict[str, Any] = {
        "tracking_mode": default_tracking_mode(len(worker_gpus), len(nvml.all_gpus())),
    }
    if upload_every := os.environ.get(UPLOAD_EVERY_ENV):
        try:
            settings["checkpoint_upload_seconds"] = float(upload_every)
        except ValueError:
            raise SystemExit(f"{UPLOAD_EVERY_ENV} must be a number of seconds") from None
    settings.update(options or {})
    agent = Agent(
        client,
        AgentOptions(work_dir=Path(work_dir), zone=zone, cpu_only=cpu_only,
                     poll_seconds=poll_seconds, max_jobs=max_jobs, models_dir=models_dir,
                     bases=bases, **settings),
        nvml=nvml,
        gpus=worker_gpus,
    )
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: agent.request_shutdown())
    try:
        agent.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        client.close()
        nvml.shutdown()
