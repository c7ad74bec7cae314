"""The threads that run beside an attempt: the lease keeper and the checkpoint uploader."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import TYPE_CHECKING

from worker.archives import (
    CHECKPOINT_ARTIFACT,
    CHECKPOINT_DIR,
    PREPARED_ARTIFACT,
    PREPARED_DIR,
    file_identity,
    newest_checkpoint,
    pack_tar,
    snapshot_file,
)
from worker.client import LeaseLost, WorkerClient
from worker.metering.session import MeteringSession

if TYPE_CHECKING:
    from worker.attempt import JobRun

log = logging.getLogger("greenwindow.worker")


class LeaseKeeper:
    """Keeps renewing a job's lease while no child runs (input download, artifact upload)."""

    def __init__(
        self, client: WorkerClient, run: JobRun, session: MeteringSession, every_seconds: float
    ) -> None:
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
                    self._run.claim,
                    progress=self._run.progress,
                    energy={
                        "kwh_so_far": self._session.kwh_so_far(),
                        "watts": self._session.watts_now(),
                    },
                )
            except LeaseLost:
                return  # the next fenced call reports it
            except Exception as exc:  # transient: try again on the next tick
                log.warning("lease renewal failed: %s", exc)


class CheckpointUploader:
    """Uploads the child's newest checkpoint while it runs, at most once per ``every_seconds``.

    It runs in its own thread so a large upload never delays the job heartbeats; a 409 sets
    ``lease_lost`` for the supervising loop, which then stops the job as for a heartbeat's 409.
    """

    def __init__(self, client: WorkerClient, run: JobRun, every_seconds: float) -> None:
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
        self._prepared_done = False
        self._done = threading.Event()
        self.lease_lost = threading.Event()
        self.uploads = 0
        self._thread = threading.Thread(target=self._loop, name="checkpoint-upload", daemon=True)

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

    def upload_prepared(self) -> bool:
        """Upload the prepared dataset once training has started on it; True if it went.

        Later attempts download it instead of preparing again. Best effort: a dataset too
        large for the store only means the next attempt prepares it anew.
        """
        with self._lock:
            run = self._run
            if self._prepared_done or run.prepared_restored or not run.training_started.is_set():
                return False
            self._prepared_done = True  # one try per attempt, whatever happens
            source = run.run_dir / PREPARED_DIR
            if not source.is_dir():
                return False
            archive = run.run_dir.parent / PREPARED_ARTIFACT
            try:
                pack_tar([source], run.run_dir, archive)
                self._client.upload_artifact(run.claim, PREPARED_ARTIFACT, archive)
            except LeaseLost:
                raise
            except Exception as exc:
                log.warning("prepared dataset of job %s not uploaded: %s", run.claim.job_id, exc)
                return False
            finally:
                archive.unlink(missing_ok=True)
        run.add_event("prepared_uploaded", f"uploaded the prepared dataset as {PREPARED_ARTIFACT}")
        return True

    def _loop(self) -> None:
        while not self._done.wait(self._poll):
            if self._run.stop_reason is not None:
                continue  # stopping: the final report uploads what the child left
            try:
                self.upload_prepared()
            except LeaseLost:
                self.lease_lost.set()
                return
            if time.monotonic() - self._tried_at < self._every:
                continue
            try:
                self._upload_if_newer()
            except LeaseLost:
                self.lease_lost.set()
                return
            except Exception as exc:  # e.g. service disk full: try again after the interval
                log.warning("checkpoint upload for job %s failed: %s", self._run.claim.job_id, exc)

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
        self._run.add_event(
            "checkpoint_uploaded",
            f"uploaded {CHECKPOINT_DIR}/{newest.name} as {CHECKPOINT_ARTIFACT}",
        )
        log.info("job %s: uploaded checkpoint %s", self._run.claim.job_id, newest.name)
        return True
