"""Zone cache entries (scheduling/occupancy.py) in isolation: commits reported out of
order, entries read while commits were in flight, and the vectorised free-GPU count.

The app-level proof that cached plans equal cold ones is test_occupancy_cache.py; these
pin down the cases concurrency produces and a sequential test cannot reach."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np

from scheduler.carbon.series import IntensitySeries
from scheduler.carbon.service import Signal
from scheduler.planning.tariff import TariffSchedule, prices_for_slots, spain_2_0td_example
from scheduler.planning.types import SlotGrid
from scheduler.scheduling.occupancy import (
    MAX_PENDING_VERSIONS,
    Held,
    Occupancy,
    PriceMemo,
    ZoneCaches,
    _Changes,
    slot_grid,
)

NOW = datetime(2028, 2, 29, 23, 0, tzinfo=UTC)  # a leap day's last hour
ZONE = "ES"


def held(
    job_id: str, *windows: tuple[float, float], gpus: int = 1, state: str = "scheduled"
) -> Held:
    """A job holding `gpus` over windows given in hours from NOW."""
    intervals = tuple((NOW + timedelta(hours=a), NOW + timedelta(hours=b)) for a, b in windows)
    end = intervals[-1][1] if intervals else None
    return Held(job_id, state, gpus, end, intervals)


def transaction(version: int, *added: Held, unknown: bool = False) -> _Changes:
    """What the commit hooks know of a transaction numbered `version` by its bump."""
    changes = _Changes(queue={ZONE})
    if unknown:
        changes.unknown.add(ZONE)
    else:
        changes.added[ZONE] = list(added)
    changes.bumped = {ZONE: (version, 0)}
    return changes


def ids(caches: ZoneCaches) -> list[str]:
    return [job.job_id for job in caches.occupancy[ZONE].jobs]


def test_commits_reported_out_of_order_advance_the_entry_in_commit_order() -> None:
    caches = ZoneCaches()
    caches.store(ZONE, Occupancy.of(5, NOW, (held("a", (1, 2)),)))
    sixth, seventh = transaction(6, held("b", (2, 3))), transaction(7, held("c", (3, 4)))
    caches.prepared(sixth)
    caches.prepared(seventh)
    assert caches.occupancy[ZONE].version == 5  # nothing is known to have committed yet
    caches.committed(seventh)  # its thread reported first: 6 committed before it
    assert caches.occupancy[ZONE].version == 7
    assert ids(caches) == ["a", "b", "c"]
    caches.committed(sixth)
    assert ids(caches) == ["a", "b", "c"]
    assert caches.pending[ZONE] == {}


def test_a_reader_that_sees_a_version_takes_the_deltas_before_their_threads_report() -> None:
    caches = ZoneCaches()
    caches.store(ZONE, Occupancy.of(5, NOW, ()))
    caches.prepared(transaction(6, held("b", (2, 3))))
    assert caches.current(ZONE, 5) is not None
    entry = caches.current(ZONE, 6)  # the database shows 6: it has committed
    assert entry is not None and [job.job_id for job in entry.jobs] == ["b"]


def test_a_change_the_entry_cannot_replay_drops_it_even_when_reported_late() -> None:
    caches = ZoneCaches()
    caches.store(ZONE, Occupancy.of(5, NOW, ()))
    caches.prepared(transaction(6, unknown=True))  # e.g. a claim
    seventh = transaction(7, held("c", (3, 4)))
    caches.prepared(seventh)
    caches.committed(seventh)
    assert ZONE not in caches.occupancy


def test_an_entry_read_during_a_commit_counts_that_commits_job_once() -> None:
    caches = ZoneCaches()
    late = held("b", (2, 3))
    sixth = transaction(6, late)
    caches.prepared(sixth)
    # Read at version 5, but the rows were read after transaction 6 committed.
    caches.store(ZONE, Occupancy.of(5, NOW, (held("a", (1, 2)), late)))
    caches.committed(sixth)
    assert caches.occupancy[ZONE].version == 6
    assert ids(caches) == ["a", "b"]
    grid = SlotGrid(NOW, 15, np.full(16, 100.0))
    assert caches.occupancy[ZONE].free(grid, 4, exclude="x")[8:12].tolist() == [3, 3, 3, 3]


def test_a_transaction_that_fails_to_commit_after_its_bump_takes_its_jobs_back() -> None:
    caches = ZoneCaches()
    caches.store(ZONE, Occupancy.of(5, NOW, ()))
    failed = transaction(6, held("ghost", (1, 2)))
    caches.prepared(failed)
    caches.abandoned(failed)
    assert ZONE not in caches.occupancy
    # The next transaction gets the same number from the counter.
    caches.store(ZONE, Occupancy.of(5, NOW, ()))
    retry = transaction(6, held("real", (1, 2)))
    caches.prepared(retry)
    caches.abandoned(failed)  # a late report of the failure takes nothing that is not its own
    caches.committed(retry)
    assert ids(caches) == ["real"]


def test_a_failed_commit_drops_the_entry_even_after_a_reader_took_its_jobs() -> None:
    """Another replica committed under the same number, a reader here saw that number and
    applied this process's delta: the failed transaction must still drop the entry."""
    caches = ZoneCaches()
    caches.store(ZONE, Occupancy.of(5, NOW, ()))
    failed = transaction(6, held("ghost", (1, 2)))
    caches.prepared(failed)
    assert caches.current(ZONE, 6) is not None  # the reader took the ghost
    caches.abandoned(failed)
    assert ZONE not in caches.occupancy


def test_a_gap_that_never_closes_is_given_up() -> None:
    caches = ZoneCaches()
    caches.store(ZONE, Occupancy.of(5, NOW, ()))
    # Version 6 was another replica's: this process never hears of it.
    for version in range(7, 8 + MAX_PENDING_VERSIONS):
        changes = transaction(version, held(f"j{version}", (1, 2)))
        caches.prepared(changes)
        caches.committed(changes)
    assert caches.occupancy[ZONE].version == 5
    assert len(caches.pending[ZONE]) <= MAX_PENDING_VERSIONS


def _free_by_loop(jobs: list[Held], grid: SlotGrid, capacity: int, exclude: str) -> np.ndarray:
    """The cold path's figures (Scheduling.place_new_job): window by window."""
    free = np.full(grid.n_slots, capacity, dtype=np.int64)
    for job in jobs:
        if job.state not in ("scheduled", "ready", "paused") or job.job_id == exclude:
            continue
        if job.planned_end is None or job.planned_end <= grid.start:
            continue
        for start, end in job.intervals:
            first = max(grid.floor_index(start), 0)
            last = min(grid.ceil_index(end), grid.n_slots)
            if first < last:
                free[first:last] -= job.gpus
    return free


def test_vectorised_free_gpus_equal_the_window_by_window_count() -> None:
    rng = random.Random(7)
    states = ["scheduled", "ready", "paused", "running", "held"]
    for trial in range(40):
        jobs = []
        for index in range(rng.randint(0, 30)):
            windows = []
            at = rng.uniform(-6, 30)
            for _ in range(rng.randint(0, 3)):
                # Off-slot minutes and windows that ended before the grid starts.
                length = rng.choice([0.1, 0.25, 0.26, 1.0, 2.37])
                windows.append((at, at + length))
                at += length + rng.uniform(0, 3)
            jobs.append(
                held(f"j{index}", *windows, gpus=rng.randint(1, 4), state=rng.choice(states))
            )
        start = NOW + timedelta(minutes=rng.choice([0, 7, 15, 61]), microseconds=rng.randint(0, 9))
        grid = SlotGrid(start, 15, np.full(rng.randint(1, 200), 300.0))
        exclude = f"j{rng.randint(0, 5)}"
        entry = Occupancy.of(1, NOW, tuple(jobs))
        expected = _free_by_loop(jobs, grid, 8, exclude)
        assert entry.free(grid, 8, exclude=exclude).tolist() == expected.tolist(), trial
        # Advanced entries count the same as entries read whole.
        split = len(jobs) // 2
        advanced = Occupancy.of(1, NOW, tuple(jobs[:split])).plus(2, tuple(jobs[split:]))
        assert advanced.free(grid, 8, exclude=exclude).tolist() == expected.tolist(), trial


def test_a_window_that_ended_before_the_grid_takes_no_gpus() -> None:
    """A waiting job with a past window and a future one: the past window once indexed the
    slot array from the back and took GPUs from almost every slot."""
    job = held("late", (-3, -2), (5, 6), gpus=2)
    grid = SlotGrid(NOW, 15, np.full(40, 100.0))
    free = Occupancy.of(1, NOW, (job,)).free(grid, 4, exclude="x")
    assert free[:20].tolist() == [4] * 20
    assert free[20:24].tolist() == [2] * 4
    assert _free_by_loop([job], grid, 4, "x").tolist() == free.tolist()


def _loop_grid(signal: Signal, tariff: TariffSchedule, now: datetime, hours: float) -> SlotGrid:
    """The slot grid slot by slot, with timedeltas (what slot_grid computed before)."""
    count = math.ceil(hours * 4)
    step = timedelta(minutes=15)
    starts = [now + i * step for i in range(count)]
    series = signal.series
    unit = timedelta(minutes=series.step_minutes)
    index = [
        min(max(math.floor((t + step / 2 - series.start) / unit), 0), len(series) - 1)
        for t in starts
    ]
    return SlotGrid(now, 15, series.values[index], prices_for_slots(tariff, starts))


def test_slot_grids_equal_the_slot_by_slot_build_across_a_dst_change() -> None:
    """Intensity by slot middle, prices by local start, at the spring and autumn changes
    in Madrid and across 29 February's last hour; grids starting within one minute share
    their prices from the memo."""
    rng = random.Random(5)
    tariff = spain_2_0td_example()
    memo: PriceMemo = {}
    for change in (
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
        datetime(2028, 3, 1, 0, 0, tzinfo=UTC),  # out of 29 February, a month's last hour
    ):
        values = np.array([rng.uniform(50, 400) for _ in range(200)])
        signal = Signal(
            IntensitySeries(change - timedelta(hours=13), 60, values), "provider", "", None
        )
        for _ in range(30):
            now = change - timedelta(hours=3) + timedelta(seconds=rng.uniform(0, 6 * 3600))
            hours = rng.choice([1.0, 5.5, 30.0])
            for start in (now, now.replace(second=59, microsecond=999_999), now.replace(second=0)):
                grid = slot_grid(signal, tariff, now=start, hours=hours, prices=memo)
                expected = _loop_grid(signal, tariff, start, hours)
                assert grid.intensity.tolist() == expected.intensity.tolist()
                assert grid.price is not None and expected.price is not None
                assert grid.price.tolist() == expected.price.tolist(), start
