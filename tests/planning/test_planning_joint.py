"""Joint planning against the baselines and the MILP optimum on small instances."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.planning.baselines import run_now_slots, sdk_best_start, sdk_window_slots
from scheduler.planning.joint import plan_queue
from scheduler.planning.optimal import optimal_slots
from scheduler.planning.types import SlotJob


def kg(jobs: list[SlotJob], chosen: list, intensity: np.ndarray) -> float:
    return sum(j.power_kw * intensity[s].sum() / 1000 for j, s in zip(jobs, chosen, strict=True))


def misses(jobs: list[SlotJob], chosen: list) -> int:
    return sum(1 for j, s in zip(jobs, chosen, strict=True) if s is None or s[-1] >= j.deadline)


def usage(jobs: list[SlotJob], chosen: list, n_slots: int) -> np.ndarray:
    used = np.zeros(n_slots, dtype=int)
    for job, slots in zip(jobs, chosen, strict=True):
        used[slots] += job.gpus
    return used


def test_sdk_rule_takes_the_lowest_rolling_average() -> None:
    # The PR #74 example: the lowest single point (5) cannot host a 2-slot job well.
    view = np.array([10.0, 20.0, 30.0, 40.0, 5.0, 50.0])
    job = SlotJob("a", 2, 1.0, 1, release=0, deadline=6)
    assert sdk_best_start(view, job) == 0
    view = np.array([5.0, 55.0, 10.0, 10.0, 10.0])
    assert sdk_best_start(view, SlotJob("b", 2, 1.0, 1, release=0, deadline=5)) == 2


def test_run_now_is_fifo_as_soon_as_gpus_are_free() -> None:
    jobs = [
        SlotJob("a", 3, 1.0, 1, release=0, deadline=10, order=0),
        SlotJob("b", 2, 1.0, 1, release=1, deadline=10, order=1),
    ]
    chosen = run_now_slots(jobs, np.full(10, 1))
    assert chosen[0].tolist() == [0, 1, 2]
    assert chosen[1].tolist() == [3, 4]


def test_joint_plan_beats_the_sdk_rule_on_a_busy_queue() -> None:
    # One GPU, one clean 3-slot window. The first submitted job is light and flexible; the
    # heavy jobs arrive later with deadlines just after the clean window.
    intensity = np.array([300.0] * 4 + [50.0] * 3 + [300.0] * 17)
    jobs = [
        SlotJob("light", 3, 0.2, 1, release=0, deadline=24, order=0),
        SlotJob("heavy", 3, 2.0, 1, release=1, deadline=9, order=1),
        SlotJob("medium", 2, 1.0, 1, release=2, deadline=12, order=2),
    ]
    capacity = np.full(24, 1)
    sdk = sdk_window_slots(jobs, capacity, intensity)
    joint = plan_queue(jobs, intensity, None, capacity).slots
    assert joint[1].tolist() == [4, 5, 6]  # the heavy job gets the clean window
    assert misses(jobs, joint) == 0
    assert misses(jobs, sdk) >= 1  # the light job took the window; the heavy one is pushed
    assert kg(jobs, joint, intensity) < 0.8 * kg(jobs, sdk, intensity)
    assert usage(jobs, joint, 24).max() <= 1


def random_instance(seed: int, n_jobs: int = 14, n_slots: int = 48) -> tuple:
    rng = np.random.default_rng(seed)
    hours = np.arange(n_slots)
    intensity = 200 + 100 * np.sin(hours / 24 * 2 * np.pi + seed) + rng.normal(0, 30, n_slots)
    jobs = []
    for i in range(n_jobs):
        duration = int(rng.integers(1, 5))
        release = int(rng.integers(0, 24))
        slack = int(rng.integers(1, 20))
        jobs.append(
            SlotJob(
                f"j{i}",
                duration,
                float(rng.uniform(0.3, 1.5)),
                int(rng.integers(1, 3)),
                release,
                min(release + duration + slack, n_slots),
                interruptible=bool(i % 2),
                order=i,
            )
        )
    return jobs, np.maximum(intensity, 10.0), np.full(n_slots, 3)


@pytest.mark.parametrize("seed", range(4))
def test_joint_plan_gets_most_of_the_optimal_saving(seed: int) -> None:
    jobs, intensity, capacity = random_instance(seed)
    optimum = optimal_slots(jobs, intensity, capacity)
    assert optimum is not None and optimum.status == "optimal"
    # A generous time budget: the local search stops on its iteration count, not the clock.
    joint = plan_queue(jobs, intensity, None, capacity, improve_budget_s=60)
    assert misses(jobs, joint.slots) == 0
    assert usage(jobs, joint.slots, 48).max() <= 3
    run_now = run_now_slots(jobs, capacity)
    best_saving = kg(jobs, run_now, intensity) - optimum.kg_co2e
    saving = kg(jobs, run_now, intensity) - kg(jobs, joint.slots, intensity)
    assert best_saving > 0
    assert saving >= 0.85 * best_saving
    assert kg(jobs, joint.slots, intensity) >= optimum.kg_co2e - 1e-9


def test_milp_respects_contiguity_capacity_and_deadlines() -> None:
    jobs, intensity, _ = random_instance(11)
    capacity = np.full(48, 4)
    optimum = optimal_slots(jobs, intensity, capacity)
    assert optimum is not None
    used = usage(jobs, optimum.slots, 48)
    assert used.max() <= 4
    for job, slots in zip(jobs, optimum.slots, strict=True):
        assert len(slots) == job.duration
        assert slots[0] >= job.release and slots[-1] < job.deadline
        if not job.interruptible:
            assert slots[-1] - slots[0] == job.duration - 1


def test_milp_reports_no_plan_when_deadlines_cannot_all_hold() -> None:
    jobs = [SlotJob("a", 3, 1.0, 1, 0, 3), SlotJob("b", 3, 1.0, 1, 0, 3)]
    assert optimal_slots(jobs, np.full(6, 100.0), 1) is None
    soft = optimal_slots(jobs, np.full(6, 100.0), 1, allow_late=True)
    assert soft is not None and soft.late == 1


def test_joint_repair_keeps_deadlines_that_greedy_order_would_break() -> None:
    # Slack-first order places "flex" at the clean window 2-4 before "tight" arrives at
    # slot 2 with no slack: the repair must move "flex" to keep both on time.
    intensity = np.array([300.0, 300.0, 50.0, 50.0, 300.0, 300.0, 300.0, 300.0])
    jobs = [
        SlotJob("flex", 2, 1.0, 1, release=0, deadline=8, order=0),
        SlotJob("tight", 2, 0.1, 1, release=2, deadline=4, order=1, priority=-1),
    ]
    result = plan_queue(jobs, intensity, None, np.full(8, 1))
    assert misses(jobs, result.slots) == 0
    assert result.slots[1].tolist() == [2, 3]


def test_a_job_planned_alone_takes_its_cheapest_on_time_window() -> None:
    """A submission is planned alone around a fixed queue (capacity per slot), where no move
    of the search applies: the greedy pass must already give the cheapest window that has
    the GPUs, found here by trying every start."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        n_slots = int(rng.integers(8, 60))
        intensity = rng.uniform(50, 500, n_slots)
        capacity = rng.integers(0, 4, n_slots)
        duration = int(rng.integers(1, 6))
        gpus = int(rng.integers(1, 3))
        release = int(rng.integers(0, 4))
        deadline = int(rng.integers(release + duration, n_slots + 1))
        job = SlotJob("solo", duration, 1.0, gpus, release, deadline)
        starts = [
            start
            for start in range(release, deadline - duration + 1)
            if np.all(capacity[start : start + duration] >= gpus)
        ]
        result = plan_queue([job], intensity, None, capacity.copy(), improve_budget_s=0.5)
        slots = result.slots[0]
        if not starts:
            assert result.status[0] != "on_time", trial
            continue
        best = min(float(intensity[s : s + duration].sum()) for s in starts)
        assert result.status[0] == "on_time", trial
        assert float(intensity[slots].sum()) == pytest.approx(best), trial
