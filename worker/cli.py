"""Wiring behind `greenwindow worker`: resolve the options, then run the agent."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from worker.agent import Agent, AgentOptions
from worker.client import WorkerClient
from worker.metering.nvml import GpuInfo, Nvml
from worker.training.bases import BaseModelsError, scan_models_dir

log = logging.getLogger("greenwindow.worker")

UPLOAD_EVERY_ENV = "GREENWINDOW_CHECKPOINT_UPLOAD_SECONDS"


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
        AgentOptions(
            work_dir=Path(work_dir),
            zone=zone,
            cpu_only=cpu_only,
            poll_seconds=poll_seconds,
            max_jobs=max_jobs,
            models_dir=models_dir,
            bases=bases,
            **settings,
        ),
        nvml=nvml,
        gpus=worker_gpus,
    )
    previous: dict[signal.Signals, Any] = {}
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
