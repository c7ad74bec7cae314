"""The planner: deadlines, capacity, contiguity, chunking, objectives and explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from scheduler.planning.baselines import baseline_plan
from scheduler.planning.planner import plan
from scheduler.planning.types import PlanJob, RunningJob, SlotGrid

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def grid_of(values: list[float], price: list[float] | None = None) -> SlotGrid:
    return SlotGrid(
        T0, 60, np.array(values, dtype=float), None if price is None else np.array(price)
    )


# 24 hourly slots: dirty except a clean window 02:00-06:00 and a medium one 12:00-14:00.
DAY = [300.0] * 2 + [100.0] * 4 + [300.0] * 6 + [200.0] * 2 + [300.0] * 10


def test_defers_to_clean_window_and_explains() -> None:
    job = PlanJob("a", 240, 1.0, deadline=hours(24))
    result = plan(grid_of(DAY), [job], 4).jobs["a"]
    assert result.intervals == [(hours(2), hours(6))]
    assert result.feasible
    assert result.kwh == pytest.approx(4.0)
    assert result.kg_co2e == pytest.approx(0.4)
    # Running now would cover 300, 300, 100, 100.
    assert result.saving_kg == pytest.approx(0.8 - 0.4)
    assert result.saving_percent == pytest.approx(50.0)
    assert result.explanation == "deferred to low-carbon window 02:00-06:00 UTC (-50 % CO2e)"


def test_never_ends_after_the_deadline_when_feasible() -> None:
    # The clean window ends at 06:00 but the deadline is 04:00: the best on-time window is 0-4.
    job = PlanJob("a", 180, 1.0, deadline=hours(4))
    result = plan(grid_of(DAY), [job], 1).jobs["a"]
    assert result.end is not None and result.end <= hours(4)
    assert result.intervals == [(hours(1), hours(4))]
    assert result.feasible


def test_tight_deadline_runs_now_and_says_why() -> None:
    job = PlanJob("a", 120, 1.0, deadline=hours(2))
    result = plan(grid_of(DAY), [job], 1).jobs["a"]
    assert result.intervals == [(hours(0), hours(2))]
    assert result.explanation == "runs now: deadline too tight to defer"


def test_infeasible_job_runs_as_soon_as_possible_with_the_reason() -> None:
    job = PlanJob("late", 240, 1.0, deadline=hours(2))
    other = PlanJob("other", 120, 1.0, deadline=hours(3))
    result = plan(grid_of(DAY), [job, other], 1)
    late = result.jobs["late"]
    assert not late.feasible
    assert late.explanation == "infeasible before deadline: runs as soon as possible"
    # The feasible job keeps its deadline; the late one takes the first free hours after it.
    assert result.jobs["other"].feasible
    assert result.jobs["other"].end <= hours(3)
    assert late.start == result.jobs["other"].end


def test_capacity_holds_in_every_slot_including_running_jobs() -> None:
    rng = np.random.default_rng(7)
    values = rng.uniform(50, 400, 48)
    jobs = [
        PlanJob(
            f"j{i}",
            60 * int(rng.integers(1, 6)),
            float(rng.uniform(0.2, 1.5)),
            gpus=int(rng.integers(1, 3)),
            earliest_start=hours(int(rng.integers(0, 20))),
            deadline=hours(int(rng.integers(26, 48))),
            interruptible=bool(i % 2),
        )
        for i in range(30)
    ]
    running = [RunningJob("r1", 2, hours(5)), RunningJob("r2", 1, hours(10))]
    result = plan(SlotGrid(T0, 60, values), jobs, 4, running)
    used = np.zeros(48, dtype=int)
    used[:5] += 2
    used[:10] += 1
    for job in jobs:
        for slot in result.jobs[job.id].slots:
            used[slot] += job.gpus
    assert used.max() <= 4
    assert np.array_equal(used, result.gpus_used)
    # This queue is heavier than the GPUs can take, so the check above had real work to do.
    assert used[:24].mean() > 3


def test_per_slot_capacity_array_is_respected() -> None:
    capacity = np.array([1] * 24)
    capacity[2:6] = 0  # maintenance in the clean window
    job = PlanJob("a", 120, 1.0, deadline=hours(24))
    result = plan(grid_of(DAY), [job], capacity).jobs["a"]
    assert not set(result.slots) & {2, 3, 4, 5}
    assert result.intervals == [(hours(12), hours(14))]


def test_non_interruptible_jobs_get_one_contiguous_window() -> None:
    # Two clean islands of 2 h each: a 4 h non-interruptible job cannot use both.
    values = [300.0] * 24
    values[2:4] = [50.0, 50.0]
    values[8:10] = [50.0, 50.0]
    job = PlanJob("a", 240, 1.0, deadline=hours(24))
    result = plan(grid_of(values), [job], 1).jobs["a"]
    assert len(result.intervals) == 1
    start, end = result.intervals[0]
    assert end - start == timedelta(hours=4)


def test_interruptible_job_uses_both_clean_islands() -> None:
    values = [300.0] * 24
    values[2:4] = [50.0, 50.0]
    values[8:10] = [50.0, 50.0]
    job = PlanJob("a", 240, 1.0, deadline=hours(24), interruptible=True)
    result = plan(grid_of(values), [job], 1).jobs["a"]
    assert result.slots == [2, 3, 8, 9]
    assert result.explanation.startswith("split into 2 chunks")


def test_chunks_respect_min_chunk_and_count_resume_overhead() -> None:
    values = [300.0] * 24
    values[2:5] = [50.0, 50.0, 50.0]
    values[8:11] = [60.0, 60.0, 60.0]
    values[14] = 10.0  # a single very clean hour: too short for a 2 h minimum chunk
    job = PlanJob(
        "a",
        240,
        1.0,
        deadline=hours(24),
        interruptible=True,
        min_chunk_minutes=120,
        resume_overhead_minutes=60,
    )
    result = plan(grid_of(values), [job], 1).jobs["a"]
    lengths = [(end - start) / timedelta(hours=1) for start, end in result.intervals]
    assert all(length >= 2 for length in lengths)
    assert 14 not in result.slots
    # Two chunks: 4 h of work plus one hour of resume overhead fill 5 slots.
    assert len(result.intervals) == 2
    assert len(result.slots) == 5
    assert result.kwh == pytest.approx(5.0)


def test_resume_overhead_can_make_one_window_cheaper_than_chunks() -> None:
    values = [300.0] * 24
    values[2:4] = [90.0, 90.0]
    values[8:10] = [90.0, 90.0]
    values[16:20] = [100.0] * 4
    job = PlanJob(
        "a", 240, 1.0, deadline=hours(24), interruptible=True, resume_overhead_minutes=120
    )
    result = plan(grid_of(values), [job], 1).jobs["a"]
    # Chunks would need 6 slots (2 of overhead) at 90-300; one window of 4 at 100 is cheaper.
    assert result.intervals == [(hours(16), hours(20))]


def test_cost_objective_follows_price_and_carbon_follows_intensity() -> None:
    intensity = [300.0] * 24
    intensity[12:14] = [100.0, 100.0]  # solar noon is clean
    price = [0.3] * 24
    price[1:3] = [0.1, 0.1]  # night is cheap
    grid = grid_of(intensity, price)
    jobs = [
        PlanJob("green", 120, 1.0, deadline=hours(24), objective="carbon"),
        PlanJob("cheap", 120, 1.0, deadline=hours(24), objective="cost"),
    ]
    result = plan(grid, jobs, 2)
    assert result.jobs["green"].intervals == [(hours(12), hours(14))]
    assert result.jobs["cheap"].intervals == [(hours(1), hours(3))]
    assert result.jobs["cheap"].cost == pytest.approx(2.0 * 0.1)
    assert "cheaper window" in result.jobs["cheap"].explanation


def test_balanced_objective_trades_carbon_against_price() -> None:
    # Window A: cleanest but dearest; B: cheapest but dirtiest; C: second best on both.
    intensity = [300.0] * 12
    price = [0.30] * 12
    intensity[2], price[2] = 100.0, 0.30
    intensity[5], price[5] = 300.0, 0.10
    intensity[8], price[8] = 140.0, 0.14
    jobs = [
        PlanJob("bal", 60, 1.0, deadline=hours(12), objective="balanced"),
        PlanJob("co2", 60, 1.0, deadline=hours(12), objective="carbon"),
        PlanJob("eur", 60, 1.0, deadline=hours(12), objective="cost"),
    ]
    result = plan(grid_of(intensity, price), jobs, 3)
    assert result.jobs["co2"].slots == [2]
    assert result.jobs["eur"].slots == [5]
    assert result.jobs["bal"].slots == [8]


def test_running_interruptible_job_may_be_paused() -> None:
    job = PlanJob("r", 120, 1.0, deadline=hours(24), interruptible=True, running=True)
    result = plan(grid_of(DAY), [job], 1).jobs["r"]
    assert result.slots == [2, 3]


def test_job_ids_must_be_unique() -> None:
    with pytest.raises(ValueError):
        plan(grid_of(DAY), [PlanJob("a", 60, 1.0), PlanJob("a", 60, 1.0)], 1)


def test_a_job_does_not_wait_for_a_gain_within_the_deferral_penalty() -> None:
    # A daily cycle (100-300) with its low at 06:00; now is almost as clean as that low.
    values = list(200 + 100 * np.sin(2 * np.pi * (np.arange(24) - 12) / 24))
    values[0:2] = [102.0, 102.0]
    job = PlanJob("a", 120, 1.0, deadline=hours(24))
    assert plan(grid_of(values), [job], 1).jobs["a"].slots == [0, 1]
    unpenalised = plan(grid_of(values), [job], 1, defer_penalty_per_hour=0.0)
    assert unpenalised.jobs["a"].slots in ([5, 6], [6, 7])


def test_baseline_plans_share_the_plan_format() -> None:
    jobs = [
        PlanJob("light", 180, 0.2, deadline=hours(24)),
        PlanJob("heavy", 180, 2.0, earliest_start=hours(1), deadline=hours(7)),
    ]
    sdk = baseline_plan("sdk-window", grid_of(DAY), jobs, 1)
    run_now = baseline_plan("run-now", grid_of(DAY), jobs, 1)
    ours = plan(grid_of(DAY), jobs, 1)
    # The SDK rule gives the clean window to whoever asked first; the joint plan to the
    # heavy job, which keeps its deadline.
    assert sdk.jobs["light"].slots == [2, 3, 4]
    assert not sdk.jobs["heavy"].feasible
    assert ours.jobs["heavy"].slots == [2, 3, 4] and ours.jobs["heavy"].feasible
    assert run_now.jobs["light"].slots == [0, 1, 2]
    assert ours.total_kg_co2e < 0.7 * sdk.total_kg_co2e
    assert max(sdk.gpus_used) <= 1 and max(ours.gpus_used) <= 1
    with pytest.raises(ValueError):
        baseline_plan("cheapest", grid_of(DAY), jobs, 1)


def test_explanations_name_earliest_start_and_fall_back_to_carbon_without_tariff() -> None:
    later = PlanJob("later", 60, 1.0, earliest_start=hours(12), deadline=hours(13))
    cheap = PlanJob("cheap", 240, 1.0, deadline=hours(24), objective="cost")
    result = plan(grid_of(DAY), [later, cheap], 2)
    assert result.jobs["later"].explanation.startswith("runs from its earliest start 12:00")
    # No prices on this grid: a cost job is planned (and explained) for carbon.
    assert result.jobs["cheap"].explanation.startswith("deferred to low-carbon window 02:00")
    assert result.jobs["cheap"].cost is None
