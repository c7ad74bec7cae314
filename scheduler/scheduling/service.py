"""Live scheduling: estimates, placing jobs in low-carbon windows, and the replanning tick.

The planner (`scheduler/planning/`) is pure; this module feeds it from the database: the
zone's carbon signal (with fallbacks, see `scheduler/carbon/service.py`), its tariff, the
GPU capacity of live workers, and the jobs already planned or running. Plans use 15-minute
slots starting at "now", so a job whose best window is now can start at once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from scheduler.carbon import service as carbon
from scheduler.carbon.models import Tariff
from scheduler.carbon.providers.base import CarbonProvider
from scheduler.carbon.providers.factory import make_provider, plan_for
from scheduler.datasets.service import audio_minutes, require_dataset
from scheduler.energy.models import JobAttempt
from scheduler.jobs import lifecycle
from scheduler.jobs.bases import resolve_base
from scheduler.jobs.models import Job
from scheduler.jobs.states import QUEUED, JobState
from scheduler.planning.estimate import EstimateModel, config_signature
from scheduler.planning.memory import MemoryModel
from scheduler.planning.planner import plan
from scheduler.planning.tariff import TariffSchedule, spain_2_0td_example
from scheduler.planning.types import JobPlan, PlanJob, RunningJob, SlotGrid
from scheduler.scheduling import occupancy
from scheduler.settings import Settings
from scheduler.telemetry.memory import fitting_floor, job_need, memory_model, worker_mib
from scheduler.workers import fleet
from worker.training.config import FinetuneConfig

if TYPE_CHECKING:
    from scheduler.workers.models import Worker

SLOT_MINUTES = 15
MAX_HORIZON = timedelta(days=7)
# Interruptible jobs: shortest chunk worth resuming for, and the cost of each resume
# (reload model and data, warm up) counted as extra run time.
MIN_CHUNK_MINUTES = 30.0
RESUME_OVERHEAD_MINUTES = 5.0
# Built-in tariffs, used until an operator sets one with PUT /v1/zones/{zone}/tariff.
DEFAULT_TARIFFS: dict[str, Callable[[], TariffSchedule]] = {"ES": spain_2_0td_example}


def _slot_rounding(planned_s: float, estimated_s: float) -> timedelta:
    """Time a run gains when planned as whole slots (and at least a minute).

    A deadline of "now + run time" (`max_delay_minutes: 0`) must stay feasible on the
    slot grid: the job ends when its estimated run time is over, not at the end of the
    last slot it holds.
    """
    slot_s = SLOT_MINUTES * 60
    held_s = math.ceil(planned_s / slot_s - 1e-9) * slot_s
    return timedelta(seconds=max(held_s - max(estimated_s, 0.0), 0.0))


def promote_due(session: Session, zone: str, *, now: datetime) -> int:
    """Move the zone's scheduled jobs whose planned start has come to `ready`.

    Called when a worker finds nothing to claim, so a job whose window opened between two
    replanning ticks never waits while a GPU is idle. The UPDATE is conditional on the
    state, so concurrent claims promote each job once.
    """
    promoted = lifecycle.transition_where(
        session,
        source=JobState.SCHEDULED,
        target=JobState.READY,
        where=[
            Job.zone == zone,
            Job.planned_start <= now,
            (Job.not_before.is_(None)) | (Job.not_before <= now),
        ],
        reason="planned start reached",
        now=now,
        zone=zone,
    )
    return len(promoted)


def burn_in_seconds(config: dict) -> float:
    """Expected run time of a burn-in job: matmul FLOPs at a modest CPU rate, plus sleeps."""
    size, steps = int(config.get("size", 256)), int(config.get("steps", 200))
    flops_per_step = 2.0 * size**3
    return steps * (flops_per_step / 2e10 + float(config.get("step_sleep_s", 0.0))) + 10.0


class Scheduling:
    """The scheduling context shared by request handlers and maintenance ticks."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock
        self.provider: CarbonProvider = make_provider(
            settings.carbon_provider,
            token=settings.carbon_token,
            username=settings.carbon_username,
            password=settings.carbon_password,
            trace_path=str(settings.carbon_trace_path) if settings.carbon_trace_path else None,
            clock=clock,
            plan=plan_for(settings.carbon_plan, settings.carbon_provider),
            base_url=settings.carbon_base_url,
        )
        self.estimates = EstimateModel()
        self._learned_history = False
        # Submissions read the zone's queue, signal and tariff from version-checked caches
        # (scheduling/occupancy.py); off, they read everything (tests compare the two).
        self.use_caches = True

    @property
    def default_zone(self) -> str:
        return self.settings.zone

    def validate_submission(self, session: Session, job: Job) -> None:
        """Checks that need the database: the dataset must exist and belong to the team, and
        a `job:<id>` base must be a succeeded fine-tune of the team (this sets `job.base`)."""
        if job.kind == "gpt-sovits-finetune":
            require_dataset(session, job.team_id, job.dataset["id"])
            job.base = resolve_base(session, job.team_id, job.config)

    # -- estimates ---------------------------------------------------------------------

    def _gpu_model(self, session: Session, zone: str) -> str:
        """The GPU model jobs in the zone will most likely get (the fleet's most common)."""
        return fleet.most_common_gpu(session, zone, self.clock()) or "A100"

    def observe_measurement(
        self, session: Session, job: Job, *, duration_s: float, kwh: float, gpu_model: str
    ) -> None:
        """Learn from a finished fine-tune: later estimates of the same config and GPU model
        move toward what was measured."""
        if job.kind != "gpt-sovits-finetune" or duration_s <= 0 or kwh < 0:
            return
        config = FinetuneConfig.model_validate(job.config)
        minutes = audio_minutes(session, job.dataset["id"]) or 1.0
        signature = config_signature(config, minutes, job.gpus)
        self.estimates.observe(signature, gpu_model, duration_s, kwh)

    def _learn_from_history(self, session: Session) -> None:
        """Once per process: replay the measurements of fine-tunes that already succeeded."""
        if self._learned_history:
            return
        self._learned_history = True
        finished = session.scalars(
            select(Job).where(
                Job.kind == "gpt-sovits-finetune",
                Job.state == JobState.SUCCEEDED,
                Job.actual_kwh.is_not(None),
            )
        )
        for job in finished:
            rows = list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)))
            seconds = sum(
                (row.ended_at - row.started_at).total_seconds() for row in rows if row.ended_at
            )
            hardware = ((rows[-1].report or {}).get("hardware") or {}) if rows else {}
            self.observe_measurement(
                session,
                job,
                duration_s=seconds,
                kwh=job.actual_kwh or 0.0,
                gpu_model=hardware.get("gpu_model") or "CPU",
            )

    def estimate(self, session: Session, job: Job, *, now: datetime) -> None:
        """Fill the job's expected duration (s) and energy (kWh)."""
        if job.kind == "burn-in":
            seconds = burn_in_seconds(job.config)
            job.estimated_duration_s = seconds
            job.estimated_kwh = job.gpus * self.settings.default_gpu_watts * seconds / 3.6e6
            return
        self._learn_from_history(session)
        # A dataset of unknown length is estimated as the typical one-minute fine-tune.
        minutes = audio_minutes(session, job.dataset["id"]) or 1.0
        config = FinetuneConfig.model_validate(job.config)
        estimate = self.estimates.estimate(
            config, minutes, job.gpus, self._gpu_model(session, job.zone)
        )
        job.estimated_duration_s = estimate.duration_minutes * 60.0
        job.estimated_kwh = estimate.kwh

    # -- signal, tariff, capacity ------------------------------------------------------

    def tariff(self, session: Session, zone: str) -> TariffSchedule | None:
        """The zone's tariff: set by an operator, else a built-in example, else none."""
        stored = session.get(Tariff, zone)
        if stored is not None:
            return TariffSchedule.model_validate(stored.schedule)
        factory = DEFAULT_TARIFFS.get(zone)
        return factory() if factory else None

    def grid(
        self, session: Session, zone: str, *, now: datetime, hours: float
    ) -> tuple[SlotGrid, carbon.Signal]:
        """A slot grid from `now` with the zone's intensity and prices."""
        hours = occupancy.clamp_hours(hours)
        signal = carbon.planning_signal(session, self.provider, zone, now=now, hours=hours + 1)
        tariff = self.tariff(session, zone)
        return occupancy.slot_grid(signal, tariff, now=now, hours=hours), signal

    def capacity(self, session: Session, zone: str, now: datetime) -> int:
        """GPUs of live workers in the zone, or the configured default when none registered."""
        return fleet.capacity_by_zone(session, now).get(zone) or self.settings.default_capacity_gpus

    def capacity_for_base(
        self, session: Session, zone: str, base: str, now: datetime, memory_floor: int = 0
    ) -> int:
        """GPUs of live workers in the zone that hold `base` (and have GPUs of at least
        `memory_floor` MiB); with no live worker there at all, the configured default (the
        fleet is assumed to come with every base)."""
        held = fleet.base_capacity(session, zone, base, now, memory_floor)
        return self.capacity(session, zone, now) if held is None else held

    def memory_floor(
        self,
        session: Session,
        job: Job,
        now: datetime,
        model: MemoryModel | None = None,
        workers: list[Worker] | None = None,
    ) -> int:
        """The smallest GPU memory of the zone's live workers that holds the job's need (0:
        every worker does); see scheduler/telemetry/memory.py."""
        if workers is None:
            workers = [w for w in fleet.alive_workers(session, now) if w.zone == job.zone]
        return fitting_floor(map(worker_mib, workers), job_need(session, job, model))

    def _wait_for_base(self, job: Job, memory_floor: int = 0) -> JobState:
        """No live worker holds the job's base (or its memory need): no plan, and the
        reason says so."""
        job.planned_intervals = []
        job.planned_start = job.planned_end = None
        kg = job.estimated_kwh * carbon.FALLBACK_G_PER_KWH / 1000.0
        job.estimated_kg_co2e = job.run_now_kg_co2e = kg
        job.state_reason = (
            f"waiting for a worker holding base '{job.base}': no live worker in zone "
            f"{job.zone} holds it"
        )
        if memory_floor:
            job.state_reason = (
                f"waiting for a worker with {memory_floor} MiB of GPU memory per device "
                f"holding base '{job.base}': no live worker in zone {job.zone} has it"
            )
        return JobState.SCHEDULED

    # -- planning ----------------------------------------------------------------------

    def _plan_job(self, job: Job, now: datetime) -> PlanJob:
        progress = job.progress or {}
        done = 0.0
        if progress.get("total_steps"):
            done = min(float(progress.get("step") or 0) / float(progress["total_steps"]), 0.95)
        estimated_s = job.estimated_duration_s * (1 - done)
        duration_s = max(estimated_s, 60.0)
        hours = max(job.estimated_duration_s, 60.0) / 3600.0
        earliest = now
        if job.not_before is not None and job.state != JobState.RUNNING:
            earliest = max(now, job.not_before)
        return PlanJob(
            id=job.id,
            duration_minutes=duration_s / 60.0,
            power_kw=job.estimated_kwh / hours,
            gpus=job.gpus,
            earliest_start=earliest,
            deadline=job.deadline + _slot_rounding(duration_s, estimated_s),
            interruptible=job.interruptible,
            objective=job.objective,  # type: ignore[arg-type]  # validated as Objective at submit
            priority=job.priority,
            min_chunk_minutes=MIN_CHUNK_MINUTES if job.interruptible else 0.0,
            resume_overhead_minutes=RESUME_OVERHEAD_MINUTES if job.interruptible else 0.0,
            running=job.state == JobState.RUNNING,
        )

    def _apply(self, job: Job, job_plan: JobPlan, signal: carbon.Signal, now: datetime) -> JobState:
        """Write a plan onto a job; returns the waiting state it implies."""
        intervals = job_plan.intervals or [(now, now + timedelta(seconds=job.estimated_duration_s))]
        job.planned_intervals = [[a.isoformat(), b.isoformat()] for a, b in intervals]
        job.planned_start, job.planned_end = intervals[0][0], intervals[-1][1]
        kg = job_plan.kg_co2e or job.estimated_kwh * carbon.FALLBACK_G_PER_KWH / 1000.0
        job.estimated_kg_co2e = kg
        job.run_now_kg_co2e = kg + max(job_plan.saving_kg, 0.0)
        note = (
            ""
            if signal.origin in ("provider", "stored_forecast")
            else f" [signal: {signal.reason}]"
        )
        job.state_reason = job_plan.explanation + note
        return JobState.READY if job.planned_start <= now else JobState.SCHEDULED

    def _hours_needed(self, jobs: Sequence[Job], now: datetime) -> float:
        latest = max(
            max(j.deadline, now + timedelta(seconds=2 * j.estimated_duration_s)) for j in jobs
        )
        return (latest - now).total_seconds() / 3600 + 1

    def _running(
        self, session: Session, zone: str, now: datetime, exclude: set[str]
    ) -> list[RunningJob]:
        running = []
        query = select(Job).where(Job.zone == zone, Job.state == JobState.RUNNING)
        for job in session.scalars(query):
            if job.id in exclude:
                continue
            until = max(job.planned_end or now, now + timedelta(minutes=SLOT_MINUTES))
            running.append(RunningJob(job.id, job.gpus, until))
        return running

    def place_new_job(self, session: Session, job: Job, *, now: datetime) -> tuple[JobState, str]:
        """Plan one new job around what is already planned; returns its state and reason."""
        if self.use_caches:
            return occupancy.place_new_job(self, session, job, now=now)
        floor = self.memory_floor(session, job, now)
        held = self.capacity_for_base(session, job.zone, job.base or "none", now, floor)
        if held == 0:
            return self._wait_for_base(job, floor), job.state_reason
        grid, signal = self.grid(session, job.zone, now=now, hours=self._hours_needed([job], now))
        free = np.full(
            grid.n_slots, min(held, self.capacity(session, job.zone, now)), dtype=np.int64
        )
        # Only the windows of other queued jobs matter here, not whole rows.
        others = session.execute(
            select(Job.planned_intervals, Job.gpus).where(
                Job.zone == job.zone,
                Job.state.in_(QUEUED),
                Job.id != job.id,
                Job.planned_end > now,
            )
        )
        for intervals, gpus in others:
            for start, end in intervals or []:
                first = max(grid.floor_index(datetime.fromisoformat(start)), 0)
                last = min(grid.ceil_index(datetime.fromisoformat(end)), grid.n_slots)
                if first < last:  # a window that ended before the grid would index from the back
                    free[first:last] -= gpus
        result = plan(
            grid,
            [self._plan_job(job, now)],
            np.maximum(free, 0),
            self._running(session, job.zone, now, set()),
            now=now,
        )
        state = self._apply(job, result.jobs[job.id], signal, now)
        return state, job.state_reason

    def place_in_best_zone(
        self, session: Session, job: Job, zones: Sequence[str], *, now: datetime
    ) -> tuple[JobState, str]:
        """Place a job in whichever of `zones` gives it the best plan, zone and window
        chosen together: on time first (each zone's GPUs and queue as they are), then the
        lowest expected kg CO2e. Sets `first_zone_kg_co2e` for the saving against the
        first zone, and says both in the reason."""
        outcomes = []
        for rank, zone in enumerate(zones):
            job.zone = zone
            state, reason = self.place_new_job(session, job, now=now)
            on_time = not reason.startswith(("infeasible", "waits: no free GPUs"))
            outcomes.append((not on_time, job.estimated_kg_co2e, rank, zone))
        first_kg = outcomes[0][1]
        best = min(outcomes)
        job.zone = best[3]
        state, reason = self.place_new_job(session, job, now=now)
        job.first_zone_kg_co2e = first_kg
        if job.zone != zones[0]:
            change = 100.0 * (first_kg - job.estimated_kg_co2e) / first_kg if first_kg else 0.0
            reason = f"{reason}; in zone {job.zone} ({-change:+.0f} % CO2e vs {zones[0]})"
            job.state_reason = reason
        return state, reason

    def replan_zone(
        self, session: Session, zone: str, *, now: datetime, promote_only: bool = False
    ) -> int:
        """Plan the zone's whole queue jointly and move jobs whose window opened to `ready`.

        With `promote_only` (a replan because capacity grew), only waiting jobs that the
        new plan starts now are changed (to `ready`): such a replan brings work forward.
        """
        waiting = list(
            session.scalars(
                select(Job).where(
                    Job.zone == zone,
                    Job.state.in_(QUEUED) | ((Job.state == JobState.RUNNING) & Job.interruptible),
                )
            )
        )
        if not waiting:
            return 0
        grid, signal = self.grid(session, zone, now=now, hours=self._hours_needed(waiting, now))
        running = self._running(session, zone, now, {j.id for j in waiting})
        plans, unheld = self._plan_by_base(session, zone, grid, waiting, running, now)
        for job in waiting:
            if job.id in unheld:
                if job.state != JobState.RUNNING:
                    target = self._wait_for_base(job, unheld[job.id])
                    if target != job.state:
                        lifecycle.transition(session, job, target, reason=job.state_reason, now=now)
                continue
            job_plan = plans[job.id]
            if promote_only and (
                job.state in (JobState.READY, JobState.RUNNING)
                or not job_plan.intervals
                or job_plan.intervals[0][0] > now
            ):
                # Only jobs the new plan starts now change; the rest keep plan and reason.
                continue
            if job.state == JobState.RUNNING:
                # An interruptible job the plan does not keep running now is paused by its
                # worker at the next heartbeat (checkpoint, release, resume later).
                job.pause_requested = bool(job_plan.slots) and job_plan.slots[0] > 0
                continue
            target = self._apply(job, job_plan, signal, now)
            lifecycle.move_reservation(session, job, now=now)
            if target != job.state:
                lifecycle.transition(session, job, target, reason=job.state_reason, now=now)
        return len(waiting)

    def _plan_by_base(
        self,
        session: Session,
        zone: str,
        grid: SlotGrid,
        waiting: Sequence[Job],
        running: Sequence[RunningJob],
        now: datetime,
    ) -> tuple[dict[str, JobPlan], dict[str, int]]:
        """Plans for the queue, one group per base and memory floor: each group gets the
        GPUs of workers that hold its base and its memory need, less what earlier groups
        took. Returns the plans and, for jobs no live worker can run, their memory floor.
        With one base and workers that hold every need (the usual case) this is one joint
        plan over the whole capacity."""
        total = self.capacity(session, zone, now)
        used = np.zeros(grid.n_slots, dtype=np.int64)
        plans: dict[str, JobPlan] = {}
        unheld: dict[str, int] = {}
        groups: dict[tuple[str, int], list[Job]] = {}
        model = memory_model(session)
        workers = [w for w in fleet.alive_workers(session, now) if w.zone == zone]
        for job in waiting:
            floor = self.memory_floor(session, job, now, model, workers)
            groups.setdefault((job.base or "none", floor), []).append(job)
        # Largest memory floor first: those jobs can run on fewer workers.
        for base, floor in sorted(groups, key=lambda key: (-key[1], key[0])):
            group = groups[(base, floor)]
            held = self.capacity_for_base(session, zone, base, now, floor)
            if held == 0:
                unheld.update((job.id, floor) for job in group)
                continue
            capacity = np.maximum(np.minimum(held, total - used), 0)
            result = plan(grid, [self._plan_job(j, now) for j in group], capacity, running, now=now)
            for job in group:
                plans[job.id] = result.jobs[job.id]
                for slot in plans[job.id].slots:
                    if 0 <= slot < grid.n_slots:
                        used[slot] += job.gpus
        return plans, unheld

    def replan_now(
        self, session: Session, zone: str, *, now: datetime, live_worker: Worker | None = None
    ) -> bool:
        """Re-plan a zone at once after a change that frees or adds capacity (a job ended,
        was cancelled or released, a worker joined), instead of at the next tick.

        On PostgreSQL it takes the replan tick's advisory lock for this transaction and
        skips when another replica holds it: that replan, or the next, sees the change,
        and a claim promotes due jobs meanwhile (see `promote_due`). Returns whether it ran
        (or had nothing to do: see `occupancy.replan_has_nothing_to_do`).
        """
        if occupancy.replan_has_nothing_to_do(self, session, zone, now, live_worker):
            return True
        if session.get_bind().dialect.name == "postgresql":
            key = zlib.crc32(b"greenwindow:replan")
            if not session.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}
            ).scalar():
                return False
        self.replan_zone(session, zone, now=now, promote_only=True)
        return True

    def zones_to_plan(self, session: Session) -> set[str]:
        """Zones with jobs waiting or running, plus the default zone."""
        zones = set(
            session.scalars(
                select(Job.zone).where(Job.state.in_((*QUEUED, JobState.RUNNING))).distinct()
            )
        )
        return zones | {self.settings.zone}

    def accounting_signal(
        self, session: Session, zone: str, start: datetime, end: datetime
    ) -> carbon.Signal:
        """Intensity over a past window for carbon accounting (see carbon.accounting_signal)."""
        return carbon.accounting_signal(
            session, self.provider, zone, start=start, end=end, now=self.clock()
        )
