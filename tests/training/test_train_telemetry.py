"""GPU telemetry through NVML, read here from a fake NVML module (no GPU on the test host)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from worker.training.telemetry import GpuProbe


class FakeNvml:
    """Fake of the few pynvml calls the probe makes; the energy counter grows per reading."""

    def __init__(self, energy_supported: bool = True) -> None:
        self.energy_mj = 1_000_000
        self.energy_supported = energy_supported
        self.handles: list[int] = []

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        self.handles.append(index)
        return f"gpu{index}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        return 251_500  # milliwatts

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:  # noqa: N802
        return 66

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:  # noqa: N802
        if not self.energy_supported:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        self.energy_mj += 500
        return self.energy_mj


def test_probe_reports_nvml_readings_for_its_gpu() -> None:
    nvml = FakeNvml()
    probe = GpuProbe(torch.device("cuda", 1), nvml=nvml)
    sample = probe.sample()
    assert nvml.handles == [1]
    assert sample["gpu_util_pct"] == 87
    assert sample["power_w"] == 251.5
    assert sample["temperature_c"] == 66
    assert probe.energy_mj() > sample["energy_mj"]


def test_probe_skips_an_unsupported_energy_counter() -> None:
    probe = GpuProbe(torch.device("cuda", 0), nvml=FakeNvml(energy_supported=False))
    assert probe.energy_mj() is None
    assert "energy_mj" not in probe.sample() and "power_w" in probe.sample()


def test_probe_is_silent_on_cpu() -> None:
    nvml = FakeNvml()
    probe = GpuProbe(torch.device("cpu"), nvml=nvml)
    assert probe.sample() == {} and probe.energy_mj() is None and nvml.handles == []
