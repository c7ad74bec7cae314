"""MeteringSession: report shape and consistency, with the fake NVML and a real CodeCarbon."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.fake_nvml import FakeGpu, FakeNvml

from worker.metering.codecarbon_meter import CodeCarbonMeter
from worker.metering.nvml import Nvml, NvmlMeter
from worker.metering.session import MeteringSession, downsample, energy_between

UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444"


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def timeline_kwh(report: dict[str, Any]) -> float:
    """Integral of the timeline, each point held until the next and the last until ended_at."""
    times = [parse(p["t"]) for p in report["timeline"]] + [parse(report["ended_at"])]
    joules = sum(
        (times[i + 1] - times[i]).total_seconds() * point["watts"]
        for i, point in enumerate(report["timeline"])
    )
    return joules / 3.6e6


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def gpu_meter(watts: float) -> NvmlMeter:
    fake = FakeNvml([FakeGpu(UUID, power_mw=int(watts * 1000))], clock=time.monotonic)
    nvml = Nvml.open(fake)
    return NvmlMeter(nvml, nvml.visible_gpus(None))


def test_gpu_report_matches_its_timeline() -> None:
    session = MeteringSession(
        attempt=3, gpu_meter=gpu_meter(200.0), cpu_meter=None, sample_seconds=0.05
    )
    session.start()
    time.sleep(1.0)
    assert session.watts_now() == pytest.approx(200.0)
    assert session.kwh_so_far() > 0
    assert session.gpu_watts() == [{"uuid": UUID, "watts": 200.0}]
    report = session.stop()
    assert report["attempt"] == 3
    assert report["gpus"][0]["method"] == "nvml_energy_counter"
    assert report["gpu_kwh"] == pytest.approx(200.0 * report["duration_s"] / 3.6e6, rel=0.02)
    assert timeline_kwh(report) == pytest.approx(report["gpu_kwh"], rel=0.05)
    assert report["methods"] == {"gpu": "measured", "cpu": "none", "ram": "none"}
    # CPU/RAM metering was off, so the measurement is incomplete and says so.
    assert report["measurement_ok"] is False and report["errors"]
    assert report["cpu_kwh"] is None
    assert report["hardware"]["gpu_model"] == "NVIDIA H100 80GB HBM3"
    assert report["hardware"]["driver"] == "550.54.15"
    assert session.stop() is report


def test_total_report_with_real_codecarbon_is_consistent() -> None:
    session = MeteringSession(
        attempt=1,
        gpu_meter=gpu_meter(50.0),
        cpu_meter=CodeCarbonMeter(country_iso_code="ESP", measure_power_secs=1),
        sample_seconds=0.1,
    )
    session.start()
    busy(3.0)
    report = session.stop()
    assert report["measurement_ok"] is True, report["errors"]
    assert report["cpu_kwh"] > 0 and report["ram_kwh"] > 0
    total = report["gpu_kwh"] + report["cpu_kwh"] + report["ram_kwh"]
    assert timeline_kwh(report) == pytest.approx(total, rel=0.15)
    assert report["codecarbon"]["ok"] is True and report["codecarbon"]["kg_co2e"] > 0
    assert report["methods"]["cpu"] in {"measured", "estimated"}
    assert report["methods"]["ram"] == "estimated"


def test_cpu_only_worker_reports_no_gpu() -> None:
    nvml = Nvml(None, error="no driver")
    session = MeteringSession(
        attempt=1, gpu_meter=NvmlMeter(nvml, []), cpu_meter=None, sample_seconds=0.05
    )
    session.start()
    report = session.stop()
    assert report["gpus"] == [] and report["gpu_kwh"] == 0
    assert report["methods"]["gpu"] == "none"
    assert report["hardware"]["gpu_model"] is None


class NoneTracker:
    """A CodeCarbon double whose stop() returns None (a swallowed failure)."""

    def __init__(self, **_: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        return None


def test_failed_codecarbon_is_not_zero() -> None:
    session = MeteringSession(
        attempt=1,
        gpu_meter=gpu_meter(100.0),
        cpu_meter=CodeCarbonMeter(tracker_factory=NoneTracker),
        sample_seconds=0.05,
    )
    session.start()
    time.sleep(0.2)
    report = session.stop()
    assert report["measurement_ok"] is False
    assert report["cpu_kwh"] is None and report["ram_kwh"] is None
    assert report["codecarbon"]["ok"] is False
    assert any("no measurement" in error for error in report["errors"])


def test_timeline_is_downsampled_keeping_energy() -> None:
    points = [(float(i), 100.0 + (i % 7)) for i in range(5001)]
    reduced = downsample(points, 2000)
    assert len(reduced) <= 2000
    assert reduced[0][0] == 0.0
    original_mean = sum(w for _, w in points) / len(points)
    reduced_mean = sum(w for _, w in reduced) / len(reduced)
    assert reduced_mean == pytest.approx(original_mean, rel=0.01)
    assert downsample(points[:10], 2000) == points[:10]


def test_failed_gpu_power_reads_report_null_not_zero() -> None:
    # Audit example 2: no energy counter, every power read fails. Before: gpu_kwh 0.0,
    # labelled measured. Now: null, labelled failed, with the power limit for the estimate.
    fake = FakeNvml(
        [FakeGpu(UUID, energy_supported=False, power_fails=True, power_limit_mw=70_000)],
        clock=time.monotonic,
    )
    nvml = Nvml.open(fake)
    session = MeteringSession(
        attempt=1,
        gpu_meter=NvmlMeter(nvml, nvml.visible_gpus(None)),
        cpu_meter=None,
        sample_seconds=0.05,
    )
    session.start()
    time.sleep(0.2)
    report = session.stop()
    assert report["gpu_kwh"] is None
    assert report["methods"]["gpu"] == "failed"
    assert report["gpus"][0]["kwh"] is None
    assert report["gpus"][0]["power_limit_w"] == pytest.approx(70.0)
    assert report["measurement_ok"] is False


class SteppedClocks:
    """A monotonic and a wall clock that move only when told (fixed times, not now)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.start = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.t)


def test_energy_is_split_between_phases_by_time_at_a_fixed_clock() -> None:
    clocks = SteppedClocks()
    fake = FakeNvml([FakeGpu(UUID, power_mw=100_000)], clock=clocks.monotonic)
    nvml = Nvml.open(fake)
    session = MeteringSession(
        attempt=2,
        gpu_meter=NvmlMeter(nvml, nvml.visible_gpus(None), clock=clocks.monotonic),
        cpu_meter=None,
        sample_seconds=3600,
        clock=clocks.monotonic,
        wall_clock=clocks.wall,
    )
    session.start()
    session.start_phase("prepare")
    clocks.t = 10.0
    session.start_phase("s1")
    session.count_phase("s1", optimizer_steps=40, samples=160)
    session.start_phase("unknown")  # not a phase of the report: ignored
    session.audio_seconds = 12.5
    clocks.t = 40.0
    report = session.stop()
    total = report["gpu_kwh"]
    assert total == pytest.approx(100.0 * 40 / 3.6e6)
    prepare, s1 = report["phases"]
    assert prepare == {
        "name": "prepare",
        "started_at": "2026-12-01T05:00:00Z",
        "ended_at": "2026-12-01T05:00:10Z",
        "kwh": pytest.approx(total / 4),
        "optimizer_steps": 0,
        "samples": 0,
    }
    assert s1["name"] == "s1" and s1["ended_at"] == "2026-12-01T05:00:40Z"
    assert s1["kwh"] == pytest.approx(total * 3 / 4)
    assert (s1["optimizer_steps"], s1["samples"]) == (40, 160)
    assert report["audio_seconds"] == 12.5
    # The service's schema takes the report as the worker sends it.
    from scheduler.workers.schemas import EnergyReport

    assert EnergyReport.model_validate(report).as_dict()["phases"][1]["samples"] == 160


def test_energy_between_follows_the_power_samples() -> None:
    series = [(0.0, 100.0), (10.0, 300.0), (20.0, 0.0)]
    assert energy_between(series, 30.0, 0.0, 30.0) == pytest.approx(4000.0)
    assert energy_between(series, 30.0, 5.0, 15.0) == pytest.approx(500.0 + 1500.0)
    assert energy_between(series, 30.0, 20.0, 30.0) == 0.0
    assert energy_between(series, 30.0, 12.0, 12.0) == 0.0
