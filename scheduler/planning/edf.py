"""Earliest deadline first, in slot units: the carbon-blind online reference policy.

In every slot, the released jobs with work left are taken by deadline (then submission
order). A non-interruptible job that has started keeps its GPUs until it is done; any other
job runs in the slot if its GPUs are free for it (for a non-interruptible one: for its whole
remaining run), so an interruptible job is preempted whenever jobs with earlier deadlines
take its GPUs. EDF decides from what has been released only, so running it over a known
workload is the same as running it online.

`edf_misses` runs the same rule from a given state (work left, committed windows), which the
online planner uses to check that a plan keeps the known queue as feasible as EDF would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.planning.types import SlotJob


@dataclass
class EdfState:
    """Where a queue stands at a slot: work left per job (in slots), and the GPUs already
    committed per slot from that slot on (windows of non-interruptible jobs that started)."""

    remaining: list[int]
    committed: np.ndarray


def _edf_order(jobs: Sequence[SlotJob], candidates: list[int]) -> list[int]:
    return sorted(candidates, key=lambda i: (jobs[i].deadline, jobs[i].order))


def edf_slots(jobs: Sequence[SlotJob], capacity: int | np.ndarray, n_slots: int) -> list[list[int]]:
    """Slots each job runs in under online EDF (absolute slots; unfinished work is dropped)."""
    cap = (
        np.full(n_slots, capacity, dtype=np.int64)
        if np.isscalar(capacity)
        else np.asarray(capacity)
    )
    used = np.zeros(n_slots, dtype=np.int64)
    remaining = [job.duration for job in jobs]
    busy_until = [0] * len(jobs)
    done: list[list[int]] = [[] for _ in jobs]
    pending = sorted(range(len(jobs)), key=lambda i: jobs[i].release)
    now = min((job.release for job in jobs), default=n_slots)
    while now < n_slots and any(remaining):
        active = [i for i in pending if jobs[i].release <= now and remaining[i] > 0]
        if not active:
            later = [jobs[i].release for i in pending if remaining[i] > 0]
            if not later:
                break
            now = max(now + 1, min(later))
            continue
        for index in _edf_order(jobs, [i for i in active if busy_until[i] <= now]):
            job = jobs[index]
            if job.interruptible:
                if cap[now] - used[now] >= job.gpus:
                    used[now] += job.gpus
                    done[index].append(now)
                    remaining[index] -= 1
                continue
            end = now + remaining[index]
            if end <= n_slots and np.all(cap[now:end] - used[now:end] >= job.gpus):
                used[now:end] += job.gpus
                done[index].extend(range(now, end))
                busy_until[index] = end
                remaining[index] = 0
        now += 1
    return done


def edf_misses(
    jobs: Sequence[SlotJob],
    state: EdfState,
    capacity: np.ndarray,
    first_slot: list[int] | None = None,
    margin: int = 0,
) -> tuple[set[int], list[int]]:
    """Deadlines EDF would miss on a known queue from slot 0 of `capacity` on.

    Job releases and deadlines are relative to that slot; `margin` tightens every deadline
    by that many slots (a laxity margin). With `first_slot` the jobs that run in slot 0 are
    those (EDF takes over from slot 1). Returns the jobs that miss and those run in slot 0.
    """
    lateness, first = edf_lateness(jobs, state, capacity, first_slot, margin)
    return {i for i, late in enumerate(lateness) if late > 0}, first


def edf_lateness(
    jobs: Sequence[SlotJob],
    state: EdfState,
    capacity: np.ndarray,
    first_slot: list[int] | None = None,
    margin: int = 0,
) -> tuple[list[int], list[int]]:
    """Like `edf_misses`, but how many slots late each job ends (0 when on time); work that
    does not finish within `capacity` counts as ending after its last slot."""
    n_slots = int(capacity.shape[0])
    used = state.committed[:n_slots].astype(np.float64).copy()
    remaining = list(state.remaining)
    busy_until = [0] * len(jobs)
    finish = [-1 if r > 0 else 0 for r in remaining]
    chosen_first: list[int] = []
    for now in range(n_slots):
        if not any(r > 0 for r in remaining):
            break
        if now == 0 and first_slot is not None:
            order = [i for i in first_slot if remaining[i] > 0]
        else:
            ready = [i for i, r in enumerate(remaining) if r > 0 and jobs[i].release <= now]
            order = _edf_order(jobs, ready)
        for index in order:
            job = jobs[index]
            if job.interruptible:
                if capacity[now] - used[now] >= job.gpus:
                    used[now] += job.gpus
                    remaining[index] -= 1
                    if now == 0:
                        chosen_first.append(index)
                    if remaining[index] == 0:
                        finish[index] = now + 1
                continue
            end = now + remaining[index]
            window = slice(now, min(end, n_slots))
            if np.all(capacity[window] - used[window] >= job.gpus):
                used[window] += job.gpus
                busy_until[index] = end
                remaining[index] = 0
                finish[index] = end
                if now == 0:
                    chosen_first.append(index)
    lateness = []
    for index, job in enumerate(jobs):
        if state.remaining[index] <= 0:
            lateness.append(0)
            continue
        end = finish[index] if finish[index] >= 0 else n_slots + max(remaining[index], 1)
        lateness.append(max(0, end - (job.deadline - margin)))
    return lateness, chosen_first
