"""Exact plans for small queues: a MILP solved by HiGHS through `scipy.optimize.milp`.

Minimises kg CO2e (power x intensity over the chosen slots) subject to: every job runs
its whole duration from its release, GPU capacity per slot, one contiguous window for a
non-interruptible job (binary start variables), any slots for an interruptible one
(binary slot variables; exact for one-slot minimum chunks and no resume overhead), and
deadlines: hard, or with `allow_late` soft, each late job costing `late_penalty_kg`.
Meant for benchmarks and tests (hundreds to a few thousand binaries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from scheduler.planning.types import SlotJob


@dataclass
class OptimalResult:
    """Slots per job, the objective in kg CO2e (lateness penalties excluded), late jobs."""

    slots: list[np.ndarray]
    kg_co2e: float
    late: int
    status: str


def optimal_slots(
    jobs: Sequence[SlotJob],
    intensity: np.ndarray,
    capacity: np.ndarray | int,
    *,
    slot_hours: float = 1.0,
    allow_late: bool = False,
    late_penalty_kg: float = 1e4,
    time_limit_s: float = 60.0,
) -> OptimalResult | None:
    """Optimal slots per job, or None when no plan exists (or none was found in time)."""
    n_slots = int(np.asarray(intensity).shape[0])
    cap = np.full(n_slots, capacity) if np.isscalar(capacity) else np.asarray(capacity)
    kg_per_slot = np.asarray(intensity, dtype=np.float64) * slot_hours / 1000.0
    costs: list[float] = []
    rows: list[int] = []  # (constraint row, variable, coefficient) triplets
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    # Per job: list of (variable, slots it occupies, late?) to read the solution back.
    layout: list[list[tuple[int, np.ndarray]]] = []
    late_vars: list[int] = []
    capacity_row0 = 0
    row = n_slots  # rows 0..n_slots-1 are the capacity rows

    def add(row_index: int, variable: int, coefficient: float) -> None:
        rows.append(row_index)
        cols.append(variable)
        vals.append(coefficient)

    for job in jobs:
        end = n_slots if allow_late else min(job.deadline, n_slots)
        entries: list[tuple[int, np.ndarray]] = []
        if not job.interruptible:
            for start in range(max(job.release, 0), end - job.duration + 1):
                variable = len(costs)
                occupied = np.arange(start, start + job.duration)
                late = start + job.duration > job.deadline
                costs.append(
                    job.power_kw * float(kg_per_slot[occupied].sum())
                    + (late_penalty_kg if late else 0.0)
                )
                for taken in occupied:
                    add(capacity_row0 + int(taken), variable, job.gpus)
                add(row, variable, 1.0)
                entries.append((variable, occupied))
            lower.append(1.0)
            upper.append(1.0)
            row += 1
        else:
            slot_vars = []
            for slot in range(max(job.release, 0), end):
                variable = len(costs)
                costs.append(job.power_kw * float(kg_per_slot[slot]))
                add(capacity_row0 + slot, variable, job.gpus)
                add(row, variable, 1.0)
                entries.append((variable, np.array([slot])))
                slot_vars.append((variable, slot))
            lower.append(float(job.duration))
            upper.append(float(job.duration))
            row += 1
            late_slots = [(v, s) for v, s in slot_vars if s >= job.deadline]
            if late_slots:
                flag = len(costs)
                costs.append(late_penalty_kg)
                late_vars.append(flag)
                for variable, _ in late_slots:
                    add(row, variable, 1.0)
                    add(row, flag, -1.0)
                    lower.append(-np.inf)
                    upper.append(0.0)
                    row += 1
        if not entries:
            return None
        layout.append(entries)

    n_vars = len(costs)
    matrix = coo_matrix((vals, (rows, cols)), shape=(row, n_vars)).tocsr()
    row_lower = np.concatenate((np.full(n_slots, -np.inf), np.array(lower)))
    row_upper = np.concatenate((cap.astype(np.float64), np.array(upper)))
    result = milp(
        c=np.array(costs),
        constraints=LinearConstraint(matrix, row_lower, row_upper),
        integrality=np.ones(n_vars),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit_s},
    )
    if result.x is None:
        return None
    chosen = result.x > 0.5
    plan_slots = []
    for entries in layout:
        picked = [occupied for variable, occupied in entries if chosen[variable]]
        plan_slots.append(np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64))
    kg = sum(
        job.power_kw * float(kg_per_slot[slots].sum())
        for job, slots in zip(jobs, plan_slots, strict=True)
    )
    late_jobs = sum(
        1
        for job, slots in zip(jobs, plan_slots, strict=True)
        if slots.shape[0] and slots[-1] >= job.deadline
    )
    status = "optimal" if result.status == 0 else "time limit"
    return OptimalResult(plan_slots, kg, late_jobs, status)
