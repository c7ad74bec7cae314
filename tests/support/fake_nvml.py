"""A FAKE NVML for tests: mimics the few ``pynvml`` calls the meter makes, with no GPU or driver.

Tests set each fake GPU's counter (mJ) and power (mW) by hand to script deltas, resets and
unsupported counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    """Base class, as in pynvml."""


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's spelling
    """The device has no such counter."""


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's spelling
    """No NVIDIA driver library on this host."""


class NVMLError_NotFound(NVMLError):  # noqa: N801 - pynvml's spelling
    """No device with that UUID."""


@dataclass
class FakeGpu:
    """One fake physical GPU, with optional fake MIG slices."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    memory_mib: int = 81559
    energy_mj: int = 0
    power_mw: int = 100_000
    energy_supported: bool = True
    power_fails: bool = False
    power_limit_mw: int | None = None
    # Live readings for heartbeat telemetry; None: this GPU does not support the query.
    util_pct: int | None = None
    temperature_c: int | None = None
    memory_used_mib: int = 0
    mig_uuids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _MigHandle:
    uuid: str
    parent: FakeGpu


class FakeNvml:
    """A fake ``pynvml`` module over a list of fake GPUs."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_NotFound = NVMLError_NotFound

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        driver: str = "550.54.15",
        library_missing: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.gpus = gpus
        self.driver = driver
        self.library_missing = library_missing
        self.initialised = False
        # With a clock, counters also grow by power x elapsed time, like a busy real GPU.
        self._clock = clock
        self._t0 = clock() if clock is not None else 0.0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's API names
        if self.library_missing:
            raise NVMLError_LibraryNotFound("libnvidia-ml.so.1 not found")
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return self.driver

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:  # noqa: N802
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu | _MigHandle:  # noqa: N802
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
            if uuid in gpu.mig_uuids:
                return _MigHandle(uuid, gpu)
        raise NVMLError_NotFound(uuid)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: _MigHandle) -> FakeGpu:  # noqa: N802
        return handle.parent

    def nvmlDeviceGetIndex(self, handle: FakeGpu) -> int:  # noqa: N802
        return self.gpus.index(handle)

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:  # noqa: N802
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> bytes:  # noqa: N802
        return handle.name.encode()  # old pynvml releases return bytes

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> SimpleNamespace:  # noqa: N802
        total, used = handle.memory_mib * 1024 * 1024, handle.memory_used_mib * 1024 * 1024
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> SimpleNamespace:  # noqa: N802
        if handle.util_pct is None:
            raise NVMLError_NotSupported("not supported")
        return SimpleNamespace(gpu=handle.util_pct, memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:  # noqa: N802
        if handle.temperature_c is None:
            raise NVMLError_NotSupported("not supported")
        return handle.temperature_c

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:  # noqa: N802
        if not handle.energy_supported:
            raise NVMLError_NotSupported("not supported")
        if self._clock is None:
            return handle.energy_mj
        return handle.energy_mj + int(handle.power_mw * (self._clock() - self._t0))

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:  # noqa: N802
        if handle.power_fails:
            raise NVMLError("Unknown Error")
        return handle.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:  # noqa: N802
        if handle.power_limit_mw is None:
            raise NVMLError_NotSupported("not supported")
        return handle.power_limit_mw


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds
