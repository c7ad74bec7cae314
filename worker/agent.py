"""The GPU worker agent: register, heartbeat, claim jobs and run each one in a child process.

One job at a time per agent. The agent meters the job (NVML + CodeCarbon) in its own
process, so a crashed or killed child still gets an energy report.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from worker.archives import private_attempt_dir
from worker.attempt import AgentOptions, AttemptRunner, JobRun
from worker.client import Claim, ProtocolError, WorkerClient
from worker.metering.codecarbon_meter import CodeCarbonMeter, country_for_zone
from worker.metering.host import HostEnergyMeter, HostRegistry, HostShare
from worker.metering.nvml import GpuInfo, Nvml, NvmlMeter
from worker.metering.session import MeteringSession

log = logging.getLogger("greenwindow.worker")

__all__ = ["Agent", "AgentOptions", "agent_version"]


def agent_version() -> str:
    """The installed greenwindow version."""
    try:
        from importlib.metadata import version

        return version("greenwindow")
    except Exception:
        return "0.0.0"


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
        beat = threading.Thread(
            target=self._worker_heartbeats, name="worker-heartbeat", daemon=True
        )
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
        run = JobRun(claim=claim, run_dir=job_dir / "run")
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
        runner = AttemptRunner(
            self.client,
            self.options,
            shutdown=self._shutdown,
            heartbeat_seconds=self.heartbeat_seconds,
            nvml=self._nvml,
        )
        try:
            return runner.run(run, job_dir, job_gpus, session)
        finally:
            session.stop()  # no-op when a finishing call already took the report
            if not self.options.keep_job_dirs:
                # Everything worth keeping was uploaded; GPU hosts have finite disks.
                shutil.rmtree(job_dir, ignore_errors=True)

    def _job_gpus(self, claim: Claim) -> list[tuple[GpuInfo, Any]]:
        if self.options.cpu_only:
            return []
        wanted = int(claim.job.get("gpus") or 1)
        return self._gpus[:wanted]
