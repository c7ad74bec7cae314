"""`greenwindow watch` shows the latest telemetry (step time, loss, gradient norm, every
GPU's utilisation, memory and temperature) and the health warnings."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support.cli_driver import Cli
from support.helpers import FakeClock
from support.telemetry_helpers import beat, gpu, running_job, telemetry

from scheduler.client import render


def test_progress_line_shows_telemetry_and_warnings() -> None:
    job = {
        "state": "running",
        "progress": {"stage": "s2", "step": 5, "total_steps": 10},
        "telemetry": telemetry(
            [gpu(0, 0, util_pct=93.0, mem_used_mib=20_480.0, mem_total_mib=81_920.0)],
            loss=2.25,
            grad_norm=0.75,
            kl=0.125,
            nonfinite=["mel"],
        ),
        "health_warnings": [{"code": "kl_negative", "message": "KL divergence is negative"}],
    }
    line = render.progress_line(job, {"watts": None, "kwh_so_far": None})
    for text in (
        "step 0.42 s",
        "loss 2.25",
        "grad 0.75",
        "kl 0.125",
        "non-finite: mel",
        "gpu0 93% 20.0/80.0 GiB 61°C",
        "⚠ KL divergence is negative",
    ):
        assert text in line, (text, line)


def test_many_gpus_are_summarised_and_warnings_stay_after_the_end() -> None:
    gpus = [gpu(i, i, util_pct=90.0 + i, temp_c=60.0 + i) for i in range(8)]
    line = render.progress_line(
        {"state": "running", "progress": {"step": 1}, "telemetry": telemetry(gpus)},
        {"watts": None, "kwh_so_far": None},
    )
    assert "8 GPUs util ≥90% mem ≤19.5 GiB ≤67°C" in line and "gpu3" not in line
    ended = render.progress_line(
        {
            "state": "failed",
            "progress": {"step": 1},
            "telemetry": telemetry(gpus),
            "health_warnings": [{"code": "grad_norm_nonfinite", "message": "grad NaN"}],
        },
        {"watts": None, "kwh_so_far": None},
    )
    assert "⚠ grad NaN" in ended and "gpu0" not in ended


def test_watch_prints_telemetry_and_a_raised_warning(
    cli: Cli, client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key)
    series = iter(
        [
            telemetry([gpu(torch_allocated_mib=1_000.0 + 100.0 * i, util_pct=88.0)], loss=1.5)
            for i in range(10)
        ]
    )

    def next_step() -> None:
        clock.advance(seconds=15)
        snapshot = next(series, None)
        if snapshot is None:
            worker.job_call(job_id, "fail", error="stopped by the test")
        else:
            beat(worker, job_id, 1, snapshot)

    cli.on_sleep = next_step
    result = cli("watch", job_id, "--interval", "0")
    assert result.exit_code == 1, result.output  # the job failed
    assert "gpu0 88% 19.5/79.6 GiB 61°C" in result.stdout
    assert "step 0.42 s" in result.stdout and "grad 1.2" in result.stdout
    assert "⚠ torch-allocated memory grew 900 MiB" in result.stdout
