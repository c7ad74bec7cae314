"""GPU energy from NVML: the total-energy counter per GPU UUID, power samples and fallbacks.

The NVML module (``pynvml`` from ``nvidia-ml-py``) is passed in, so tests can hand over a fake.
NVML ignores ``CUDA_VISIBLE_DEVICES``; this module maps its entries to physical GPUs by UUID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

MJ_PER_KWH = 3.6e9
J_PER_KWH = 3.6e6

METHOD_COUNTER = "nvml_energy_counter"
METHOD_POWER = "nvml_power_integration"
METHOD_NONE = "none"


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU as NVML names it."""

    index: int
    uuid: str
    name: str
    memory_mib: int

    def to_json(self) -> dict[str, Any]:
        """The GPU as the register call describes it."""
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_mib": self.memory_mib,
        }


def load_pynvml() -> ModuleType | None:
    """Import ``pynvml``, or None when the package is missing."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def parse_visible_devices(value: str | None) -> list[str] | None:
    """Entries of a ``CUDA_VISIBLE_DEVICES`` value; None means every GPU is visible."""
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        # CUDA stops at the first invalid entry and hides everything after it.
        if not entry or (entry.lstrip("-").isdigit() and int(entry) < 0):
            break
        entries.append(entry)
    return entries


def _text(value: str | bytes) -> str:
    # Older pynvml releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def _error_class(nvml: Any, name: str) -> type[BaseException]:
    error: type[BaseException] | None = getattr(nvml, name, None)
    if not error:
        error = getattr(nvml, "NVMLError", Exception)
    return error


class Nvml:
    """An initialised NVML library, or a record of why there is none."""

    def __init__(self, module: Any | None, *, error: str | None = None) -> None:
        # pynvml has no types (and tests pass a fake), so the module is Any; None: not loaded.
        self.module: Any = module
        self.error = error
        self.driver_version: str | None = None
        if module is not None:
            try:
                self.driver_version = _text(module.nvmlSystemGetDriverVersion())
            except Exception:  # a missing driver version is cosmetic
                self.driver_version = None

    @property
    def available(self) -> bool:
        """True when NVML initialised and GPUs can be queried."""
        return self.module is not None

    @classmethod
    def open(cls, module: Any | None = None, *, load: bool = True) -> Nvml:
        """Initialise NVML from ``module`` (default: import pynvml); never raises."""
        if module is None and load:
            module = load_pynvml()
        if module is None:
            return cls(None, error="pynvml is not installed")
        try:
            module.nvmlInit()
        except Exception as exc:  # LibraryNotFound, DriverNotLoaded, ...: no usable GPU
            return cls(None, error=f"NVML unavailable: {type(exc).__name__}: {exc}")
        return cls(module)

    def shutdown(self) -> None:
        """Release NVML; safe to call when it never initialised."""
        if self.module is not None:
            try:
                self.module.nvmlShutdown()
            except Exception:
                pass

    def all_gpus(self) -> list[tuple[GpuInfo, Any]]:
        """Every physical GPU, in NVML (PCI bus) order."""
        if self.module is None:
            return []
        nvml = self.module
        return [
            self._describe(nvml.nvmlDeviceGetHandleByIndex(i))
            for i in range(nvml.nvmlDeviceGetCount())
        ]

    def _describe(self, handle: Any) -> tuple[GpuInfo, Any]:
        nvml = self.module
        info = GpuInfo(
            index=int(nvml.nvmlDeviceGetIndex(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
        )
        return info, handle

    def visible_gpus(self, visible: str | None) -> list[tuple[GpuInfo, Any]]:
        """The physical GPUs a process with ``CUDA_VISIBLE_DEVICES=visible`` sees, deduplicated."""
        every = self.all_gpus()
        entries = parse_visible_devices(visible)
        if entries is None:
            return every
        chosen: list[tuple[GpuInfo, Any]] = []
        for entry in entries:
            found = self._resolve_entry(entry, every)
            if found is None:
                break  # as CUDA does: an unknown entry ends the list
            if all(found[0].uuid != info.uuid for info, _ in chosen):
                chosen.append(found)
        return chosen

    def _resolve_entry(
        self, entry: str, every: list[tuple[GpuInfo, Any]]
    ) -> tuple[GpuInfo, Any] | None:
        if entry.isdigit():
            # Indices agree with NVML only under CUDA_DEVICE_ORDER=PCI_BUS_ID (the agent sets it).
            position = int(entry)
            return every[position] if position < len(every) else None
        if entry.startswith("MIG-"):
            return self._resolve_mig(entry, every)
        uuid_prefix = entry if entry.startswith("GPU-") else f"GPU-{entry}"
        matches = [pair for pair in every if pair[0].uuid.startswith(uuid_prefix)]
        return matches[0] if len(matches) == 1 else None

    def _resolve_mig(
        self, entry: str, every: list[tuple[GpuInfo, Any]]
    ) -> tuple[GpuInfo, Any] | None:
        # Energy and power exist only for the physical GPU, so a MIG slice maps to its parent.
        if entry.startswith("MIG-GPU-"):  # legacy form MIG-GPU-<uuid>/<gi>/<ci>
            parent_uuid = entry[len("MIG-") :].split("/")[0]
            return next((pair for pair in every if pair[0].uuid == parent_uuid), None)
        nvml = self.module
        try:
            mig_handle = nvml.nvmlDeviceGetHandleByUUID(entry)
            parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig_handle)
            parent_uuid = _text(nvml.nvmlDeviceGetUUID(parent))
        except Exception:
            return None
        return next((pair for pair in every if pair[0].uuid == parent_uuid), None)


class CounterTrack:
    """Energy from a cumulative mJ counter, summed over segments split by counter resets."""

    def __init__(self, first_mj: int) -> None:
        self._baseline = first_mj
        self._last = first_mj
        self._closed_mj = 0
        self.resets = 0

    def update(self, reading_mj: int) -> None:
        """Take a new counter reading."""
        if reading_mj < self._last:
            # A driver reload restarts the counter at zero after our previous read, so the
            # new segment counts from zero; only the stretch before the reload is lost.
            self._closed_mj += self._last - self._baseline
            self._baseline = 0
            self.resets += 1
        self._last = reading_mj

    @property
    def total_mj(self) -> int:
        """Energy counted so far, in mJ."""
        return self._closed_mj + self._last - self._baseline


class PowerIntegral:
    """Trapezoid integral of power samples, the fallback when the energy counter is missing."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self.joules = 0.0

    def add(self, t: float, watts: float) -> None:
        """Add a power sample taken at monotonic time ``t`` (seconds)."""
        if self._last is not None and t > self._last[0]:
            previous_t, previous_w = self._last
            self.joules += (t - previous_t) * (previous_w + watts) / 2.0
        self._last = (t, watts)


@dataclass
class GpuEnergy:
    """The energy one GPU used during a metering window."""

    info: GpuInfo
    # None when a read the figure depends on failed: a failed measurement is never 0.
    kwh: float | None
    method: str
    counter_resets: int = 0
    errors: list[str] = field(default_factory=list)
    # The enforced power limit (W), the service's estimate when the energy is unknown.
    power_limit_w: float | None = None

    @property
    def energy_ok(self) -> bool:
        """False when a read the energy figure depends on failed during the window."""
        source = "energy counter" if self.method == METHOD_COUNTER else "power"
        return not any(message.startswith(source) for message in self.errors)

    def to_json(self) -> dict[str, Any]:
        """The GPU entry of the attempt energy report."""
        return {
            "index": self.info.index,
            "uuid": self.info.uuid,
            "name": self.info.name,
            "kwh": self.kwh,
            "method": self.method,
            "counter_resets": self.counter_resets,
            "power_limit_w": self.power_limit_w,
        }


class _GpuTrack:
    def __init__(self, info: GpuInfo, handle: Any) -> None:
        self.info = info
        self.handle = handle
        self.counter: CounterTrack | None = None
        self.power = PowerIntegral()
        self.watts: float | None = None
        self.errors: list[str] = []
        self.power_limit_w: float | None = None

    @property
    def method(self) -> str:
        return METHOD_COUNTER if self.counter is not None else METHOD_POWER

    def kwh(self) -> float:
        if self.counter is not None:
            return self.counter.total_mj / MJ_PER_KWH
        return self.power.joules / J_PER_KWH


class NvmlMeter:
    """Reads the energy counter and power of a fixed set of GPUs; thread-safe."""

    def __init__(
        self,
        nvml: Nvml,
        gpus: list[tuple[GpuInfo, Any]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = nvml
        self._tracks = [_GpuTrack(info, handle) for info, handle in gpus]
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def for_visible_devices(cls, nvml: Nvml, visible: str | None) -> NvmlMeter:
        """A meter over the GPUs that ``CUDA_VISIBLE_DEVICES=visible`` exposes."""
        return cls(nvml, nvml.visible_gpus(visible) if nvml.available else [])

    @property
    def gpus(self) -> list[GpuInfo]:
        """The metered GPUs."""
        return [track.info for track in self._tracks]

    @property
    def driver_version(self) -> str | None:
        """The NVIDIA driver version, when NVML is present."""
        return self._nvml.driver_version

    def start(self) -> None:
        """Take the first counter reading of each GPU and a first power sample."""
        nvml = self._nvml.module
        not_supported = _error_class(nvml, "NVMLError_NotSupported")
        with self._lock:
            for track in self._tracks:
                track.power_limit_w = _power_limit_w(nvml, track.handle)
                try:
                    first = int(nvml.nvmlDeviceGetTotalEnergyConsumption(track.handle))
                    track.counter = CounterTrack(first)
                except not_supported:
                    track.counter = None  # pre-Volta, vGPU, Jetson: integrate power instead
                except Exception as exc:
                    track.counter = None
                    track.errors.append(f"energy counter: {type(exc).__name__}: {exc}")
        self.sample()

    def sample(self) -> dict[str, float | None]:
        """Read power (and the counter) of every GPU now; watts by UUID, None where unreadable."""
        nvml = self._nvml.module
        now = self._clock()
        watts: dict[str, float | None] = {}
        with self._lock:
            for track in self._tracks:
                try:
                    track.watts = nvml.nvmlDeviceGetPowerUsage(track.handle) / 1000.0
                    track.power.add(now, track.watts)
                except Exception as exc:
                    track.watts = None
                    self._note(track, f"power: {type(exc).__name__}: {exc}")
                if track.counter is not None:
                    try:
                        track.counter.update(
                            int(nvml.nvmlDeviceGetTotalEnergyConsumption(track.handle))
                        )
                    except Exception as exc:
                        self._note(track, f"energy counter: {type(exc).__name__}: {exc}")
                watts[track.info.uuid] = track.watts
        return watts

    @staticmethod
    def _note(track: _GpuTrack, message: str) -> None:
        # A failing read repeats every second; keep the distinct messages only.
        if message not in track.errors and len(track.errors) < 20:
            track.errors.append(message)

    def watts_now(self) -> float:
        """Total GPU power at the last sample, in W."""
        with self._lock:
            return sum(track.watts or 0.0 for track in self._tracks)

    def watts_by_gpu(self) -> list[dict[str, Any]]:
        """Last power sample per GPU, as the worker heartbeat sends it."""
        with self._lock:
            return [
                {"uuid": track.info.uuid, "watts": track.watts}
                for track in self._tracks
                if track.watts is not None
            ]

    def kwh_so_far(self) -> float:
        """GPU energy since ``start()``, in kWh."""
        with self._lock:
            return sum(track.kwh() for track in self._tracks)

    def stop(self) -> list[GpuEnergy]:
        """Take the final reading and return the energy per GPU."""
        self.sample()
        with self._lock:
            energies = [
                GpuEnergy(
                    info=track.info,
                    kwh=track.kwh(),
                    method=track.method,
                    counter_resets=track.counter.resets if track.counter else 0,
                    errors=list(track.errors),
                    power_limit_w=track.power_limit_w,
                )
                for track in self._tracks
            ]
        for energy in energies:
            if not energy.energy_ok:
                energy.kwh = None
        return energies


def _power_limit_w(nvml: Any, handle: Any) -> float | None:
    """The GPU's enforced power limit in W, or None where NVML cannot tell."""
    for name in ("nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit"):
        read = getattr(nvml, name, None)
        if read is None:
            continue
        try:
            milliwatts = float(read(handle))
        except Exception:  # noqa: BLE001 - unsupported on some GPUs: try the next, or none
            continue
        if milliwatts > 0:
            return milliwatts / 1000.0
    return None
