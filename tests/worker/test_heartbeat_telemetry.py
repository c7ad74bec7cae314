"""Heartbeat telemetry: every rank with its GPU's NVML readings (a labelled fake NVML), finite
numbers only, non-finite figures named."""

from __future__ import annotations

import json
import math
from typing import Any

from support.fake_nvml import FakeGpu, FakeNvml

from worker.metering.nvml import Nvml
from worker.telemetry import heartbeat_telemetry


def ranks(count: int) -> list[dict[str, Any]]:
    return [
        {
            "rank": r,
            "index": r,
            "torch_allocated_mib": 100.0 + r,
            "torch_reserved_mib": 200.0,
            "torch_peak_mib": 150.0,
            "util_pct": None,
            "temp_c": None,
            "power_w": None,
        }
        for r in range(count)
    ]


def raw(**overrides: Any) -> dict[str, Any]:
    return {
        "step_time_s": 0.5,
        "samples_per_s": 8.0,
        "loss": 2.5,
        "grad_norm": 1.25,
        "kl": None,
        "mel": None,
        "ranks": ranks(2),
        **overrides,
    }


def test_every_rank_gets_its_own_gpus_readings() -> None:
    # The fake NVML stands in for two GPUs: the job's ranks run on NVML indices 1 and 0.
    fake = FakeNvml(
        [
            FakeGpu("GPU-0", util_pct=35, temperature_c=61, memory_used_mib=2048, power_mw=150_000),
            FakeGpu(
                "GPU-1", util_pct=97, temperature_c=74, memory_used_mib=30000, power_mw=310_000
            ),
        ]
    )
    nvml = Nvml.open(fake)
    every = nvml.all_gpus()
    job_gpus = [every[1], every[0]]  # rank 0 on GPU 1, rank 1 on GPU 0
    telemetry = heartbeat_telemetry(raw(), job_gpus, nvml.module)
    assert telemetry is not None
    assert {k: telemetry[k] for k in ("step_time_s", "samples_per_s", "loss", "grad_norm")} == {
        "step_time_s": 0.5,
        "samples_per_s": 8.0,
        "loss": 2.5,
        "grad_norm": 1.25,
    }
    assert telemetry["kl"] is None and telemetry["mel"] is None and "nonfinite" not in telemetry
    first, second = telemetry["gpus"]
    assert first == {
        "rank": 0,
        "index": 1,
        "util_pct": 97.0,
        "mem_used_mib": 30000.0,
        "mem_total_mib": 81559.0,
        "temp_c": 74.0,
        "power_w": 310.0,
        "torch_allocated_mib": 100.0,
        "torch_reserved_mib": 200.0,
        "torch_peak_mib": 150.0,
    }
    assert (second["rank"], second["index"], second["util_pct"]) == (1, 0, 35.0)
    json.dumps(telemetry, allow_nan=False)  # valid JSON as sent


def test_a_gpu_without_a_reading_sends_null() -> None:
    nvml = Nvml.open(FakeNvml([FakeGpu("GPU-0", power_fails=True)]))
    telemetry = heartbeat_telemetry(raw(ranks=ranks(1)), nvml.all_gpus(), nvml.module)
    assert telemetry is not None
    [gpu] = telemetry["gpus"]
    assert gpu["util_pct"] is None and gpu["temp_c"] is None and gpu["power_w"] is None
    assert gpu["mem_total_mib"] == 81559.0


def test_non_finite_figures_are_null_and_named() -> None:
    telemetry = heartbeat_telemetry(
        raw(
            grad_norm=math.inf,
            loss=math.nan,
            kl=-0.5,
            ranks=[{**ranks(1)[0], "torch_peak_mib": math.nan}],
        ),
        [],
        None,
    )
    assert telemetry is not None
    assert telemetry["grad_norm"] is None and telemetry["loss"] is None
    assert telemetry["nonfinite"] == ["loss", "grad_norm"]
    assert telemetry["kl"] == -0.5  # negative is a figure the service warns about, not dropped
    assert telemetry["gpus"][0]["torch_peak_mib"] == 0.0
    json.dumps(telemetry, allow_nan=False)


def test_without_nvml_a_rank_keeps_its_own_readings_and_junk_is_dropped() -> None:
    own = {**ranks(1)[0], "util_pct": 40, "temp_c": "hot", "power_w": True}
    telemetry = heartbeat_telemetry(
        raw(ranks=[own, "junk"] + ranks(100)[1:], samples_per_s="fast"), [], None
    )
    assert telemetry is not None
    assert telemetry["samples_per_s"] is None
    gpu = telemetry["gpus"][0]
    assert (gpu["util_pct"], gpu["temp_c"], gpu["power_w"]) == (40.0, None, None)
    assert len(telemetry["gpus"]) <= 64
    assert heartbeat_telemetry("not a dict", [], None) is None
