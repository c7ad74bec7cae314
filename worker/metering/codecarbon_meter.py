"""CPU and RAM energy of a job from CodeCarbon's offline tracker (GPU energy comes from NVML).

CodeCarbon swallows its own exceptions: ``stop()`` returning None means there is no
measurement, and is reported as a failure, never as zero energy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# CPU modes in which CodeCarbon reads an energy counter rather than modelling TDP x load.
MEASURED_CPU_MODES = {"intel_rapl", "intel_power_gadget", "windows_emi", "apple_powermetrics"}
CPU_MODE_LABELS = {
    "intel_rapl": "RAPL",
    "intel_power_gadget": "IntelPowerGadget",
    "windows_emi": "WindowsEMI",
    "apple_powermetrics": "powermetrics",
}
DEFAULT_COUNTRY = "USA"


class Tracker(Protocol):
    """The part of CodeCarbon's tracker this module uses."""

    def start(self) -> None: ...

    def stop(self) -> float | None: ...


TrackerFactory = Callable[..., Tracker]


@dataclass
class CpuRamEnergy:
    """CodeCarbon's figures for one metering window; ``ok`` False means no measurement."""

    ok: bool
    cpu_kwh: float | None = None
    ram_kwh: float | None = None
    gpu_kwh: float | None = None
    kg_co2e: float | None = None
    cpu_method: str = "estimated"
    ram_method: str = "estimated"
    cpu_tracking: str | None = None
    cpu_model: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``codecarbon`` block of the attempt energy report."""
        if not self.ok:
            return {"ok": False, "error": self.error}
        return {
            "ok": True,
            "kg_co2e": self.kg_co2e,
            "cpu_kwh": self.cpu_kwh,
            "ram_kwh": self.ram_kwh,
            "gpu_kwh": self.gpu_kwh,
            "cpu_method": self.cpu_tracking,
        }


def country_for_zone(zone: str | None, default: str = DEFAULT_COUNTRY) -> str:
    """ISO 3166 alpha-3 code for a grid zone such as ``ES``, ``DK-DK1`` or ``US-CAL-CISO``."""
    if not zone:
        return default
    head = zone.split("-")[0].strip().upper()
    if len(head) == 3 and head.isalpha():
        return head
    try:
        import pycountry  # a CodeCarbon dependency

        country = pycountry.countries.get(alpha_2=head)
    except (ImportError, KeyError, LookupError):
        country = None
    # The UK's grid zone is GB, which is also its ISO code; unknown zones fall back.
    return country.alpha_3 if country is not None else default


def offline_tracker(*, country_iso_code: str, tracking_mode: str, measure_power_secs: float) -> Any:
    """A quiet, file-less, lock-free CodeCarbon offline tracker."""
    from codecarbon import OfflineEmissionsTracker

    # CodeCarbon configures its logger on import; quieten it afterwards, before the tracker logs.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    return OfflineEmissionsTracker(
        country_iso_code=country_iso_code,
        project_name="greenwindow",
        measure_power_secs=measure_power_secs,
        tracking_mode=tracking_mode,
        # output_methods=[] is 3.3's spelling of save_to_file=False (that flag is deprecated).
        output_methods=[],
        # No /tmp/.codecarbon.lock: one tracker per job, and the lock's SIGTERM handler
        # would fight the agent's own.
        allow_multiple_runs=True,
        log_level="error",
    )


def _cpu_hardware(tracker: Any) -> Any | None:
    return next((h for h in getattr(tracker, "_hardware", []) if type(h).__name__ == "CPU"), None)


class CodeCarbonMeter:
    """Runs one CodeCarbon tracker over a job and turns its result into CPU/RAM figures."""

    def __init__(
        self,
        *,
        country_iso_code: str = DEFAULT_COUNTRY,
        tracking_mode: str = "machine",
        measure_power_secs: float = 1.0,
        tracker_factory: TrackerFactory = offline_tracker,
    ) -> None:
        self._factory = tracker_factory
        self._options = {
            "country_iso_code": country_iso_code,
            "tracking_mode": tracking_mode,
            "measure_power_secs": measure_power_secs,
        }
        # CodeCarbon's tracker, read through its private fields (so Any); None until it
        # started, or when it failed to (the readers then fall back on AttributeError).
        self._tracker: Any = None
        self._error: str | None = None

    def start(self) -> None:
        """Build and start the tracker; a failure is kept and reported at ``stop()``."""
        try:
            self._tracker = self._factory(**self._options)
            self._tracker.start()
        except Exception as exc:
            self._tracker = None
            self._error = f"CodeCarbon failed to start: {type(exc).__name__}: {exc}"
            return
        self._drop_gpu_tracking()

    def _drop_gpu_tracking(self) -> None:
        # NVML already meters the GPUs; CodeCarbon reading them too would only add NVML
        # traffic. Its hardware list is private, hence the guard.
        hardware = getattr(self._tracker, "_hardware", None)
        if isinstance(hardware, list):
            self._tracker._hardware = [h for h in hardware if type(h).__name__ != "GPU"]

    @property
    def cpu_method(self) -> str:
        """measured where CodeCarbon reads a CPU energy counter (RAPL...), else estimated."""
        return "measured" if self._cpu_mode() in MEASURED_CPU_MODES else "estimated"

    def _cpu_mode(self) -> str | None:
        cpu = _cpu_hardware(self._tracker)
        return getattr(cpu, "_mode", None) if cpu is not None else None

    def kwh_so_far(self) -> tuple[float, float] | None:
        """CPU and RAM kWh measured so far, or None when unknown."""
        try:
            return (
                float(self._tracker._total_cpu_energy.kWh),
                float(self._tracker._total_ram_energy.kWh),
            )
        except AttributeError:
            return None

    def watts_now(self) -> float | None:
        """CPU plus RAM power at CodeCarbon's last measurement, or None when unknown."""
        try:
            return float(self._tracker._cpu_power.W) + float(self._tracker._ram_power.W)
        except AttributeError:
            return None

    def stop(self) -> CpuRamEnergy:
        """Stop the tracker and return its figures, or a failed result with the reason."""
        if self._tracker is None:
            return CpuRamEnergy(ok=False, error=self._error or "CodeCarbon was not started")
        try:
            kg = self._tracker.stop()
        except Exception as exc:
            kg = None
            self._error = f"CodeCarbon stop failed: {type(exc).__name__}: {exc}"
        data = getattr(self._tracker, "final_emissions_data", None)
        if kg is None or data is None:
            return CpuRamEnergy(
                ok=False, error=self._error or "CodeCarbon stop() returned no measurement"
            )
        mode = self._cpu_mode()
        return CpuRamEnergy(
            ok=True,
            cpu_kwh=float(data.cpu_energy),
            ram_kwh=float(data.ram_energy),
            gpu_kwh=float(data.gpu_energy),
            kg_co2e=float(kg),
            cpu_method="measured" if mode in MEASURED_CPU_MODES else "estimated",
            ram_method="estimated",  # CodeCarbon models RAM power from its size
            cpu_tracking=CPU_MODE_LABELS.get(mode or "", mode),
            cpu_model=getattr(data, "cpu_model", None),
        )
