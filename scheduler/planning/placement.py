"""Single-job placement on a slot window: contiguous windows and chunked selections.

All functions work on window-local numpy arrays (index 0 is the job's first allowed slot)
and return slot masks or start offsets; they know nothing about other jobs.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-9


def window_sums(score: np.ndarray, length: int) -> np.ndarray:
    """Sum of `score` over every window of `length` slots (one value per start)."""
    if length <= 0 or length > score.shape[0]:
        return np.empty(0)
    cumulative = np.concatenate(([0.0], np.cumsum(score)))
    return cumulative[length:] - cumulative[:-length]


def fitting_starts(free: np.ndarray, gpus: int, length: int) -> np.ndarray:
    """Mask of starts whose `length` slots all have at least `gpus` free GPUs."""
    if length <= 0 or length > free.shape[0]:
        return np.zeros(0, dtype=bool)
    blocked = np.concatenate(([0], np.cumsum(free < gpus)))
    fits: np.ndarray = (blocked[length:] - blocked[:-length]) == 0
    return fits


def best_start(sums: np.ndarray, fits: np.ndarray) -> int:
    """Start with the lowest window sum among fitting starts (earliest on ties), or -1."""
    if sums.shape[0] == 0:
        return -1
    masked = np.where(fits, sums, np.inf)
    start = int(np.argmin(masked))
    return start if np.isfinite(masked[start]) else -1


def runs_of(selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in a boolean mask."""
    edges = np.diff(np.concatenate(([0], selected.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def resumes_of(starts: np.ndarray, running: bool) -> int:
    """Resumes a chunk plan needs; a running job resumes also when it pauses at slot 0."""
    if starts.shape[0] == 0:
        return 0
    return int(starts.shape[0] - 1 + (1 if running and starts[0] != 0 else 0))


def slots_needed(work: float, resumes: int, overhead: float) -> int:
    """Whole slots that hold `work` slots of progress plus the resume overheads."""
    return max(1, math.ceil(work + resumes * overhead - _EPS))


def _grow_to_min_chunk(selected: np.ndarray, cost: np.ndarray, min_chunk: int) -> None:
    """Extend every run shorter than `min_chunk` with its cheaper free neighbour, else drop it."""
    size = selected.shape[0]
    while True:
        starts, ends = runs_of(selected)
        short = np.flatnonzero(ends - starts < min_chunk)
        if short.shape[0] == 0:
            return
        first, end = int(starts[short[0]]), int(ends[short[0]])
        while end - first < min_chunk:
            left = cost[first - 1] if first > 0 else np.inf
            right = cost[end] if end < size else np.inf
            if not (np.isfinite(left) or np.isfinite(right)):
                break
            if left <= right:
                first -= 1
                selected[first] = True
            else:
                selected[end] = True
                end += 1
            # Growing may touch a neighbouring run: absorb it.
            while first > 0 and selected[first - 1]:
                first -= 1
            while end < size and selected[end]:
                end += 1
        if end - first < min_chunk:
            selected[first:end] = False


def _extend_runs(selected: np.ndarray, cost: np.ndarray, count: int) -> bool:
    """Add `count` slots next to existing runs, cheapest first; False if none is left."""
    for _ in range(count):
        neighbours = np.zeros_like(selected)
        neighbours[1:] |= selected[:-1]
        neighbours[:-1] |= selected[1:]
        candidates = np.where(neighbours & ~selected, cost, np.inf)
        slot = int(np.argmin(candidates))
        if not np.isfinite(candidates[slot]):
            return False
        selected[slot] = True
    return True


def _trim_runs(selected: np.ndarray, cost: np.ndarray, min_chunk: int, count: int) -> None:
    """Drop up to `count` dearest run-end slots, keeping every run at least `min_chunk` long."""
    for _ in range(count):
        starts, ends = runs_of(selected)
        best_slot, best_cost = -1, -np.inf
        for first, end in zip(starts, ends, strict=True):
            length = end - first
            if length > min_chunk or (min_chunk <= 1 and starts.shape[0] > 1):
                for slot in (first, end - 1):
                    if cost[slot] > best_cost:
                        best_slot, best_cost = int(slot), float(cost[slot])
        if best_slot < 0:
            return
        selected[best_slot] = False


def chunked_selection(
    cost: np.ndarray,
    available: np.ndarray,
    work: float,
    min_chunk: int,
    overhead: float,
    running: bool = False,
) -> np.ndarray | None:
    """Cheap slots for an interruptible job: chunks of at least `min_chunk`, overhead per resume.

    Starts from the cheapest slots, grows or drops chunks shorter than `min_chunk`, then adds
    or trims slots at chunk ends until the slots equal the work plus the resume overheads.
    Returns a mask over the window, or None when no such selection was found.
    """
    masked = np.where(available, cost, np.inf)
    duration = math.ceil(work - _EPS)
    if int(available.sum()) < duration:
        return None
    order = np.argsort(masked, kind="stable")
    selected = np.zeros(cost.shape[0], dtype=bool)
    selected[order[:duration]] = True
    if min_chunk <= 1 and overhead <= 0:
        return selected  # free chunking: the cheapest slots are the optimum
    if min_chunk > 1:
        _grow_to_min_chunk(selected, masked, min_chunk)
    for _ in range(duration + 2):
        starts, ends = runs_of(selected)
        if starts.shape[0] == 0:
            return None
        need = slots_needed(work, resumes_of(starts, running), overhead)
        have = int(selected.sum())
        if have == need:
            return selected if bool(np.all(ends - starts >= min(min_chunk, need))) else None
        if have < need:
            if not _extend_runs(selected, masked, need - have):
                return None
        else:
            before = have
            _trim_runs(selected, masked, min_chunk, have - need)
            if int(selected.sum()) == before:
                return None
    return None


def chunk_greedy_selection(
    cost: np.ndarray,
    available: np.ndarray,
    work: float,
    min_chunk: int,
    overhead: float,
    running: bool = False,
) -> np.ndarray | None:
    """Grow a selection by the cheaper per unit of progress of two moves, then trim.

    The moves: extend a chunk by one adjacent slot, or open a new chunk of `min_chunk`
    slots (its progress reduced by the resume overhead). Returns a mask, or None.
    """
    masked = np.where(available, cost, np.inf)
    size = masked.shape[0]
    length = max(min_chunk, 1)
    if size < length:
        return None
    opening = window_sums(np.where(available, cost, 0.0), length)
    opening[~fitting_starts(available.astype(np.int64), 1, length)] = np.inf
    selected = np.zeros(size, dtype=bool)
    progress = 0.0
    for _ in range(size):
        if progress >= work - _EPS:
            break
        neighbours = np.zeros(size, dtype=bool)
        neighbours[1:] |= selected[:-1]
        neighbours[:-1] |= selected[1:]
        extend = np.where(neighbours & ~selected, masked, np.inf)
        extend_slot = int(np.argmin(extend))
        extend_rate = float(extend[extend_slot])
        # A new chunk may neither overlap nor touch the chunks already chosen.
        blocked = np.concatenate(([0], np.cumsum(neighbours | selected)))
        clear = (blocked[length:] - blocked[:-length]) == 0
        open_costs = np.where(clear, opening, np.inf)
        open_start = int(np.argmin(open_costs)) if open_costs.shape[0] else 0
        gain = float(length)
        if selected.any() or (running and open_start != 0):
            gain -= overhead  # opening this chunk is a resume
        open_rate = np.inf
        if gain > 0 and open_costs.shape[0]:
            open_rate = float(open_costs[open_start]) / gain
        if not (np.isfinite(extend_rate) or np.isfinite(open_rate)):
            return None
        if extend_rate <= open_rate:
            selected[extend_slot] = True
            progress += 1
        else:
            selected[open_start : open_start + length] = True
            progress += gain
    starts, ends = runs_of(selected)
    if starts.shape[0] == 0:
        return None
    need = slots_needed(work, resumes_of(starts, running), overhead)
    surplus = int(selected.sum()) - need
    if surplus > 0:
        _trim_runs(selected, masked, min_chunk, surplus)
    starts, ends = runs_of(selected)
    need = slots_needed(work, resumes_of(starts, running), overhead)
    if int(selected.sum()) != need or bool(np.any(ends - starts < min(min_chunk, need))):
        return None
    return selected


def selection_cost(
    score: np.ndarray, selected_slots: np.ndarray, work_with_overhead: float
) -> float:
    """Score of a selection scaled to the run time it holds (a partial slot counts pro rata)."""
    count: int = selected_slots.shape[0]
    if count == 0:
        return 0.0
    return float(score[selected_slots].sum()) * work_with_overhead / count
