"""Attempt energy records and their carbon accounting: measure, price, restate.

What an attempt's figures do to the budget ledger (the charge, the reservation it releases)
is the job life cycle's business (`scheduler/jobs/lifecycle.py`), which calls in here; this
module sits below it and below the scheduling context, and takes that context as the
`EnergyContext` protocol rather than importing it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.budgets import service as budgets
from scheduler.carbon import service as carbon
from scheduler.carbon.models import IntensityPoint
from scheduler.carbon.providers.base import CarbonProvider
from scheduler.carbon.series import IntensitySeries
from scheduler.energy import accounting
from scheduler.energy.models import EnergyRestatement, JobAttempt
from scheduler.errors import Conflict, NotFound
from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.planning.estimate import HOST_WATTS
from scheduler.settings import Settings
from scheduler.workers.models import Worker

JOULES_PER_KWH = accounting.JOULES_PER_KWH
# CodeCarbon's RAM power floor on x86 (W), used for a RAM figure CodeCarbon could not give.
RAM_FLOOR_WATTS = 10.0


class EnergyContext(Protocol):
    """What accounting needs from the scheduling context (`Scheduling` provides it)."""

    settings: Settings
    provider: CarbonProvider

    def accounting_signal(
        self, session: Session, zone: str, start: datetime, end: datetime
    ) -> carbon.Signal: ...

    def observe_measurement(
        self, session: Session, job: Job, *, duration_s: float, kwh: float, gpu_model: str
    ) -> None: ...


log = logging.getLogger("greenwindow.energy")

# Used only when the scheduling context offers no accounting signal at all.
FALLBACK_G_PER_KWH = 500.0
FALLBACK_STEP_MINUTES = 60
LOST_ERROR = (
    "worker lost: energy is the last heartbeat's total plus one heartbeat interval at its last "
    "power (no GPU/CPU/RAM split: unattributed), spread evenly over the attempt"
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
    scheduling: EnergyContext, session: Session, zone: str, start: datetime, end: datetime
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
    session: Session,
    job: Job,
    energy: dict[str, Any] | None,
    *,
    now: datetime,
    row: JobAttempt | None = None,
) -> None:
    """Keep the attempt's energy and power so far, which is all that survives a lost worker.
    `row` is the current attempt's record when the caller has it (else it is read)."""
    if row is None:
        row = get_attempt(session, job.id, job.attempt)
    if row is None:
        return
    row.last_heartbeat_at = now
    if energy and energy.get("kwh_so_far") is not None:
        row.kwh_so_far = max(_number(energy["kwh_so_far"]) or 0.0, row.kwh_so_far)
    watts = _number((energy or {}).get("watts"))
    if watts is not None:
        row.accounting = {**(row.accounting or {}), "last_heartbeat_watts": watts}


def live_figures(
    session: Session, job: Job, *, scheduling: EnergyContext, now: datetime
) -> dict[str, Any] | None:
    """A running job's energy and emissions so far, from its heartbeats (None otherwise).

    kWh so far is the worker's own figure times the zone's PUE; its kg CO2e is priced at the
    mean intensity of the slots the attempt has run through (the attempt is priced slot by
    slot, with its real power timeline, when it ends). Earlier attempts count as charged.
    """
    if job.state != JobState.RUNNING:
        return None
    row = get_attempt(session, job.id, job.attempt)
    if row is None:
        return None
    pue = scheduling.settings.pue(job.zone)
    kwh = row.kwh_so_far * pue
    pricing = _pricing(scheduling, session, job.zone, row.started_at, max(now, row.started_at), now)
    intensities = [slot.g_per_kwh for slot in pricing.slots.values()] if pricing else []
    g_per_kwh = sum(intensities) / len(intensities) if intensities else FALLBACK_G_PER_KWH
    earlier = [r for r in attempts(session, job.id) if r.attempt != job.attempt]
    earlier_kwh = sum(r.total_kwh * attempt_pue(r) for r in earlier)
    earlier_kg = sum(r.kg_co2e for r in earlier)
    worker = session.get(Worker, row.worker_id) if row.worker_id else None
    return {
        "at": row.last_heartbeat_at,
        "watts": (row.accounting or {}).get("last_heartbeat_watts"),
        "gpu_watts": list(worker.gpu_watts or []) if worker is not None else [],
        "attempt_kwh": kwh,
        "kwh_so_far": earlier_kwh + kwh,
        "kg_co2e_so_far": earlier_kg + kwh * g_per_kwh / 1000.0,
        "g_per_kwh": g_per_kwh,
        "pue": pue,
    }


def _number(value: Any) -> float | None:
    """A finite, non-negative float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _job_watts(job: Job, settings: Any) -> tuple[float, str]:
    """The job's planned power draw: its estimate, else the configured per-GPU default."""
    if job.estimated_kwh and job.estimated_duration_s:
        return job.estimated_kwh * JOULES_PER_KWH / job.estimated_duration_s, "job_estimate"
    return settings.default_gpu_watts * max(job.gpus, 1), "default_gpu_watts"


def estimate_missing(
    report: dict[str, Any], job: Job, *, duration_s: float, settings: Any
) -> dict[str, dict[str, Any]]:
    """Estimates for the components the worker could not measure (reported as null).

    GPU: the GPUs' enforced power limit over the attempt, else the job's planned power.
    CPU and RAM: the planner's host power (CPU takes all but CodeCarbon's 10 W RAM floor).
    With no component figure at all but a power timeline, the timeline's integral is the
    whole attempt (booked as unattributed). A measured 0 stays 0.
    """
    parts = accounting.report_parts(report)
    missing = [name for name, value in parts.items() if value is None]
    if not missing:
        return {}
    hours = max(duration_s, 0.0) / 3600.0
    timeline = accounting.parse_timeline(report.get("timeline") or [])
    ended = _time_or(report.get("ended_at"), None)
    if len(missing) == 3 and timeline and ended is not None:
        kwh = accounting.timeline_kwh(timeline, ended)
        if kwh > 0:
            return {"unattributed": {"kwh": kwh, "basis": "power_timeline"}}
    estimates: dict[str, dict[str, Any]] = {}
    if "gpu" in missing:
        limits = [_number(gpu.get("power_limit_w")) for gpu in report.get("gpus") or []]
        known = [limit for limit in limits if limit]
        if limits and len(known) == len(limits):
            watts, basis = float(sum(known)), "gpu_power_limit"
        else:
            watts, basis = _job_watts(job, settings)
            watts = max(watts - HOST_WATTS, 0.0) if basis == "job_estimate" else watts
        estimates["gpu"] = {"kwh": watts * hours / 1000.0, "basis": basis, "watts": watts}
    host = {"cpu": HOST_WATTS - RAM_FLOOR_WATTS, "ram": RAM_FLOOR_WATTS}
    for name in ("cpu", "ram"):
        if name in missing:
            estimates[name] = {
                "kwh": host[name] * hours / 1000.0,
                "basis": "host_estimate",
                "watts": host[name],
            }
    return estimates


def close_attempt(
    session: Session,
    job: Job,
    *,
    outcome: str,
    report: dict[str, Any] | None,
    now: datetime,
    scheduling: EnergyContext,
    row: JobAttempt | None = None,
) -> JobAttempt:
    """Store the attempt's report and account its emissions slot by slot (the life cycle
    charges the result to the ledger). `row` is the current attempt's record when the
    caller has it (else it is read).

    The figures are worked out and priced before the record is changed: pricing reads
    intensity, and a record changed before that read would be flushed by it and then
    written a second time with its price."""
    if row is None:
        row = get_attempt(session, job.id, job.attempt)
    if row is None:
        row = open_attempt(session, job, worker_id=job.worker_id or "", now=now)
    settings = scheduling.settings
    notes = dict(row.accounting or {})
    if report:
        started = _time_or(report.get("started_at"), row.started_at) or row.started_at
        ended = max(_time_or(report.get("ended_at"), now) or now, started)
        parts = accounting.report_parts(report)
        estimates = estimate_missing(
            report, job, duration_s=(ended - started).total_seconds(), settings=settings
        )
        gpu, cpu, ram = (
            part if (part := parts[name]) is not None else estimates.get(name, {}).get("kwh", 0.0)
            for name in ("gpu", "cpu", "ram")
        )
        unattributed = estimates.get("unattributed", {}).get("kwh", 0.0)
        if estimates:
            notes["estimates"] = estimates
    else:
        # The worker died: its heartbeats tell how much it used (not by component) and until
        # when. It died within one heartbeat interval after the last one, and the child dies
        # with it, so that interval is counted at the last reported power.
        started = row.started_at
        last = row.last_heartbeat_at or row.started_at
        interval = max(min(float(settings.heartbeat_seconds), (now - last).total_seconds()), 0.0)
        watts = notes.get("last_heartbeat_watts")
        basis = "last_heartbeat_watts"
        if watts is None:
            watts, basis = _job_watts(job, settings)
        extra = watts * interval / JOULES_PER_KWH
        ended = last + timedelta(seconds=interval)
        gpu = cpu = ram = 0.0
        unattributed = row.kwh_so_far + extra
        notes["last_interval"] = {"seconds": interval, "watts": watts, "kwh": extra, "basis": basis}
        report = {"measurement_ok": False, "errors": [LOST_ERROR], "kwh_so_far": row.kwh_so_far}
    total_kwh = gpu + cpu + ram + unattributed
    notes["pue"] = settings.pue(job.zone)
    pue = float(notes["pue"])
    buckets, kg, signal = _priced(
        session,
        scheduling,
        job,
        facility_kwh=total_kwh * pue,
        pue=pue,
        report=report,
        started=started,
        ended=ended,
        now=now,
    )
    row.outcome = outcome
    row.report = report
    row.ended_at = ended
    row.gpu_kwh, row.cpu_kwh, row.ram_kwh = gpu, cpu, ram
    row.total_kwh = total_kwh
    row.accounting = notes
    row.buckets, row.kg_co2e, row.signal = buckets, kg, signal
    return row


def _price(
    session: Session,
    scheduling: EnergyContext,
    job: Job,
    row: JobAttempt,
    *,
    started: datetime,
    now: datetime,
) -> None:
    """(Re)compute the attempt's slots, kg and signal summary from its stored energy."""
    pue = attempt_pue(row)
    row.buckets, row.kg_co2e, row.signal = _priced(
        session,
        scheduling,
        job,
        facility_kwh=row.total_kwh * pue,
        pue=pue,
        report=row.report,
        started=started,
        ended=row.ended_at or started,
        now=now,
    )


def _priced(
    session: Session,
    scheduling: EnergyContext,
    job: Job,
    *,
    facility_kwh: float,
    pue: float,
    report: dict[str, Any] | None,
    started: datetime,
    ended: datetime,
    now: datetime,
) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """An attempt's slots, kg CO2e and signal summary: `facility_kwh` spread over
    [started, ended] (along the report's power timeline, if any) and priced slot by slot."""
    pricing = _pricing(scheduling, session, job.zone, started, ended, now)
    timeline = accounting.parse_timeline((report or {}).get("timeline") or [])
    energy = accounting.energy_by_bucket(
        total_kwh=facility_kwh,
        started_at=started,
        ended_at=ended,
        timeline=timeline,
        step_minutes=pricing.step_minutes if pricing else FALLBACK_STEP_MINUTES,
    )
    buckets = []
    for start, kwh in energy:
        slot = pricing.at(start) if pricing else None
        bucket = accounting.Bucket(start, kwh, slot.g_per_kwh if slot else FALLBACK_G_PER_KWH)
        buckets.append({**(slot.to_json() if slot else _FALLBACK_SLOT), **bucket.to_json()})
    kg = sum(b["kwh"] * b["g_per_kwh"] / 1000.0 for b in buckets)
    signal = signal_summary(job.zone, buckets, pue=pue, notes=pricing.notes if pricing else ())
    return buckets, kg, signal


_FALLBACK_SLOT: dict[str, Any] = {
    "provenance": "filled",
    "source": "fallback constant",
    "signal_type": "average",
    "basis": None,
    "made_at": None,
}


def _pricing(
    scheduling: EnergyContext,
    session: Session,
    zone: str,
    start: datetime,
    end: datetime,
    now: datetime,
) -> carbon.SlotPricing | None:
    try:
        return carbon.price_slots(session, scheduling.provider, zone, start=start, end=end, now=now)
    except Exception:  # noqa: BLE001 - accounting must not fail on a signal outage
        log.exception("pricing %s failed; using the fallback intensity", zone)
        return None


def signal_summary(
    zone: str, buckets: list[dict[str, Any]], *, pue: float, notes: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """What priced an attempt: sources, signal kind, basis, and energy share per provenance."""
    total = sum(b["kwh"] for b in buckets)
    by_label: dict[str, float] = {}
    by_source: dict[str, float] = {}
    for bucket in buckets:
        label = bucket.get("provenance") or "filled"
        by_label[label] = by_label.get(label, 0.0) + bucket["kwh"]
        source = bucket.get("source") or "unknown"
        by_source[source] = by_source.get(source, 0.0) + bucket["kwh"]
    bases = sorted({b.get("basis") or "unknown" for b in buckets})
    share = {k: (v / total if total > 0 else 0.0) for k, v in sorted(by_label.items())}
    main = max(by_source, key=by_source.__getitem__) if by_source else "none"
    return {
        "zone": zone,
        "source": main,
        "sources": sorted(by_source),
        "type": "average",
        "basis": bases[0] if len(bases) == 1 else "mixed",
        "provenance": share,
        "observed_share": share.get("observed", 0.0) if total > 0 else None,
        "estimated": any(label != "observed" for label in by_label),
        "pue": pue,
        "notes": list(notes)[:5],
    }


def ledger_note(prefix: str, signal: dict[str, Any] | None) -> str:
    """A ledger note that records the signal basis of the entry, within the column's size."""
    signal = signal or {}
    shares = ",".join(f"{k} {v:.0%}" for k, v in (signal.get("provenance") or {}).items())
    text = (
        f"{prefix}; zone={signal.get('zone')} source={signal.get('source')} "
        f"kind={signal.get('type')} basis={signal.get('basis')} provenance={shares or 'none'} "
        f"pue={signal.get('pue')}"
    )
    return text[:512]


def energy_uses(row: JobAttempt) -> list[budgets.EnergyUse]:
    """The attempt's priced slots as energy uses (facility kWh), so a charge lands in the
    periods where the energy was used; an attempt with no slots counts at its start."""
    uses = _uses_by_slot(row.buckets or [])
    if uses:
        return uses
    pue = attempt_pue(row)
    return [budgets.EnergyUse(row.started_at, row.total_kwh * pue, row.kg_co2e)]


def _uses_by_slot(buckets: list[dict[str, Any]]) -> list[budgets.EnergyUse]:
    return [
        budgets.EnergyUse(
            accounting.parse_time(b["start"]), b["kwh"], b["kwh"] * b["g_per_kwh"] / 1000.0
        )
        for b in buckets
    ]


def _slot_deltas(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[budgets.EnergyUse]:
    """What changed between two pricings of one attempt, as signed uses per slot start, so an
    adjustment is booked to the periods of the energy it corrects."""
    by_start: dict[datetime, list[float]] = {}
    for sign, buckets in ((-1.0, before), (1.0, after)):
        for use in _uses_by_slot(buckets):
            kwh_kg = by_start.setdefault(use.start, [0.0, 0.0])
            kwh_kg[0] += sign * use.kwh
            kwh_kg[1] += sign * use.kg_co2e
    return [
        budgets.EnergyUse(start, kwh, kg)
        for start, (kwh, kg) in sorted(by_start.items())
        if kwh != 0 or kg != 0
    ]


def adjust(
    session: Session,
    job: Job,
    *,
    uses: list[budgets.EnergyUse],
    now: datetime,
    note: str,
) -> None:
    """A signed ledger adjustment for an attempt whose figure changed after it was charged."""
    if not uses:
        return
    budgets.adjust(session, team_id=job.team_id, job_id=job.id, uses=uses, now=now, note=note)
    job.actual_kg_co2e = (job.actual_kg_co2e or 0.0) + sum(u.kg_co2e for u in uses)
    job.actual_kwh = (job.actual_kwh or 0.0) + sum(u.kwh for u in uses)


def _time_or(value: Any, default: datetime | None) -> datetime | None:
    try:
        return accounting.parse_time(value) if value else default
    except (TypeError, ValueError):
        return default


def attempt_pue(row: JobAttempt) -> float:
    """The PUE an attempt was accounted with (1.0 for attempts closed before PUE existed)."""
    return float((row.accounting or {}).get("pue", 1.0))


def attempts(session: Session, job_id: str) -> list[JobAttempt]:
    """Every attempt of a job, in order."""
    return list(
        session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)
        )
    )


def observe_finished(
    scheduling: EnergyContext, session: Session, job: Job, rows: list[JobAttempt]
) -> None:
    """Feed a succeeded job's measured duration and energy to the estimator."""
    if job.state != JobState.SUCCEEDED or not rows:
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
    scheduling: EnergyContext, session: Session, job: Job, rows: list[JobAttempt]
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


RESTATE_BATCH = 200
# Slots priced from something other than an observation that an observation may replace.
# A replayed trace is never observed later, so it is not restated.
RESTATABLE = ("forecast", "filled", "estimated")


def _observations_since(session: Session, row: JobAttempt, starts: list[datetime]) -> bool:
    """Whether observed intensity is stored now for any of the attempt's non-observed slots."""
    job = session.get(Job, row.job_id)
    if job is None:
        return False
    found = session.scalar(
        select(IntensityPoint.id)
        .where(
            IntensityPoint.zone == job.zone,
            IntensityPoint.kind == "history",
            IntensityPoint.signal_type == "average",
            (IntensityPoint.provenance == "observed") | IntensityPoint.provenance.is_(None),
            IntensityPoint.time >= min(starts) - timedelta(hours=1),
            IntensityPoint.time <= max(starts),
        )
        .limit(1)
    )
    return found is not None


def restate_attempts(session: Session, scheduling: EnergyContext, *, now: datetime) -> int:
    """Re-price recent attempts whose forecast-priced slots now have observations.

    Only attempts that ended within `restatement_days` are looked at, a bounded batch per
    tick. Each change is recorded (figures before and after, slot by slot) and booked to the
    ledger as a signed `adjust` entry; nothing is overwritten without that record.
    """
    days = scheduling.settings.restatement_days
    candidates = list(
        session.scalars(
            select(JobAttempt)
            .where(
                JobAttempt.outcome != "running",
                JobAttempt.ended_at >= now - timedelta(days=days),
                JobAttempt.ended_at <= now,
            )
            .order_by(JobAttempt.ended_at)
        )
    )
    restated = 0
    for row in candidates:
        restatable = [
            accounting.parse_time(b["start"])
            for b in row.buckets
            if b.get("provenance") in RESTATABLE
        ]
        if not restatable or not _observations_since(session, row, restatable):
            continue
        if _restate(session, scheduling, row, now=now):
            restated += 1
            if restated >= RESTATE_BATCH:
                break  # the rest on the next tick
    return restated


def _restate(
    session: Session, scheduling: EnergyContext, row: JobAttempt, *, now: datetime
) -> bool:
    job = session.get(Job, row.job_id)
    if job is None or not row.buckets:
        return False
    before = [dict(b) for b in row.buckets]
    kg_before = row.kg_co2e
    signal_before = row.signal
    started = _time_or((row.report or {}).get("started_at"), row.started_at) or row.started_at
    _price(session, scheduling, job, row, started=started, now=now)
    after = row.buckets
    newly_observed = _newly_observed(before, after)
    if not newly_observed:
        # Nothing better than before: keep the original statement untouched.
        row.buckets, row.kg_co2e, row.signal = before, kg_before, signal_before
        return False
    session.add(
        EnergyRestatement(
            attempt_id=row.id,
            at=now,
            kg_before=kg_before,
            kg_after=row.kg_co2e,
            slots=newly_observed,
            reason=f"{len(newly_observed)} slot(s) priced from forecasts now observed",
        )
    )
    adjust(
        session,
        job,
        uses=_slot_deltas(before, row.buckets),
        now=now,
        note=ledger_note(
            f"restatement of job {job.id} attempt {row.attempt} (energy used "
            f"{accounting.rfc3339(started)}..{accounting.rfc3339(row.ended_at or started)}): "
            f"{kg_before:.6f} -> {row.kg_co2e:.6f} kg",
            row.signal,
        ),
    )
    return True


def _newly_observed(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Slots that were not observed before and are now, with both prices."""
    old = [(accounting.parse_time(b["start"]), b) for b in before]
    changes = []
    for bucket in after:
        if bucket.get("provenance") != "observed":
            continue
        start = accounting.parse_time(bucket["start"])
        # The old slot holding this one (old slots may be coarser than the new ones).
        holder = max((b for s, b in old if s <= start), key=lambda b: b["start"], default=None)
        if holder is None or holder.get("provenance") == "observed":
            continue
        changes.append(
            {
                "start": bucket["start"],
                "kwh": bucket["kwh"],
                "before": {
                    "g_per_kwh": holder["g_per_kwh"],
                    "provenance": holder.get("provenance"),
                },
                "after": {"g_per_kwh": bucket["g_per_kwh"], "provenance": "observed"},
            }
        )
    return changes


# A worker's late report is bounded: no more than this power over the attempt's duration.
MAX_WATTS_PER_GPU = 2_000.0
MAX_HOST_WATTS = 1_000.0


def keep_orphan_report(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    attempt: int,
    report: dict[str, Any],
    now: datetime,
    scheduling: EnergyContext,
) -> JobAttempt:
    """Keep the report of a worker that lost its lease, as unattributed energy, and charge it.

    The attempt was closed as lost from its heartbeats; the worker's own figure replaces that
    estimate (all of it unattributed, since the lease no longer vouches for the split), and the
    difference is charged (or adjusted down). Only the worker that ran the attempt may send it,
    once, and the figure is bounded by a generous power over the attempt's duration.
    """
    row = get_attempt(session, job_id, attempt)
    if row is None or row.worker_id != worker_id:
        raise NotFound(f"no attempt {attempt} of job {job_id} by this worker", field="attempt")
    if (row.accounting or {}).get("late_report"):
        return row  # a retry of a report already kept
    if row.outcome != "lost":
        raise Conflict(
            f"attempt {attempt} of job {job_id} is {row.outcome}: only a lost attempt takes a "
            "late report",
            field="attempt",
        )
    job = session.get(Job, job_id)
    assert job is not None
    started = row.started_at
    ended = min(max(_time_or(report.get("ended_at"), row.ended_at) or now, started), now)
    duration_s = (ended - started).total_seconds()
    parts = accounting.report_parts(report)
    estimates = estimate_missing(report, job, duration_s=duration_s, settings=scheduling.settings)
    reported = sum(
        value if value is not None else estimates.get(name, {}).get("kwh", 0.0)
        for name, value in parts.items()
    ) + estimates.get("unattributed", {}).get("kwh", 0.0)
    cap = (max(job.gpus, 1) * MAX_WATTS_PER_GPU + MAX_HOST_WATTS) * duration_s / JOULES_PER_KWH
    kept = min(reported, cap)
    kwh_before = row.total_kwh * attempt_pue(row)
    buckets_before = [dict(b) for b in row.buckets or []]
    row.ended_at = ended
    row.total_kwh = kept  # gpu/cpu/ram stay 0: all of it is unattributed
    row.accounting = {
        **(row.accounting or {}),
        "late_report": {
            "received_at": accounting.rfc3339(now),
            "reported_kwh": reported,
            "kept_kwh": kept,
            "ended_at": accounting.rfc3339(ended),
            "estimates": estimates,
            "heartbeat_kwh": kwh_before,
        },
    }
    _price(session, scheduling, job, row, started=started, now=now)
    note = ledger_note(
        f"late report of job {job.id} attempt {attempt} from a worker that lost its lease: "
        "unattributed energy",
        row.signal,
    )
    deltas = _slot_deltas(buckets_before, row.buckets)
    if all(d.kg_co2e >= 0 and d.kwh >= 0 for d in deltas):
        # More energy than the heartbeats showed: an ordinary charge for the difference.
        budgets.charge(session, team_id=job.team_id, job_id=job.id, uses=deltas, now=now, note=note)
        job.actual_kg_co2e = (job.actual_kg_co2e or 0.0) + sum(d.kg_co2e for d in deltas)
        job.actual_kwh = (job.actual_kwh or 0.0) + sum(d.kwh for d in deltas)
    else:
        adjust(session, job, uses=deltas, now=now, note=note)
    return row
