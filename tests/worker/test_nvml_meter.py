"""NVML metering against the fake NVML in fake_nvml.py (no GPU here)."""

from __future__ import annotations

import pytest
from support.fake_nvml import FakeClock, FakeGpu, FakeNvml

from worker.metering.nvml import (
    METHOD_COUNTER,
    METHOD_POWER,
    MJ_PER_KWH,
    CounterTrack,
    Nvml,
    NvmlMeter,
    PowerIntegral,
    parse_visible_devices,
)

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
UUID_C = "GPU-bbbbcccc-1111-2222-3333-444444444444"


def three_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(UUID_A, energy_mj=5_000_000),
            FakeGpu(UUID_B, name="NVIDIA A100", memory_mib=40960, mig_uuids=["MIG-1234-5678"]),
            FakeGpu(UUID_C),
        ]
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("0,2", ["0", "2"]),
        (" 1 , GPU-abc ", ["1", "GPU-abc"]),
        ("0,-1,2", ["0"]),
        ("0,,2", ["0"]),
    ],
)
def test_parse_visible_devices(value: str | None, expected: list[str] | None) -> None:
    assert parse_visible_devices(value) == expected


def test_counter_delta_between_start_and_stop() -> None:
    fake = three_gpus()
    nvml = Nvml.open(fake)
    clock = FakeClock()
    meter = NvmlMeter(nvml, nvml.visible_gpus("0"), clock=clock)
    meter.start()
    fake.gpus[0].energy_mj += 3_600_000  # 3.6 kJ = 0.001 kWh
    clock.advance(10)
    [energy] = meter.stop()
    assert energy.method == METHOD_COUNTER
    assert energy.kwh == pytest.approx(0.001)
    assert energy.info.uuid == UUID_A


def test_counter_reset_starts_a_new_segment() -> None:
    fake = three_gpus()
    nvml = Nvml.open(fake)
    meter = NvmlMeter(nvml, nvml.visible_gpus("0"), clock=FakeClock())
    gpu = fake.gpus[0]
    meter.start()  # counter at 5,000,000 mJ
    gpu.energy_mj = 6_000_000
    meter.sample()  # +1,000,000
    gpu.energy_mj = 300_000  # driver reload: counter restarted at zero
    meter.sample()  # +300,000 since the reload
    gpu.energy_mj = 800_000
    [energy] = meter.stop()  # +500,000
    assert energy.counter_resets == 1
    assert energy.kwh * MJ_PER_KWH == pytest.approx(1_800_000)


def test_power_integration_when_counter_not_supported() -> None:
    fake = three_gpus()
    fake.gpus[1].energy_supported = False
    nvml = Nvml.open(fake)
    clock = FakeClock()
    meter = NvmlMeter(nvml, nvml.visible_gpus("1"), clock=clock)
    fake.gpus[1].power_mw = 100_000
    meter.start()
    for watts in (200, 300):
        clock.advance(1.0)
        fake.gpus[1].power_mw = watts * 1000
        meter.sample()
    [energy] = meter.stop()  # stop samples at t=2 s again with 300 W
    # trapezoids: (100+200)/2 + (200+300)/2 = 400 J
    assert energy.method == METHOD_POWER
    assert energy.kwh == pytest.approx(400 / 3.6e6)
    assert meter.watts_now() == pytest.approx(300)


def test_power_integral_ignores_non_increasing_time() -> None:
    integral = PowerIntegral()
    integral.add(0.0, 100.0)
    integral.add(0.0, 500.0)
    integral.add(2.0, 100.0)
    assert integral.joules == pytest.approx(600.0)


def test_counter_track_without_reset_is_plain_difference() -> None:
    track = CounterTrack(100)
    for reading in (150, 150, 400):
        track.update(reading)
    assert (track.total_mj, track.resets) == (300, 0)


def test_visible_devices_by_index_uuid_prefix_and_mig() -> None:
    nvml = Nvml.open(three_gpus())
    assert [g.uuid for g, _ in nvml.visible_gpus(None)] == [UUID_A, UUID_B, UUID_C]
    assert [g.uuid for g, _ in nvml.visible_gpus("2,0")] == [UUID_C, UUID_A]
    # Unique prefix, with and without the GPU- prefix.
    assert [g.uuid for g, _ in nvml.visible_gpus("GPU-aaaa")] == [UUID_A]
    assert [g.uuid for g, _ in nvml.visible_gpus("bbbbcc")] == [UUID_C]
    # An ambiguous prefix is invalid and, as in CUDA, hides what follows.
    assert [g.uuid for g, _ in nvml.visible_gpus("0,GPU-bbbb,2")] == [UUID_A]
    # MIG slices map to the parent GPU; both MIG forms, deduplicated.
    mig = nvml.visible_gpus(f"MIG-1234-5678,MIG-{UUID_B}/1/0")
    assert [g.uuid for g, _ in mig] == [UUID_B]
    assert nvml.visible_gpus("7") == []
    assert nvml.visible_gpus("") == []


def test_gpu_description() -> None:
    nvml = Nvml.open(three_gpus())
    [(info, _)] = nvml.visible_gpus("1")
    assert info.to_json() == {
        "index": 1,
        "uuid": UUID_B,
        "name": "NVIDIA A100",
        "memory_mib": 40960,
    }
    assert nvml.driver_version == "550.54.15"


def test_no_driver_means_no_gpus() -> None:
    nvml = Nvml.open(FakeNvml([FakeGpu(UUID_A)], library_missing=True))
    assert not nvml.available
    assert "LibraryNotFound" in (nvml.error or "")
    meter = NvmlMeter.for_visible_devices(nvml, None)
    meter.start()
    assert meter.gpus == [] and meter.stop() == [] and meter.kwh_so_far() == 0.0


def test_missing_package_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.metering.nvml as nvml_module

    monkeypatch.setattr(nvml_module, "load_pynvml", lambda: None)
    nvml = Nvml.open()
    assert not nvml.available and nvml.all_gpus() == []


def test_heartbeat_watts_and_running_total() -> None:
    fake = three_gpus()
    nvml = Nvml.open(fake)
    meter = NvmlMeter(nvml, nvml.visible_gpus("0,1"), clock=FakeClock())
    fake.gpus[0].power_mw = 250_500
    fake.gpus[1].power_mw = 100_000
    meter.start()
    fake.gpus[0].energy_mj += 1_000_000
    fake.gpus[1].energy_mj += 2_600_000
    meter.sample()
    assert meter.watts_by_gpu() == [
        {"uuid": UUID_A, "watts": 250.5},
        {"uuid": UUID_B, "watts": 100.0},
    ]
    assert meter.kwh_so_far() == pytest.approx(0.001)
