"""Joint queue planning in slot units: greedy placement, deadline repair and local search.

1. Greedy: jobs are placed one by one, highest priority and least slack first, each at its
   cheapest position given the GPUs still free. Small queues also try a second order
   (heaviest first) and keep the better plan.
2. Repair: a job with no on-time room evicts the jobs in its cheapest window, then in its
   whole window, then in each window of its length taken exactly; evicted jobs are placed
   again, and the move is kept only if everyone is on time.
3. Improvement: a job far from its capacity-free optimum evicts the jobs there the same
   way, kept only if the total cost falls and nobody turns late; on small queues a
   ruin-and-recreate search then removes a few rival jobs at a time and places them
   again in another order (a fixed number of seeded moves, so results are reproducible).
4. Jobs still without on-time room run as soon as possible after the others, pulled
   forward past jobs that can move without turning late.

Jobs are compared by power x their objective's per-slot score, in carbon units (see
`objective_scores`), so for a queue of carbon jobs the total is proportional to kg CO2e.
An optional deferral penalty makes later slots slightly dearer (see `plan_queue`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.planning import placement
from scheduler.planning.types import SlotJob

ON_TIME, LATE, UNPLACED = "on_time", "late", "unplaced"
_MAX_EVICTIONS = 12
_MAX_REPAIR_EVICTIONS = 40
_REPAIR_WINDOWS = 24
_EPS = 1e-9


def objective_scores(
    intensity: np.ndarray, price: np.ndarray | None, objective: str, lo: int, hi: int
) -> np.ndarray:
    """Per-slot score of an objective in carbon units (g/kWh-like) over the whole grid.

    `cost` rescales price so its mean equals the mean intensity; `balanced` normalises
    intensity and price by their ranges over the job's window [lo, hi), weights them 50/50,
    and maps the result back onto the intensity range. Without prices both fall back to
    carbon.
    """
    if objective == "carbon" or price is None:
        return intensity
    if objective == "cost":
        mean_price = float(np.mean(price))
        scale = float(np.mean(intensity)) / mean_price if mean_price > 0 else 1.0
        return price * scale
    window = slice(max(lo, 0), max(hi, lo + 1))
    c_low, c_high = float(intensity[window].min()), float(intensity[window].max())
    p_low, p_high = float(price[window].min()), float(price[window].max())
    carbon_part = (intensity - c_low) / (c_high - c_low) if c_high > c_low else intensity * 0.0
    price_part = (price - p_low) / (p_high - p_low) if p_high > p_low else price * 0.0
    return c_low + (0.5 * carbon_part + 0.5 * price_part) * max(c_high - c_low, 1.0)


@dataclass
class JointResult:
    """Slots per job (None when unplaced), status per job, GPUs used per slot."""

    slots: list[np.ndarray | None]
    status: list[str]
    gpus_used: np.ndarray
    work_with_overhead: list[float]


class _Queue:
    """Mutable planning state: free GPUs per slot, chosen slots, costs, slot occupants."""

    def __init__(
        self,
        jobs: list[SlotJob],
        intensity: np.ndarray,
        price: np.ndarray | None,
        capacity: np.ndarray,
        defer_penalty: float = 0.0,
    ) -> None:
        self.jobs = jobs
        self.intensity = intensity
        self.price = price
        self.defer_penalty = defer_penalty
        self.n_slots = int(intensity.shape[0])
        self.capacity = capacity.astype(np.int64)
        self.free = self.capacity.copy()
        self.slots: list[np.ndarray | None] = [None] * len(jobs)
        self.cost = np.zeros(len(jobs))
        self.runtime = [float(job.duration) for job in jobs]
        # Slot -> jobs placed there; sparse, as most slots of a long grid hold none.
        self.occupants: defaultdict[int, set[int]] = defaultdict(set)
        self._sums: dict[tuple[str, int], np.ndarray] = {}
        self._scores: dict[int, np.ndarray] = {}

    def end_of(self, index: int) -> int:
        return min(self.jobs[index].deadline, self.n_slots)

    def score(self, index: int) -> np.ndarray:
        job = self.jobs[index]
        if job.objective != "balanced" or self.price is None:
            key = "carbon" if job.objective == "carbon" or self.price is None else "cost"
            cached = self._scores.get(-1 if key == "carbon" else -2)
            if cached is None:
                cached = self._penalised(
                    objective_scores(self.intensity, self.price, key, 0, self.n_slots)
                )
                self._scores[-1 if key == "carbon" else -2] = cached
            return cached
        cached = self._scores.get(index)
        if cached is None:
            cached = self._penalised(
                objective_scores(
                    self.intensity, self.price, "balanced", job.release, self.end_of(index)
                )
            )
            self._scores[index] = cached
        return cached

    def _penalised(self, score: np.ndarray) -> np.ndarray:
        if self.defer_penalty <= 0 or score.shape[0] == 0:
            return score
        # Later slots pay a little more: forecasts grow less certain with lead time, and
        # capacity kept free now is worth less than capacity kept free later.
        step = self.defer_penalty * float(np.std(score))
        penalised: np.ndarray = score + step * np.arange(score.shape[0])
        return penalised

    def sums(self, index: int, length: int) -> np.ndarray:
        job = self.jobs[index]
        shared = job.objective != "balanced" or self.price is None
        key = ("carbon" if job.objective == "carbon" or self.price is None else "cost", length)
        if shared and key in self._sums:
            return self._sums[key]
        result = placement.window_sums(self.score(index), length)
        if shared:
            self._sums[key] = result
        return result

    def select(
        self, index: int, lo: int, end: int, earliest: bool = False
    ) -> tuple[np.ndarray, float, float] | None:
        """Cheapest (or earliest) slots for a job in [lo, end): slots, cost, run time in slots."""
        job = self.jobs[index]
        lo, end = max(lo, 0), min(end, self.n_slots)
        if end - lo < job.duration:
            return None
        score = self.score(index)
        free = self.free[lo:end]
        best: tuple[np.ndarray, float, float] | None = None
        lengths = [job.duration]
        if job.running and job.interruptible and job.overhead > 0:
            lengths.append(placement.slots_needed(job.duration, 1, job.overhead))
        for length in lengths:
            if end - lo < length:
                continue
            if int(free.min()) >= job.gpus:
                fits = np.ones(end - lo - length + 1, dtype=bool)
            else:
                fits = placement.fitting_starts(free, job.gpus, length)
            if length != job.duration:
                fits[0] = False  # a running job pays the resume only when it pauses first
            elif job.running and job.interruptible and job.overhead > 0:
                fits[1:] = False
            if earliest:
                keys = np.arange(fits.shape[0], dtype=np.float64)
            else:
                keys = self.sums(index, length)[lo : lo + fits.shape[0]]
            start = placement.best_start(keys, fits)
            if start < 0:
                continue
            slots = np.arange(lo + start, lo + start + length)
            cost = placement.selection_cost(score, slots, float(length))
            if best is None or cost < best[1] - _EPS:
                best = (slots, cost, float(length))
        if job.interruptible and job.duration >= 2 * max(job.min_chunk, 1):
            window_cost = np.arange(end - lo, dtype=np.float64) if earliest else score[lo:end]
            masks = [
                select_chunks(
                    window_cost,
                    free >= job.gpus,
                    job.duration,
                    job.min_chunk,
                    job.overhead,
                    job.running,
                )
                for select_chunks in self._chunk_rules(job, earliest)
            ]
            for mask in masks:
                if mask is None:
                    continue
                slots = np.flatnonzero(mask) + lo
                starts, _ = placement.runs_of(mask)
                runtime = job.duration + placement.resumes_of(starts, job.running) * job.overhead
                cost = placement.selection_cost(score, slots, runtime)
                if earliest:
                    better = best is None or slots[-1] < best[0][-1]
                else:
                    better = best is None or cost < best[1] - _EPS
                if better:
                    best = (slots, cost, runtime)
        return best

    @staticmethod
    def _chunk_rules(job: SlotJob, earliest: bool) -> list[Callable[..., np.ndarray | None]]:
        # Without a minimum chunk or overhead the cheapest slots are optimal; otherwise the
        # two heuristics fail in different places, so both are tried.
        if earliest or (job.min_chunk <= 1 and job.overhead == 0):
            return [placement.chunked_selection]
        return [placement.chunked_selection, placement.chunk_greedy_selection]

    def ideal_cost(self, index: int) -> float:
        """Lower bound on a job's cost on time, ignoring other jobs."""
        job = self.jobs[index]
        lo, end = job.release, self.end_of(index)
        if end - lo < job.duration:
            return np.inf
        score = self.score(index)[lo:end]
        if job.interruptible:
            return float(np.partition(score, job.duration - 1)[: job.duration].sum())
        return float(self.sums(index, job.duration)[lo : end - job.duration + 1].min())

    def place(self, index: int, chosen: tuple[np.ndarray, float, float]) -> None:
        slots, cost, runtime = chosen
        self.slots[index] = slots
        self.cost[index] = cost * self.jobs[index].power_kw
        self.runtime[index] = runtime
        self.free[slots] -= self.jobs[index].gpus
        for slot in slots.tolist():
            self.occupants[slot].add(index)

    def remove(self, index: int) -> tuple[np.ndarray, float, float] | None:
        slots = self.slots[index]
        if slots is None:
            return None
        previous = (
            slots,
            self.cost[index] / max(self.jobs[index].power_kw, _EPS),
            self.runtime[index],
        )
        self.free[slots] += self.jobs[index].gpus
        for slot in slots.tolist():
            self.occupants[slot].discard(index)
        self.slots[index] = None
        self.cost[index] = 0.0
        return previous

    def on_time(self, index: int) -> bool:
        slots = self.slots[index]
        return slots is not None and int(slots[-1]) < self.jobs[index].deadline

    def place_best(self, index: int) -> bool:
        """Place a job at its cheapest on-time position; False if there is none."""
        job = self.jobs[index]
        chosen = self.select(index, job.release, self.end_of(index))
        if chosen is None:
            return False
        self.place(index, chosen)
        return True

    def place_earliest(self, index: int) -> bool:
        """Place a job where it ends soonest, deadline or not; False if it fits nowhere."""
        chosen = self.select(index, self.jobs[index].release, self.n_slots, earliest=True)
        if chosen is None:
            return False
        self.place(index, chosen)
        return True

    def evict_and_place(
        self,
        index: int,
        target: np.ndarray,
        need_gain: bool,
        late: bool = False,
        exact: bool = False,
    ) -> bool:
        """Free `target` for a job by re-placing its occupants; keep it only if it pays.

        For a `late` job it pays when the job ends sooner; otherwise when the job is on
        time and (with `need_gain`) the total cost falls. Evicted jobs must stay on time.
        """
        in_target = (self.occupants.get(slot, ()) for slot in target.tolist())
        occupants = set().union(*in_target) - {index}
        limit = _MAX_EVICTIONS if need_gain else _MAX_REPAIR_EVICTIONS
        # Evicting just enough light jobs is tried first: with many GPUs a window has far
        # more occupants than need to move.
        tried: list[set[int]] = []
        for evicted in (self._just_enough(index, target, occupants), occupants):
            if not evicted or len(evicted) > limit or evicted in tried:
                continue
            tried.append(evicted)
            if self._move(index, target, evicted, need_gain, late, exact):
                return True
        return False

    def _just_enough(self, index: int, target: np.ndarray, occupants: set[int]) -> set[int]:
        """Lightest occupants whose removal frees the job's GPUs in every target slot."""
        job = self.jobs[index]
        need = job.gpus - self.free[target]
        own = self.slots[index]
        if own is not None:
            need = need - job.gpus * np.isin(target, own)
        chosen: set[int] = set()
        by_weight = sorted(occupants, key=lambda k: (self.jobs[k].power_kw, -self.jobs[k].slack))
        for other in by_weight:
            if not np.any(need > 0):
                break
            other_slots = self.slots[other]
            if other_slots is None:
                continue  # not placed, so it holds none of the target slots
            covered = np.isin(target, other_slots)
            if np.any(covered & (need > 0)):
                chosen.add(other)
                need = need - self.jobs[other].gpus * covered
        return chosen if not np.any(need > 0) else set()

    def _move(
        self,
        index: int,
        target: np.ndarray,
        evicted: set[int],
        need_gain: bool,
        late: bool,
        exact: bool,
    ) -> bool:
        movers = sorted(evicted, key=self._order_key)
        before_cost = float(self.cost[movers].sum() + self.cost[index])
        own = self.slots[index]
        before_end = int(own[-1]) if own is not None else None
        saved = {k: self.remove(k) for k in [index, *movers]}
        if exact:
            ok = bool(np.all(self.free[target] >= self.jobs[index].gpus))
            if ok:
                runtime = float(target.shape[0])
                cost = placement.selection_cost(self.score(index), target, runtime)
                self.place(index, (target, cost, runtime))
        elif late:
            ok = self.place_earliest(index)
            placed = self.slots[index]
            ok = ok and placed is not None and (before_end is None or int(placed[-1]) < before_end)
        else:
            ok = self.place_best(index)
        for mover in movers:
            if not ok:
                break
            ok = self.place_best(mover)
        if ok and need_gain:
            ok = float(self.cost[movers].sum() + self.cost[index]) < before_cost - 1e-6
        if ok:
            return True
        for k in [index, *movers]:
            self.remove(k)
        for k in [index, *movers]:
            previous = saved[k]
            if previous is not None:
                self.place(k, previous)
        return False

    def ideal_target(self, index: int) -> np.ndarray | None:
        """Slots of a job's cheapest on-time position with only the base capacity in mind."""
        kept = self.free
        self.free = self.capacity
        try:
            chosen = self.select(index, self.jobs[index].release, self.end_of(index))
        finally:
            self.free = kept
        return None if chosen is None else chosen[0]

    def _order_key(self, index: int) -> tuple[int, int, int]:
        job = self.jobs[index]
        return (-job.priority, job.slack, job.order)


def _greedy(
    jobs: list[SlotJob],
    intensity: np.ndarray,
    price: np.ndarray | None,
    capacity: np.ndarray,
    order: list[int],
    defer_penalty: float = 0.0,
) -> tuple[_Queue, list[int]]:
    queue = _Queue(jobs, intensity, price, capacity, defer_penalty)
    unplaced = [index for index in order if not queue.place_best(index)]
    return queue, unplaced


def _repair(queue: _Queue, index: int, stop_at: float) -> bool:
    """Make room before its deadline for a job that did not fit, moving others."""
    job = queue.jobs[index]
    end = queue.end_of(index)
    if end - job.release < job.duration or time.perf_counter() > stop_at:
        return False
    # Its cheapest window first, then its whole window (everything that competes for it),
    # then each window of its duration in order of cost, taken exactly.
    first = max(job.release, 0)
    targets: list[tuple[np.ndarray | None, bool]] = [
        (queue.ideal_target(index), False),
        (np.arange(first, end), False),
    ]
    if job.duration < end - first:
        sums = queue.sums(index, job.duration)[first : end - job.duration + 1]
        for start in np.argsort(sums, kind="stable")[:_REPAIR_WINDOWS]:
            targets.append((np.arange(first + start, first + start + job.duration), True))
    for target, exact in targets:
        if time.perf_counter() > stop_at:
            return False
        if target is not None and queue.evict_and_place(
            index, target, need_gain=False, exact=exact
        ):
            return True
    return False


def _improve(queue: _Queue, order: list[int], stop_at: float) -> int:
    """One pass of eviction moves toward capacity-free optima; returns the moves accepted."""
    placed = [i for i in order if queue.slots[i] is not None]
    if not placed:
        return 0
    ideal = np.array([queue.ideal_cost(i) * queue.jobs[i].power_kw for i in placed])
    loss = queue.cost[placed] - ideal
    accepted = 0
    for rank in np.argsort(-loss, kind="stable"):
        if loss[rank] <= 1e-6 or time.perf_counter() > stop_at:
            break
        index = placed[rank]
        if queue.cost[index] - ideal[rank] <= 1e-6:
            continue
        target = queue.ideal_target(index)
        if target is not None and queue.evict_and_place(index, target, need_gain=True):
            accepted += 1
    return accepted


def _ruin_and_recreate(queue: _Queue, stop_at: float, iterations: int, seed: int = 0) -> int:
    """Remove a few jobs that compete for the same hours and place them again in another
    order; keep the result when it costs no more and everyone stays on time."""
    rng = np.random.default_rng(seed)
    accepted = 0
    placed = [i for i in range(len(queue.jobs)) if queue.slots[i] is not None]
    if len(placed) < 2:
        return 0
    # With every job at its capacity-free optimum there is nothing to gain.
    ideal = {i: queue.ideal_cost(i) * queue.jobs[i].power_kw for i in placed}
    if all(queue.cost[i] <= ideal[i] + 1e-6 for i in placed):
        return 0
    for _ in range(iterations):
        if time.perf_counter() > stop_at:
            break
        pivot = placed[int(rng.integers(len(placed)))]
        job = queue.jobs[pivot]
        lo, hi = job.release, queue.end_of(pivot)
        rivals = [
            i for i in placed if i != pivot and queue.jobs[i].release < hi and queue.end_of(i) > lo
        ]
        count = min(len(rivals), int(rng.integers(1, _MAX_EVICTIONS)))
        group = [pivot, *(rivals[k] for k in rng.choice(len(rivals), count, replace=False))]
        before = float(queue.cost[group].sum())
        saved = {k: queue.remove(k) for k in group}
        rule = int(rng.integers(3))
        if rule == 0:
            group.sort(key=lambda i: -queue.jobs[i].power_kw * queue.jobs[i].duration)
        elif rule == 1:
            group.sort(key=queue._order_key)
        else:
            rng.shuffle(group)
        ok = True
        for index in group:
            if not queue.place_best(index):
                ok = False
                break
        if ok and float(queue.cost[group].sum()) <= before + 1e-9:
            accepted += 1
            continue
        for index in group:
            queue.remove(index)
        for index in group:
            previous = saved[index]
            if previous is not None:
                queue.place(index, previous)
    return accepted


# Small queues are cheap to plan, so several greedy orders are tried and the best kept.
_MULTI_ORDER_LIMIT = 200_000
_RUIN_ITERATIONS_PER_JOB = 30


def plan_queue(
    jobs: list[SlotJob],
    intensity: np.ndarray,
    price: np.ndarray | None,
    capacity: np.ndarray,
    improve_budget_s: float = 0.5,
    search_iterations: int | None = None,
    defer_penalty: float = 0.0,
) -> JointResult:
    """Plan a queue jointly on a slot grid; capacity is the GPUs free per slot.

    Repair and improvement stop `improve_budget_s` seconds after the first greedy plan; the
    ruin-and-recreate search (small queues only) also after `search_iterations` moves
    (default 30 per job), which makes the result reproducible whenever the time budget is
    not the limit.
    `defer_penalty` adds that fraction of the score's standard deviation (over the grid)
    per slot of delay to every slot, so that a job waits only for a gain larger than that.
    """
    intensity = np.asarray(intensity, dtype=np.float64)
    stop_at: float | None = None
    probe = _Queue(jobs, intensity, price, capacity, defer_penalty)
    by_slack = sorted(range(len(jobs)), key=probe._order_key)
    orders = [by_slack]
    # Every move below re-places other jobs: a job planned alone (a submission around a
    # fixed queue) has its best plan from the greedy pass.
    alone = len(jobs) == 1
    if not alone and len(jobs) * intensity.shape[0] <= _MULTI_ORDER_LIMIT and improve_budget_s > 0:
        # Heavy jobs first, then the tightest: they lose most when pushed out of a window.
        orders.append(
            sorted(
                range(len(jobs)),
                key=lambda i: (
                    -jobs[i].priority,
                    -jobs[i].power_kw * jobs[i].duration,
                    jobs[i].slack,
                    jobs[i].order,
                ),
            )
        )
    best: tuple[_Queue, list[int]] | None = None
    for order in orders:
        queue, unplaced = _greedy(jobs, intensity, price, capacity, order, defer_penalty)
        if stop_at is None:
            # The budget is for repair and improvement, counted once the first plan exists.
            stop_at = time.perf_counter() + improve_budget_s
        # Repair: make room before their deadlines for jobs that did not fit.
        still_unplaced = []
        for index in unplaced:
            if alone or not _repair(queue, index, stop_at):
                still_unplaced.append(index)
        while not alone and time.perf_counter() < stop_at and _improve(queue, order, stop_at):
            pass
        score = (len(still_unplaced), float(queue.cost.sum()))
        if best is None or score < (len(best[1]), float(best[0].cost.sum())):
            best = (queue, still_unplaced)
    assert best is not None and stop_at is not None
    queue = best[0]
    if len(orders) > 1:
        if search_iterations is None:
            search_iterations = _RUIN_ITERATIONS_PER_JOB * len(jobs)
        _ruin_and_recreate(queue, stop_at, search_iterations)

    # What still has no on-time place runs as soon as possible after the rest.
    status = [ON_TIME] * len(jobs)
    for index in by_slack:
        if queue.slots[index] is not None:
            continue
        job = queue.jobs[index]
        chosen = queue.select(index, job.release, queue.n_slots, earliest=True)
        if chosen is None:
            status[index] = UNPLACED
            continue
        queue.place(index, chosen)
        if not alone and not queue.on_time(index) and time.perf_counter() < stop_at:
            # Pull it forward past jobs that can move without turning late.
            kept = queue.free
            queue.free = queue.capacity
            try:
                target = queue.select(index, job.release, queue.n_slots, earliest=True)
            finally:
                queue.free = kept
            placed = queue.slots[index]
            if target is not None and placed is not None and target[0][-1] < placed[-1]:
                queue.evict_and_place(index, target[0], need_gain=False, late=True)
        status[index] = LATE if not queue.on_time(index) else ON_TIME
    gpus_used = queue.capacity - queue.free
    return JointResult(queue.slots, status, gpus_used, queue.runtime)
