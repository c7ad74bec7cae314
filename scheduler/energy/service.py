"""Attempt energy records, their carbon accounting, budget settlement and the energy report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.budgets import service as budgets
from scheduler.carbon.series import IntensitySeries
from scheduler.energy import accounting
from scheduler.energy.models import JobAttempt
from scheduler.jobs import service as jobs
from scheduler.jobs.models import Job

if TYPE_CHECKING:
    from scheduler.scheduling.service import Scheduling

log = logging.getLogger("greenwindow.energy")

# Used only when the scheduling context offers no accounting signal at all.
FALLBACK_G_PER_KWH = 500.0
FALLBACK_STEP_MINUTES = 60
LOST_ERROR = (
    "worker lost: energy is the last heartbeat's total (no GPU/CPU/RAM split), spread evenly "
    "over the attempt"
)


@dataclass(frozen=True)
class SignalUsed:
    """The intensity signal an attempt was accounted with."""

    zone: str
    source: str
    signal_type: str
    estimated: bool
    series: IntensitySeries | None

    @property
    def step_minutes(self) -> int:
        return self.series.step_minutes if self.series is not None else FALLBACK_STEP_MINUTES

    def intensity_at(self, moment: datetime) -> float:
        """g/kWh for the slot holding `moment`; the nearest slot when outside the series."""
        series = self.series
        if series is None or len(series) == 0:
            return FALLBACK_G_PER_KWH
        if moment < series.start:
            return float(series.values[0])
        if moment >= series.end:
            return float(series.values[-1])
        return series.value_at(moment)

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "source": self.source,
            "type": self.signal_type,
            "estimated": self.estimated,
        }


def accounting_signal(
    scheduling: Scheduling, session: Session, zone: str, start: datetime, end: datetime
) -> SignalUsed:
    """The zone's intensity over [start, end] from the scheduling context, or a fallback."""
    try:
        signal = scheduling.accounting_signal(session, zone, start, end)
    except Exception:  # noqa: BLE001 - accounting must not fail on a signal outage
        log.exception("accounting signal for %s failed; using the fallback intensity", zone)
        return SignalUsed(zone, "fallback constant", "average", True, None)
    series = signal.series
    if len(series) == 0:
        return SignalUsed(zone, "fallback constant", "average", True, None)
    return SignalUsed(
        zone, series.source or "unknown", series.signal_type, signal.estimated, series
    )


def open_attempt(session: Session, job: Job, *, worker_id: str, now: datetime) -> JobAttempt:
    """Start the record of a new attempt (at claim)."""
    row = JobAttempt(
        job_id=job.id,
        attempt=job.attempt,
        worker_id=worker_id,
        outcome="running",
        started_at=now,
        kwh_so_far=0.0,
        buckets=[],
        created_at=now,
    )
    session.add(row)
    return row


def get_attempt(session: Session, job_id: str, attempt: int) -> JobAttempt | None:
    """The record of one attempt."""
    return session.scalar(
        select(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.attempt == attempt)
    )


def note_heartbeat(
    session: Session, job: Job, energy: dict[str, Any] | None, *, now: datetime
) -> None:
    """Keep the attempt's energy so far, which is all that survives a lost worker."""
    row = get_attempt(session, job.id, job.attempt)
    if row is None:
        return
    row.last_heartbeat_at = now
    if energy and energy.get("kwh_so_far") is not None:
        row.kwh_so_far = max(float(energy["kwh_so_far"]), row.kwh_so_far)


def close_attempt(
    session: Session,
    job: Job,
    *,
    outcome: str,
    report: dict[str, Any] | None,
    now: datetime,
    scheduling: Scheduling,
) -> JobAttempt:
    """Store the attempt's report and account its emissions bucket by bucket."""
    row = get_attempt(session, job.id, job.attempt)
    if row is None:
        row = open_attempt(session, job, worker_id=job.worker_id or "", now=now)
    row.outcome = outcome
    if report:
        started = _time_or(report.get("started_at"), row.started_at)
        ended = _time_or(report.get("ended_at"), now)
        gpu, cpu, ram = accounting.report_kwh(report)
        timeline = accounting.parse_timeline(report.get("timeline") or [])
    else:
        # The worker died: only heartbeats tell how much it used (not by component), and until
        # when.
        started = row.started_at
        ended = row.last_heartbeat_at or now
        gpu, cpu, ram = 0.0, 0.0, 0.0
        timeline = []
        report = {"measurement_ok": False, "errors": [LOST_ERROR], "kwh_so_far": row.kwh_so_far}
    ended = max(ended, started)
    row.report = report
    row.ended_at = ended
    row.gpu_kwh, row.cpu_kwh, row.ram_kwh = gpu, cpu, ram
    row.total_kwh = gpu + cpu + ram if report.get("kwh_so_far") is None else row.kwh_so_far
    signal = accounting_signal(scheduling, session, job.zone, started, ended)
    energy = accounting.energy_by_bucket(
        total_kwh=row.total_kwh,
        started_at=started,
        ended_at=ended,
        timeline=timeline,
        step_minutes=signal.step_minutes,
    )
    buckets = accounting.price_buckets(energy, signal.intensity_at)
    row.buckets = [bucket.to_json() for bucket in buckets]
    row.kg_co2e = accounting.total_kg(buckets)
    row.signal = signal.to_json()
    _charge_attempt(session, job, row, now=now)
    return row


def _charge_attempt(session: Session, job: Job, row: JobAttempt, *, now: datetime) -> None:
    """Charge an attempt as soon as it is measured, so no energy goes uncharged even when the
    job later ends without running again; the same amount of its reservation is released so
    that committed + actual never counts it twice."""
    budgets.charge(
        session,
        team_id=job.team_id,
        job_id=job.id,
        uses=_energy_uses(row),
        now=now,
        note=f"measured emissions of job {job.id} attempt {row.attempt} ({row.outcome})",
    )
    covered = min(row.kg_co2e, job.reserved_kg_co2e)
    if covered > 0:
        budgets.release(
            session,
            team_id=job.team_id,
            job_id=job.id,
            kg=covered,
            now=now,
            counts_at=job.reserved_counts_at or now,
            note=f"attempt {row.attempt} measured: that much of the reservation released",
        )
        job.reserved_kg_co2e -= covered
    job.actual_kwh = (job.actual_kwh or 0.0) + row.total_kwh
    job.actual_kg_co2e = (job.actual_kg_co2e or 0.0) + row.kg_co2e


def _energy_uses(row: JobAttempt) -> list[budgets.EnergyUse]:
    """The attempt's totals spread over its priced buckets, so a charge lands in the periods
    where the energy was used; an attempt with no priced energy counts at its start."""
    pieces = [
        (
            accounting.parse_time(bucket["start"]),
            float(bucket["kwh"]),
            float(bucket["kwh"]) * float(bucket["g_per_kwh"]),
        )
        for bucket in row.buckets or []
    ]
    kwh_sum = sum(kwh for _, kwh, _ in pieces)
    grams_sum = sum(grams for _, _, grams in pieces)
    if kwh_sum <= 0 or grams_sum <= 0:
        return [budgets.EnergyUse(start=row.started_at, kwh=row.total_kwh, kg_co2e=row.kg_co2e)]
    # Shares of the buckets, scaled to the attempt's totals, so the parts add up exactly.
    return [
        budgets.EnergyUse(
            start=start,
            kwh=row.total_kwh * kwh / kwh_sum,
            kg_co2e=row.kg_co2e * grams / grams_sum,
        )
        for start, kwh, grams in pieces
    ]


def _time_or(value: Any, default: datetime) -> datetime:
    try:
        return accounting.parse_time(value) if value else default
    except (TypeError, ValueError):
        return default


def attempts(session: Session, job_id: str) -> list[JobAttempt]:
    """Every attempt of a job, in order."""
    return list(
        session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)
        )
    )


def settle_job(session: Session, job: Job, *, now: datetime, scheduling: Scheduling) -> None:
    """At a job's end: release what is left of its reservation; its actual totals are the sum
    of its attempts, each charged when it was measured."""
    rows = attempts(session, job.id)
    job.actual_kwh = sum(row.total_kwh for row in rows)
    job.actual_kg_co2e = sum(row.kg_co2e for row in rows)
    jobs.release_reservation(session, job, now=now, note=f"job {job.state}: reservation released")
    _observe(scheduling, session, job, rows)


def _observe(scheduling: Scheduling, session: Session, job: Job, rows: list[JobAttempt]) -> None:
    """Feed the measured duration and energy to the estimator, when it learns from them."""
    if job.state != "succeeded" or not rows:
        return
    duration_s = sum(
        (row.ended_at - row.started_at).total_seconds() for row in rows if row.ended_at
    )
    hardware = (rows[-1].report or {}).get("hardware") or {}
    try:
        scheduling.observe_measurement(
            session,
            job,
            duration_s=duration_s,
            kwh=job.actual_kwh or 0.0,
            gpu_model=hardware.get("gpu_model") or "CPU",
        )
    except Exception:  # noqa: BLE001 - learning is best effort; the charge stands
        log.exception("observe_measurement failed for job %s", job.id)


def counterfactual_kg(
    scheduling: Scheduling, session: Session, job: Job, rows: list[JobAttempt]
) -> float | None:
    """Emissions of the same measured energy profile had the job started at submission."""
    buckets = [
        (accounting.parse_time(b["start"]), float(b["kwh"])) for row in rows for b in row.buckets
    ]
    if not buckets:
        return None
    first = min(start for start, _ in buckets)
    shift = job.submitted_at - first
    last = max(start for start, _ in buckets) + shift + timedelta(hours=1)
    signal = accounting_signal(scheduling, session, job.zone, job.submitted_at, last)
    return sum(kwh * signal.intensity_at(start + shift) / 1000.0 for start, kwh in buckets)
