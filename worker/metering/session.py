"""One metering window per job attempt: NVML sampled in a thread, CodeCarbon alongside.

All sampling happens in a background thread; the training loop does no metering work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.metering.codecarbon_meter import CodeCarbonMeter, CpuRamEnergy
from worker.metering.host import HostShare
from worker.metering.nvml import METHOD_NONE, GpuEnergy, NvmlMeter

MAX_TIMELINE_POINTS = 2000


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``moment`` as an RFC 3339 UTC string with a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def downsample(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """Average consecutive (t, watts) samples into at most ``max_points`` buckets.

    Averaging evenly spaced samples keeps the integral (the energy) of the series.
    """
    if len(points) <= max_points:
        return list(points)
    size = -(-len(points) // max_points)  # ceiling division
    buckets = [points[i : i + size] for i in range(0, len(points), size)]
    return [(bucket[0][0], sum(watts for _, watts in bucket) / len(bucket)) for bucket in buckets]


# Phases of a fine-tune, in the energy report's `phases` (docs/worker-protocol.md).
PHASE_NAMES = ("prepare", "s1", "s2")
MAX_PHASES = 8


@dataclass
class _Phase:
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    optimizer_steps: int = 0
    samples: int = 0


def energy_between(
    series: list[tuple[float, float]], end_t: float, start: float, stop: float
) -> float:
    """Joules of a (t, watts) step series (each point holds until the next) in [start, stop)."""
    joules = 0.0
    for i, (t, watts) in enumerate(series):
        until = series[i + 1][0] if i + 1 < len(series) else end_t
        overlap = min(until, stop) - max(t, start)
        if overlap > 0:
            joules += watts * overlap
    return joules


@dataclass(frozen=True)
class _Sample:
    t: float
    gpu_watts: float
    cpu_ram_kwh: float | None
    cpu_ram_watts: float | None


def total_watts_series(
    samples: list[_Sample], cpu_ram_kwh: float, end_t: float
) -> list[tuple[float, float]]:
    """(t, GPU + CPU + RAM watts) per sample, each holding until the next (the last until
    `end_t`).

    CodeCarbon reports CPU/RAM power once per measurement, averaged over the interval that
    measurement closes; so each sample takes the power of the next measurement after it.
    The host meter hands a job its last share only when the job stops, after the last
    sample, so the CPU/RAM part is then scaled to integrate to the measured `cpu_ram_kwh`
    (spread evenly when no measurement gave a power at all).
    """
    if not samples:
        return []
    cpu_ram: list[float] = []
    carry = samples[-1].cpu_ram_watts or 0.0
    for i in range(len(samples) - 1, -1, -1):
        if i + 1 < len(samples) and samples[i + 1].cpu_ram_kwh != samples[i].cpu_ram_kwh:
            carry = samples[i + 1].cpu_ram_watts or 0.0
        cpu_ram.append(carry)
    cpu_ram.reverse()
    spans = [
        max((samples[i + 1].t if i + 1 < len(samples) else end_t) - samples[i].t, 0.0)
        for i in range(len(samples))
    ]
    joules = sum(w * span for w, span in zip(cpu_ram, spans, strict=True))
    target = cpu_ram_kwh * 3.6e6
    total_span = sum(spans)
    if joules > 0:
        cpu_ram = [w * target / joules for w in cpu_ram]
    elif total_span > 0:
        cpu_ram = [target / total_span] * len(samples)
    return [(sample.t, sample.gpu_watts + w) for sample, w in zip(samples, cpu_ram, strict=True)]


class MeteringSession:
    """Meters one job attempt and builds its energy report (docs/worker-protocol.md)."""

    def __init__(
        self,
        *,
        attempt: int,
        gpu_meter: NvmlMeter,
        cpu_meter: CodeCarbonMeter | HostShare | None,
        sample_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
        max_timeline_points: int = MAX_TIMELINE_POINTS,
    ) -> None:
        self.attempt = attempt
        self._gpu = gpu_meter
        self._cpu = cpu_meter
        self._sample_seconds = sample_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_points = max_timeline_points
        self._samples: list[_Sample] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: datetime | None = None
        self._start_t = 0.0
        self._watts = 0.0
        self._report: dict[str, Any] | None = None
        self._phases: list[_Phase] = []
        self.audio_seconds: float | None = None

    def start_phase(self, name: str, at: datetime | None = None) -> None:
        """A phase (prepare, s1, s2) starts now (or ``at``); the one before it ends there."""
        if name not in PHASE_NAMES:
            return
        moment = at or self._wall_clock()
        with self._lock:
            if self._phases and self._phases[-1].ended_at is None:
                self._phases[-1].ended_at = moment
            if len(self._phases) < MAX_PHASES:
                self._phases.append(_Phase(name, moment))

    def count_phase(self, name: str, *, optimizer_steps: int, samples: int) -> None:
        """The optimizer steps and training samples the named (latest) phase has done so far."""
        with self._lock:
            for phase in reversed(self._phases):
                if phase.name == name:
                    phase.optimizer_steps = max(0, int(optimizer_steps))
                    phase.samples = max(0, int(samples))
                    return

    def start(self) -> None:
        """Take the first readings and start sampling in the background."""
        if self._cpu is not None:
            self._cpu.start()  # slow on first use (hardware probe), so the window opens after it
        self._started_at = self._wall_clock()
        self._start_t = self._clock()
        self._gpu.start()
        self._record()
        self._thread = threading.Thread(target=self._run, name="metering-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop_event.wait(self._sample_seconds):
            self._gpu.sample()
            self._record()

    def _record(self) -> None:
        cpu_ram_watts = self._cpu.watts_now() if self._cpu is not None else None
        cpu_ram_kwh = self._cpu.kwh_so_far() if self._cpu is not None else None
        sample = _Sample(
            t=self._clock() - self._start_t,
            gpu_watts=self._gpu.watts_now(),
            cpu_ram_kwh=sum(cpu_ram_kwh) if cpu_ram_kwh else None,
            cpu_ram_watts=cpu_ram_watts,
        )
        with self._lock:
            self._watts = sample.gpu_watts + (cpu_ram_watts or 0.0)
            self._samples.append(sample)

    def track_process(self, pid: int) -> None:
        """Attribute the job process tree's CPU time to this attempt (for a host-level meter)."""
        track = getattr(self._cpu, "track", None)
        if track is not None:
            track(pid)

    def watts_now(self) -> float:
        """Total measured power (GPU + CPU + RAM) at the last sample, in W."""
        with self._lock:
            return self._watts

    def gpu_watts(self) -> list[dict[str, Any]]:
        """Power per GPU at the last sample, for the worker heartbeat."""
        return self._gpu.watts_by_gpu()

    def kwh_so_far(self) -> float:
        """Energy of this attempt so far (GPU + CPU + RAM), in kWh."""
        total = self._gpu.kwh_so_far()
        cpu_ram = self._cpu.kwh_so_far() if self._cpu is not None else None
        return total + (sum(cpu_ram) if cpu_ram else 0.0)

    def stop(self) -> dict[str, Any]:
        """Stop sampling and return the attempt energy report; later calls return the same."""
        if self._report is not None:
            return self._report
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        gpus = self._gpu.stop()
        cpu_ram = (
            self._cpu.stop()
            if self._cpu is not None
            else CpuRamEnergy(ok=False, error="CPU/RAM metering disabled")
        )
        self._record()
        end_t = self._clock() - self._start_t
        ended_at = self._wall_clock()
        self._report = self._build_report(gpus, cpu_ram, end_t, ended_at)
        return self._report

    def _build_report(
        self, gpus: list[GpuEnergy], cpu_ram: CpuRamEnergy, duration_s: float, ended_at: datetime
    ) -> dict[str, Any]:
        started_at = self._started_at or ended_at
        errors = [f"{gpu.info.uuid}: {message}" for gpu in gpus for message in gpu.errors]
        if not cpu_ram.ok:
            errors.append(cpu_ram.error or "CPU/RAM measurement failed")
        with self._lock:
            samples = list(self._samples)
        cpu_ram_kwh = (cpu_ram.cpu_kwh or 0.0) + (cpu_ram.ram_kwh or 0.0)
        series = total_watts_series(samples, cpu_ram_kwh, duration_s)
        timeline = [
            {"t": rfc3339(started_at + timedelta(seconds=t)), "watts": round(watts, 3)}
            for t, watts in downsample(series, self._max_points)
        ]
        gpu_names = list(dict.fromkeys(gpu.info.name for gpu in gpus))
        measured_kwh = sum(gpu.kwh or 0.0 for gpu in gpus) + cpu_ram_kwh
        report: dict[str, Any] = {
            "attempt": self.attempt,
            "started_at": rfc3339(started_at),
            "ended_at": rfc3339(ended_at),
            "duration_s": round(duration_s, 3),
            "gpus": [gpu.to_json() for gpu in gpus],
            # None when any GPU's reads failed: the service estimates it and says so.
            "gpu_kwh": (
                None
                if any(gpu.kwh is None for gpu in gpus)
                else sum(gpu.kwh or 0.0 for gpu in gpus)
            ),
            # None, never 0, when CodeCarbon gave no measurement.
            "cpu_kwh": cpu_ram.cpu_kwh,
            "ram_kwh": cpu_ram.ram_kwh,
            "methods": {
                "gpu": (
                    METHOD_NONE
                    if not gpus
                    else "failed"
                    if any(gpu.kwh is None for gpu in gpus)
                    else "measured"
                ),
                "cpu": cpu_ram.cpu_method if cpu_ram.ok else METHOD_NONE,
                "ram": cpu_ram.ram_method if cpu_ram.ok else METHOD_NONE,
            },
            "hardware": {
                "gpu_model": ", ".join(gpu_names) or None,
                "driver": self._gpu.driver_version,
                "cpu_model": cpu_ram.cpu_model,
            },
            "timeline": timeline,
            "codecarbon": cpu_ram.to_json(),
            "measurement_ok": cpu_ram.ok and all(gpu.energy_ok for gpu in gpus),
            "errors": errors,
        }
        phases = self._phase_report(series, duration_s, started_at, ended_at, measured_kwh)
        if phases:
            report["phases"] = phases
        if self.audio_seconds is not None and self.audio_seconds >= 0:
            report["audio_seconds"] = round(float(self.audio_seconds), 3)
        return report

    def _phase_report(
        self,
        series: list[tuple[float, float]],
        duration_s: float,
        started_at: datetime,
        ended_at: datetime,
        measured_kwh: float,
    ) -> list[dict[str, Any]]:
        """The measured energy split between the phases by the power samples in each."""
        with self._lock:
            phases = list(self._phases)
        if not phases:
            return []
        whole = energy_between(series, duration_s, 0.0, duration_s)
        out = []
        for phase in phases:
            start = min(max(phase.started_at, started_at), ended_at)
            end = min(max(phase.ended_at or ended_at, start), ended_at)
            joules = energy_between(
                series,
                duration_s,
                (start - started_at).total_seconds(),
                (end - started_at).total_seconds(),
            )
            out.append(
                {
                    "name": phase.name,
                    "started_at": rfc3339(start),
                    "ended_at": rfc3339(end),
                    # The samples say how the energy spread over time; the meters say how much.
                    "kwh": measured_kwh * joules / whole if whole > 0 else 0.0,
                    "optimizer_steps": phase.optimizer_steps,
                    "samples": phase.samples,
                }
            )
        return out
