"""Online backtests: output contract (checked by plan_check), savings, no peeking ahead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from scheduler.carbon.series import read_trace_csv
from scheduler.planning.simulate import main, simulate
from scheduler.planning.workloads import generate_workload

# The contract checker lives in shared/, beside the repository (also in CI's clone).
PLAN_CHECK = Path(__file__).resolve().parents[3] / "shared" / "tools" / "plan_check.py"
TRACE_START = datetime(2026, 1, 1, tzinfo=UTC)
WORKLOAD_START = TRACE_START + timedelta(days=15, minutes=17)


def write_trace(path: Path, days: int = 25, seed: int = 3, change_after: int | None = None) -> Path:
    """A two-column hourly trace: a daily solar dip plus noise (and a change from an hour on)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    values = 250 - 120 * np.clip(np.sin((hours % 24 - 6) / 12 * np.pi), 0, None)
    values = values + rng.normal(0, 25, hours.shape[0])
    if change_after is not None:
        values[change_after:] = values[change_after:][::-1]
    lines = ["timestamp,carbon_intensity"]
    for hour, value in zip(hours, values, strict=True):
        moment = TRACE_START + timedelta(hours=int(hour))
        lines.append(f"{moment:%Y-%m-%dT%H:%M:%SZ},{max(value, 5):.2f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trace(tmp_path_factory.mktemp("trace") / "trace.csv")


@pytest.fixture(scope="module")
def workload() -> dict:
    return generate_workload(WORKLOAD_START, 24, busy=True, capacity_gpus=2, seed=5)


def run_plan_check(trace: Path, workload: dict, plan: dict, tmp_path: Path) -> dict:
    workload_path = tmp_path / "workload.json"
    plan_path = tmp_path / "plan.json"
    workload_path.write_text(json.dumps(workload))
    plan_path.write_text(json.dumps(plan))
    done = subprocess.run(
        [sys.executable, str(PLAN_CHECK), str(trace), str(workload_path), str(plan_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["violations"]
    return report


@pytest.mark.skipif(
    not PLAN_CHECK.exists() and os.environ.get("CI") != "true",
    reason="the shared plan checker is not beside the repository",
)
@pytest.mark.parametrize(
    ("policy", "forecast"),
    [
        ("greenwindow", "perfect"),
        ("greenwindow", "forecaster"),
        ("sdk-window", "forecaster"),
        ("run-now", "perfect"),
    ],
)
def test_simulated_plans_pass_plan_check(
    trace: Path, workload: dict, tmp_path: Path, policy: str, forecast: str
) -> None:
    result = simulate(trace, workload, forecast=forecast, policy=policy)
    report = run_plan_check(trace, workload, result, tmp_path)
    assert report["violations"] == []
    assert report["kg_co2e"] == pytest.approx(result["total_kg_co2e"])
    assert report["deadline_misses"] == result["deadline_misses"]
    assert len(result["jobs"]) == len(workload["jobs"])


def test_greenwindow_saves_carbon_without_missing_deadlines(trace: Path, workload: dict) -> None:
    result = simulate(trace, workload, forecast="perfect", policy="greenwindow")
    run_now = simulate(trace, workload, forecast="perfect", policy="run-now")
    assert result["run_now_kg_co2e"] == pytest.approx(run_now["total_kg_co2e"])
    assert result["savings_percent"] > 5.0
    assert result["deadline_misses"] == 0
    for job in result["jobs"]:
        for start, end in job["intervals"]:
            assert start.endswith(":00:00Z") and end.endswith(":00:00Z")


def test_forecaster_mode_decides_only_from_the_past(tmp_path: Path, workload: dict) -> None:
    # Two traces that agree until hour 15 * 24 + 16 and differ afterwards: everything run
    # before that hour must be the same, since nothing later may be seen.
    cut = 15 * 24 + 16
    same = write_trace(tmp_path / "a.csv")
    changed = write_trace(tmp_path / "b.csv", change_after=cut)
    cut_time = TRACE_START + timedelta(hours=cut)
    assert not np.array_equal(read_trace_csv(same).values, read_trace_csv(changed).values)

    def slots_before_cut(path: Path, forecast: str) -> list:
        result = simulate(path, workload, forecast=forecast, policy="greenwindow")
        return [
            [(s, e) for s, e in job["intervals"] if s < f"{cut_time:%Y-%m-%dT%H:%M:%SZ}"]
            for job in result["jobs"]
        ]

    assert slots_before_cut(same, "forecaster") == slots_before_cut(changed, "forecaster")
    # The perfect forecast does see ahead, so there the early decisions change.
    assert slots_before_cut(same, "perfect") != slots_before_cut(changed, "perfect")


def test_main_writes_the_json_and_prints_a_summary(
    trace: Path, workload: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workload_path = tmp_path / "w.json"
    workload_path.write_text(json.dumps(workload))
    out = tmp_path / "plan.json"
    main(trace, workload_path, out, "perfect", "sdk-window")
    written = json.loads(out.read_text())
    assert set(written) >= {
        "jobs",
        "total_kg_co2e",
        "run_now_kg_co2e",
        "savings_percent",
        "deadline_misses",
    }
    assert "sdk-window" in capsys.readouterr().out


def test_unknown_policy_is_refused(trace: Path, workload: dict) -> None:
    with pytest.raises(ValueError):
        simulate(trace, workload, policy="cheapest")


def test_workloads_are_seeded_and_mixed() -> None:
    first = generate_workload(WORKLOAD_START, 72, busy=True, capacity_gpus=4, seed=9)
    again = generate_workload(WORKLOAD_START, 72, busy=True, capacity_gpus=4, seed=9)
    quiet = generate_workload(WORKLOAD_START, 72, busy=False, capacity_gpus=4, seed=9)
    assert first == again
    assert len(quiet["jobs"]) < len(first["jobs"]) / 2
    jobs = first["jobs"]
    share = sum(job["interruptible"] for job in jobs) / len(jobs)
    assert 0.3 < share < 0.7
    for job in jobs:
        submitted = datetime.fromisoformat(job["submitted_at"])
        deadline = datetime.fromisoformat(job["deadline"])
        slack = (deadline - submitted).total_seconds() / 3600 - job["duration_minutes"] / 60
        assert 2 - 1 / 3600 <= slack <= 48
