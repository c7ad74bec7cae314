"""One attempt of a claimed job: fetch its inputs, run and supervise the child, report."""

from __future__ import annotations

import logging
import math
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import httpx

from worker.archives import (
    CHECKPOINT_ARTIFACT,
    PREPARED_ARTIFACT,
    PREPARED_DIR,
    pack_tar,
    tensorboard_artifact,
    unpack_tar,
    unpack_zip,
)
from worker.background import CheckpointUploader, LeaseKeeper
from worker.child import KIND_FINETUNE, ChildJob, ChildSpec
from worker.client import ChecksumMismatch, Claim, LeaseLost, ProtocolError, WorkerClient
from worker.errors import public_error
from worker.metering.nvml import GpuInfo, Nvml
from worker.metering.session import MeteringSession
from worker.telemetry import heartbeat_telemetry
from worker.training.config import FinetuneConfig, adapter_filename, config_stages, parent_job_id

log = logging.getLogger("greenwindow.worker")

PROGRESS_KEYS = ("stage", "step", "total_steps", "loss", "steps_per_s")


def now_rfc3339() -> str:
    """Current UTC time, RFC 3339."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


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
class JobRun:
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
    # The prepared dataset came from an earlier attempt (so it is on the service already).
    prepared_restored: bool = False
    # Set when training starts: the prepared dataset is complete and worth uploading.
    training_started: threading.Event = field(default_factory=threading.Event, repr=False)
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


def _finite(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and math.isfinite(value)


class AttemptRunner:
    """Runs one claimed attempt to its end and reports the outcome to the service."""

    def __init__(
        self,
        client: WorkerClient,
        options: AgentOptions,
        *,
        shutdown: threading.Event,
        heartbeat_seconds: float,
        nvml: Nvml | None = None,
    ) -> None:
        self.client = client
        self._nvml = nvml
        self._job_gpus: list[tuple[GpuInfo, Any]] = []
        self._session: MeteringSession | None = None
        self.options = options
        self._shutdown = shutdown
        self.heartbeat_seconds = heartbeat_seconds

    def run(
        self,
        run: JobRun,
        job_dir: Path,
        job_gpus: list[tuple[GpuInfo, Any]],
        session: MeteringSession,
    ) -> str:
        claim = run.claim
        self._job_gpus = list(job_gpus)
        self._session = session
        keeper = LeaseKeeper(self.client, run, session, self.heartbeat_seconds)
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
        uploader = CheckpointUploader(self.client, run, self.options.checkpoint_upload_seconds)
        child = ChildJob(spec)
        try:
            child.start()
        except Exception as exc:
            return self._report_failure(
                run, session, f"could not start the job process: {exc}", retryable=True
            )
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

    def _prepare_inputs(self, run: JobRun, job_dir: Path) -> Path | None:
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
        if claim.prepared_from and dataset_dir is not None:
            # After the checkpoint: a refused checkpoint empties the run directory.
            self._restore_prepared(run, job_dir, claim.prepared_from)
        return dataset_dir

    def _restore_prepared(self, run: JobRun, job_dir: Path, prepared: dict[str, Any]) -> None:
        """Reuse an earlier attempt's prepared dataset, verified by its SHA-256."""
        refused = self._unpack_artifact(
            run, PREPARED_ARTIFACT, job_dir / "prepared.tar", prepared.get("sha256")
        )
        if refused is not None:
            shutil.rmtree(run.run_dir / PREPARED_DIR, ignore_errors=True)
            run.add_event(
                "prepared_rejected",
                f"prepared dataset refused, preparing again: {public_error(str(refused))}",
            )
            log.warning("prepared dataset refused for job %s: %s", run.claim.job_id, refused)
            return
        run.prepared_restored = True
        run.add_event(
            "prepared_reused", f"reused the prepared dataset of attempt {prepared.get('attempt')}"
        )

    def _fetch_continued(self, run: JobRun, job_dir: Path) -> None:
        """For `config.base: job:<id>`, download that job's adapters (one per stage)."""
        config = FinetuneConfig.model_validate(run.claim.job.get("config") or {})
        parent = parent_job_id(config.base)
        if parent is None:
            return
        for stage in config_stages(config):
            name = adapter_filename(stage, config)
            path = self.client.download_artifact(parent, name, job_dir / "continued" / name)
            run.continued_from[stage] = str(path)

    def _restore_checkpoint(self, run: JobRun, job_dir: Path, resume: dict[str, Any]) -> None:
        name = str(resume.get("artifact") or CHECKPOINT_ARTIFACT)
        refused = self._unpack_artifact(run, name, job_dir / "resume.tar", resume.get("sha256"))
        if refused is not None:
            # Never train on a damaged (or vanished) checkpoint: start over and say so.
            shutil.rmtree(run.run_dir, ignore_errors=True)
            run.run_dir.mkdir(parents=True)
            # The team reads job events: the reason without this host's paths.
            run.add_event(
                "checkpoint_rejected",
                f"checkpoint {name} refused, restarting from scratch: {public_error(str(refused))}",
            )
            log.warning("checkpoint refused for job %s: %s", run.claim.job_id, refused)
            return
        run.add_event("resumed", f"restored checkpoint {name}")

    def _unpack_artifact(
        self, run: JobRun, name: str, archive: Path, sha256: str | None
    ) -> Exception | None:
        """Download the job's tar artifact `name`, check its SHA-256 and unpack it into the run
        directory; returns why it was refused (damaged, vanished) or None. Any other protocol
        error propagates."""
        try:
            self.client.download_artifact(run.claim.job_id, name, archive, expected_sha256=sha256)
            unpack_tar(archive, run.run_dir)
        except (ChecksumMismatch, tarfile.TarError, OSError, ProtocolError) as exc:
            if isinstance(exc, ProtocolError) and exc.status_code != 404:
                raise
            return exc
        finally:
            archive.unlink(missing_ok=True)
        return None

    def _supervise(
        self, run: JobRun, child: ChildJob, session: MeteringSession, uploader: CheckpointUploader
    ) -> None:
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
                    grace = (
                        self.options.lease_lost_grace_seconds
                        if run.stop_reason == "lease_lost"
                        else self.options.stop_grace_seconds
                    )
                    kill_at = time.monotonic() + grace
            if kill_at is not None and time.monotonic() >= kill_at:
                log.warning("job %s did not stop in time; killing it", run.claim.job_id)
                child.kill()

    def _take_messages(self, run: JobRun, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            kind = message.get("type")
            if kind == "progress":
                progress = {k: message[k] for k in PROGRESS_KEYS if k in message}
                # A NaN would not even be valid JSON; the telemetry names it instead.
                if not _finite(progress.get("loss")):
                    progress.pop("loss", None)
                module = self._nvml.module if self._nvml and self._nvml.available else None
                telemetry = heartbeat_telemetry(message.get("telemetry"), self._job_gpus, module)
                if telemetry is not None:
                    progress["telemetry"] = telemetry
                run.progress = progress
                self._count_phase(message)
            elif kind == "phase":
                self._start_phase(run, message)
            elif kind == "phase_counts":
                self._count_phase(message)
            elif kind == "dataset":
                seconds = message.get("audio_seconds")
                if self._session is not None and _finite(seconds) and seconds >= 0:
                    self._session.audio_seconds = float(seconds)
            elif kind == "event":
                run.add_event("workload", str(message.get("message", "")))
            elif kind == "result":
                run.result = message
            elif kind == "error":
                run.error = str(message.get("error", "unknown error"))

    def _start_phase(self, run: JobRun, message: dict[str, Any]) -> None:
        name = str(message.get("name"))
        if name in ("s1", "s2"):
            run.training_started.set()
        if self._session is None:
            return
        at = message.get("at")
        moment = datetime.fromtimestamp(at, UTC) if _finite(at) else None
        self._session.start_phase(name, moment)

    def _count_phase(self, message: dict[str, Any]) -> None:
        # Progress messages carry the counts as "attempt_steps", the final count as
        # "optimizer_steps"; a crash leaves the last progress figures.
        steps = message.get("optimizer_steps", message.get("attempt_steps"))
        samples = message.get("samples", message.get("attempt_samples"))
        name = message.get("name", message.get("stage"))
        if self._session is None or not isinstance(steps, int) or not isinstance(samples, int):
            return
        self._session.count_phase(str(name), optimizer_steps=steps, samples=samples)

    def _job_heartbeat(self, run: JobRun, child: ChildJob, session: MeteringSession) -> None:
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
    def _lose_lease(run: JobRun, child: ChildJob) -> None:
        log.warning("lease lost for job %s; stopping it", run.claim.job_id)
        run.stop_reason = "lease_lost"
        child.request_stop("stop")

    def _finish(
        self,
        run: JobRun,
        exitcode: int | None,
        session: MeteringSession,
        uploader: CheckpointUploader,
    ) -> str:
        if run.stop_reason == "lease_lost":
            # The job has a new owner: write no outcome, but the energy used is still charged.
            self._send_orphan_energy(run, session)
            return "lease_lost"
        keeper = LeaseKeeper(self.client, run, session, self.heartbeat_seconds)
        keeper.start()
        try:
            uploader.stop()  # an upload in flight finishes first; the keeper holds the lease
            return self._report_outcome(run, exitcode, session, uploader)
        finally:
            keeper.stop()

    def _report_outcome(
        self,
        run: JobRun,
        exitcode: int | None,
        session: MeteringSession,
        uploader: CheckpointUploader,
    ) -> str:
        result = run.result
        status = result.get("status") if result else None
        try:
            # Every ending keeps its logs: a failed run is the one most worth reading.
            logs = self._upload_tensorboard(run)
            uploader.upload_prepared()
            if run.stop_reason == "cancel":
                self.client.fail(
                    run.claim,
                    energy=session.stop(),
                    error="cancelled by the user",
                    retryable=False,
                    cancelled=True,
                )
                return "cancelled"
            if status == "succeeded" and result is not None:
                return self._complete(run, result, session, logs)
            if run.stop_reason in ("pause", "shutdown"):
                return self._release(run, result, session, uploader)
            reason = run.error or (
                f"job stopped with status {status!r}"
                if result
                else f"job process exited with code {exitcode} without a result"
            )
            # The retry resumes from the newest checkpoint the crashed run left, not an older one.
            uploader.flush()
            return self._report_failure(run, session, reason, retryable=True)
        except LeaseLost:
            log.warning("lease lost while finishing job %s", run.claim.job_id)
            self._send_orphan_energy(run, session)
            return "lease_lost"

    def _complete(
        self, run: JobRun, result: dict[str, Any], session: MeteringSession, logs: list[str]
    ) -> str:
        uploaded = self._upload_outputs(run, result)
        uploaded += self._upload_checkpoint(run, result)
        uploaded += logs
        self.client.complete(
            run.claim,
            energy=session.stop(),
            result={
                "steps": result.get("steps"),
                "metrics": result.get("metrics", {}),
                "artifacts": uploaded,
                "events": run.events,
            },
        )
        return "completed"

    def _release(
        self,
        run: JobRun,
        result: dict[str, Any] | None,
        session: MeteringSession,
        uploader: CheckpointUploader,
    ) -> str:
        reason = "paused" if run.stop_reason == "pause" else "shutdown"
        if result and result.get("checkpoint"):
            self._upload_checkpoint(run, result)
        elif not uploader.flush():
            run.add_event("no_checkpoint", "the job stopped without a new checkpoint")
        self.client.release(run.claim, energy=session.stop(), reason=reason)
        return f"released:{reason}"

    def _report_failure(
        self, run: JobRun, session: MeteringSession, error: str, *, retryable: bool
    ) -> str:
        # The whole story (traceback, paths) stays in this host's log; the team sees one line.
        log.error("job %s attempt %s failed: %s", run.claim.job_id, run.claim.attempt, error)
        try:
            self.client.fail(
                run.claim, energy=session.stop(), error=public_error(error), retryable=retryable
            )
        except LeaseLost:
            self._send_orphan_energy(run, session)
            return "lease_lost"
        return "failed"

    def _send_orphan_energy(self, run: JobRun, session: MeteringSession) -> None:
        """Best effort: a report the service cannot take any more is only logged."""
        try:
            self.client.orphan_energy(run.claim, energy=session.stop())
        except Exception as exc:  # noqa: BLE001 - the job is gone either way
            log.warning(
                "energy of job %s after the lease was lost not kept: %s", run.claim.job_id, exc
            )

    def _upload_outputs(self, run: JobRun, result: dict[str, Any]) -> list[str]:
        names = []
        for output in result.get("outputs", []):
            path = Path(output)
            if path.is_dir():
                archive = pack_tar([path], path.parent, run.run_dir.parent / f"{path.name}.tar")
                names.append(self._upload(run, archive.name, archive))
            elif path.is_file():
                names.append(self._upload(run, path.name, path))
        return names

    def _upload_checkpoint(self, run: JobRun, result: dict[str, Any]) -> list[str]:
        checkpoint = result.get("checkpoint")
        if not checkpoint or not Path(checkpoint).exists():
            return []
        archive = pack_tar(
            [Path(checkpoint)], run.run_dir, run.run_dir.parent / CHECKPOINT_ARTIFACT
        )
        return [self._upload(run, CHECKPOINT_ARTIFACT, archive)]

    def _upload_tensorboard(self, run: JobRun) -> list[str]:
        """This attempt's event files as `tensorboard-<attempt>.tar`; best effort."""
        event_files = sorted(run.run_dir.rglob("events.out.tfevents.*"))
        if not event_files:
            return []
        name = tensorboard_artifact(run.claim.attempt)
        try:
            archive = pack_tar(event_files, run.run_dir, run.run_dir.parent / name)
            return [self._upload(run, name, archive)]
        except LeaseLost:
            raise
        except Exception as exc:  # the outcome matters more than the logs
            log.warning("TensorBoard logs of job %s not uploaded: %s", run.claim.job_id, exc)
            return []

    def _upload(self, run: JobRun, name: str, path: Path) -> str:
        self.client.upload_artifact(run.claim, name, path)
        return name
