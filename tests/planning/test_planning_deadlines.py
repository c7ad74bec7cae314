"""EDF, the deadline-safety check of the online planner, and backtests on a messy trace."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scheduler.carbon.trace_reader import read_trace
from scheduler.cli import app
from scheduler.planning.edf import EdfState, edf_misses, edf_slots
from scheduler.planning.simulate import (
    expected_arrivals,
    policy_slots,
    safe_first_slot,
    simulate,
    workload_slot_jobs,
)
from scheduler.planning.types import SlotJob
from scheduler.planning.workloads import generate_workload

PLAN_CHECK = Path(__file__).resolve().parents[3] / "shared" / "tools" / "plan_check.py"
MESSY = Path(__file__).parent / "fixtures" / "switch_gaps_duplicates.csv"


def job(name: str, duration: int, deadline: int, **extra: object) -> SlotJob:
    return SlotJob(
        id=name,
        duration=duration,
        power_kw=1.0,
        gpus=1,
        release=0,
        deadline=deadline,
        order=int(extra.pop("order", 0)),
        **extra,
    )  # type: ignore[arg-type]


def test_edf_runs_the_earliest_deadline_and_preempts_interruptible_jobs() -> None:
    jobs = [
        job("long", 4, 10, interruptible=True, order=0),
        replace_release(job("urgent", 2, 4, order=1), 1),
    ]
    slots = edf_slots(jobs, 1, 12)
    # "long" starts, is preempted at slot 1 by the earlier deadline, and resumes after.
    assert slots[0] == [0, 3, 4, 5] and slots[1] == [1, 2]


def test_edf_does_not_preempt_a_started_non_interruptible_job() -> None:
    jobs = [job("block", 3, 10, order=0), replace_release(job("urgent", 1, 2, order=1), 1)]
    slots = edf_slots(jobs, 1, 12)
    assert slots[0] == [0, 1, 2] and slots[1] == [3]


def replace_release(slot_job: SlotJob, release: int) -> SlotJob:
    from dataclasses import replace

    return replace(slot_job, release=release)


def test_edf_misses_counts_jobs_that_cannot_finish() -> None:
    queue = [job("a", 2, 2, order=0), job("b", 2, 3, order=1)]
    state = EdfState([2, 2], np.zeros(6, dtype=np.int64))
    misses, first = edf_misses(queue, state, np.ones(6))
    assert misses == {1} and first == [0]
    assert edf_misses(queue, state, np.full(6, 2.0))[0] == set()


def test_safety_check_starts_a_job_the_plan_would_make_late() -> None:
    # One GPU: "tight" must run now to make slot 3; a plan that runs only "loose" now
    # (say, for a cleaner slot) would make "tight" late although EDF meets both.
    queue = [job("loose", 1, 10, interruptible=True, order=0), job("tight", 3, 3, order=1)]
    committed = np.zeros(12, dtype=np.int64)
    assert safe_first_slot(queue, [0], committed, 1) == [1]
    # With two GPUs the plan's choice is kept and "tight" is added beside it.
    assert safe_first_slot(queue, [0], committed, 2) == [0, 1]
    # A plan that already keeps every deadline is left alone, even one that waits.
    assert safe_first_slot([queue[0]], [], committed, 1) == []


def test_safety_check_makes_room_for_expected_urgent_arrivals() -> None:
    # Two GPUs, two jobs with laxity to spare: alone they may wait. When urgent work keeps
    # arriving (two GPUs' worth, due two slots after it appears), waiting would push them
    # behind it, so the first in EDF order starts now (then both still end on time).
    queue = [
        job("a", 2, 5, interruptible=True, order=0),
        job("b", 2, 5, interruptible=True, order=1),
    ]
    committed = np.zeros(10, dtype=np.int64)
    assert safe_first_slot(queue, [], committed, 2) == []
    hedged = safe_first_slot(queue, [], committed, 2, urgent_load=2.0, urgent_due=2)
    assert hedged == [0]


def test_expected_arrivals_spread_the_observed_load() -> None:
    expected = expected_arrivals(1.5, horizon=9, due=4, first_order=10)
    assert sum(j.duration * j.gpus for j in expected) == pytest.approx(1.5 * 8, abs=1)
    assert all(j.deadline - j.release == 4 and j.interruptible for j in expected)
    assert min(j.release for j in expected) == 1 and min(j.order for j in expected) == 10


@pytest.mark.parametrize("forecast", ["perfect", "forecaster"])
def test_messy_trace_plans_and_passes_plan_check(tmp_path: Path, forecast: str) -> None:
    start = datetime(2026, 1, 1, 2, 10, tzinfo=UTC)
    workload = generate_workload(start, 36, busy=True, capacity_gpus=2, seed=11, max_slack_hours=24)
    result = simulate(MESSY, workload, forecast=forecast, policy="greenwindow")
    assert result["step_minutes"] == 30
    notes = " ".join(result["trace_warnings"])
    for word in ("resolution changes", "duplicate rows", "slots filled", "resampled"):
        assert word in notes
    if forecast == "perfect":
        # The instance where the plan without the safety check missed one deadline EDF met.
        assert result["deadline_misses"] <= result["edf_deadline_misses"]
        assert result["savings_percent"] > 0
        series = read_trace(MESSY).series
        jobs = workload_slot_jobs(series, workload)
        unchecked = policy_slots(series, jobs, 2, deadline_safety=False)
        late = sum(
            1
            for j, slots in zip(jobs, unchecked, strict=True)
            if len(slots) < j.duration or max(slots) >= j.deadline
        )
        assert late > result["edf_deadline_misses"]
    if PLAN_CHECK.exists():
        workload_path, plan_path = tmp_path / "w.json", tmp_path / "p.json"
        workload_path.write_text(json.dumps(workload))
        plan_path.write_text(json.dumps(result))
        done = subprocess.run(
            [sys.executable, str(PLAN_CHECK), str(MESSY), str(workload_path), str(plan_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["violations"] == [], report
        assert report["deadline_misses"] == result["deadline_misses"]


def test_cli_simulate_reads_the_messy_trace_and_runs_edf(tmp_path: Path) -> None:
    workload = generate_workload(
        datetime(2026, 1, 1, 3, tzinfo=UTC),
        24,
        busy=True,
        capacity_gpus=2,
        seed=4,
        max_slack_hours=24,
    )
    workload_path = tmp_path / "w.json"
    workload_path.write_text(json.dumps(workload))
    outcome = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(MESSY),
            "--workload",
            str(workload_path),
            "--out",
            str(tmp_path / "p.json"),
            "--policy",
            "edf",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["policy"] == "edf" and plan["deadline_misses"] == plan["edf_deadline_misses"]
    assert "warning:" in outcome.output and "not on the" not in outcome.output
    assert all(job["intervals"] for job in plan["jobs"])
