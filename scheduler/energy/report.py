"""The per-job energy report: kWh by component, kg CO2e by time bucket, and every attempt."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.energy import accounting, efficiency
from scheduler.energy import service as energy
from scheduler.energy.models import EnergyRestatement, JobAttempt
from scheduler.jobs.models import Job
from worker.training.config import feature_path


def _methods(row: JobAttempt) -> dict[str, Any]:
    """The worker's method per component, replaced by `estimated` where it could not measure."""
    methods = dict((row.report or {}).get("methods") or {})
    for component in (row.accounting or {}).get("estimates") or {}:
        methods[component] = "estimated"
    return methods


def _method_summary(rows: list[JobAttempt], component: str) -> str | None:
    """One word per component: the method all reported attempts share, or 'mixed'."""
    methods = {str(_methods(row).get(component)) for row in rows if _methods(row)}
    if not methods:
        return None
    return methods.pop() if len(methods) == 1 else "mixed"


def _kwh(rows: list[JobAttempt]) -> dict[str, float]:
    """kWh by component; `unattributed` is energy known only as a total (a lost worker's)."""
    parts = {
        "gpu": sum(r.gpu_kwh for r in rows),
        "cpu": sum(r.cpu_kwh for r in rows),
        "ram": sum(r.ram_kwh for r in rows),
    }
    total = sum(r.total_kwh for r in rows)
    return {**parts, "unattributed": max(total - sum(parts.values()), 0.0), "total": total}


def _facility_kwh(rows: list[JobAttempt]) -> float:
    return sum(r.total_kwh * energy.attempt_pue(r) for r in rows)


def _restatements(session: Session, rows: list[JobAttempt]) -> list[dict[str, Any]]:
    by_id = {row.id: row.attempt for row in rows}
    if not by_id:
        return []
    found = session.scalars(
        select(EnergyRestatement)
        .where(EnergyRestatement.attempt_id.in_(list(by_id)))
        .order_by(EnergyRestatement.id)
    )
    return [
        {
            "attempt": by_id[r.attempt_id],
            "at": r.at,
            "kg_before": r.kg_before,
            "kg_after": r.kg_after,
            "delta_kg_co2e": r.kg_after - r.kg_before,
            "reason": r.reason,
            "slots": r.slots,
        }
        for r in found
    ]


def _attempt(row: JobAttempt) -> dict[str, Any]:
    report = row.report or {}
    duration = (row.ended_at - row.started_at).total_seconds() if row.ended_at else None
    return {
        "attempt": row.attempt,
        "worker": row.worker_id,
        "outcome": row.outcome,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_s": report.get("duration_s", duration),
        "kwh": _kwh([row]),
        "pue": energy.attempt_pue(row),
        "facility_kwh": _facility_kwh([row]),
        "kg_co2e": row.kg_co2e,
        "gpus": report.get("gpus", []),
        "hardware": report.get("hardware", {}),
        "methods": _methods(row),
        # Estimates for what the worker could not measure, the lost worker's last interval,
        # a report that came after the lease was lost: each with its basis.
        "accounting": {
            k: v for k, v in (row.accounting or {}).items() if k != "last_heartbeat_watts"
        },
        "slots": row.buckets,
        "measurement_ok": bool(report.get("measurement_ok", False)),
        "errors": list(report.get("errors", [])),
        "signal": row.signal,
    }


def _timeline(rows: list[JobAttempt]) -> list[dict[str, Any]]:
    """Every attempt's power samples with the intensity of the bucket each falls in."""
    points = []
    for row in rows:
        intensity = {accounting.parse_time(b["start"]): b["g_per_kwh"] for b in row.buckets}
        starts = sorted(intensity)
        for moment, watts in accounting.parse_timeline((row.report or {}).get("timeline") or []):
            bucket = max((s for s in starts if s <= moment), default=starts[0] if starts else None)
            points.append(
                {
                    "t": moment,
                    "watts": watts,
                    "g_per_kwh": intensity.get(bucket) if bucket is not None else None,
                }
            )
    return sorted(points, key=lambda p: p["t"])


def _codecarbon(rows: list[JobAttempt]) -> dict[str, Any]:
    """CodeCarbon's own figures, summed over the attempts where it worked (a cross-check)."""
    ok = [
        (row.report or {}).get("codecarbon") or {}
        for row in rows
        if ((row.report or {}).get("codecarbon") or {}).get("ok")
    ]

    def total(key: str) -> float:
        return sum(float(c.get(key) or 0.0) for c in ok)

    with_gpu = [c for c in ok if c.get("gpu_kwh") is not None]
    return {
        "kg_co2e": total("kg_co2e") if ok else None,
        "cpu_kwh": total("cpu_kwh") if ok else None,
        "ram_kwh": total("ram_kwh") if ok else None,
        "gpu_kwh": total("gpu_kwh") if with_gpu else None,
        "attempts": len(ok),
        "covers": ["cpu", "ram", "gpu"] if ok and len(with_gpu) == len(ok) else ["cpu", "ram"],
        "note": (
            "CodeCarbon's estimate with its own (country-average) intensity, for comparison; "
            "it covers only the components listed in `covers`"
        ),
    }


def _span(rows: list[JobAttempt]) -> float:
    return sum(
        (row.ended_at - row.started_at).total_seconds() for row in rows if row.ended_at is not None
    )


def energy_report(session: Session, job: Job, *, scheduling: Any) -> dict[str, Any]:
    """The job's measured energy and emissions (consistent: kg = sum of bucket kWh x g/kWh)."""
    rows = energy.attempts(session, job.id)
    closed = [row for row in rows if row.outcome != "running"]
    kwh = _kwh(closed)
    kg = sum(r.kg_co2e for r in closed)
    slots = [b for r in closed for b in r.buckets]
    pues = sorted({energy.attempt_pue(r) for r in closed})
    signal = energy.signal_summary(
        job.zone, slots, pue=pues[0] if len(pues) == 1 else max(pues, default=1.0), notes=[]
    )
    signal.pop("notes")
    if not slots:
        signal.update(source=None, type=None, basis=None, estimated=None)
    counterfactual = energy.counterfactual_kg(scheduling, session, job, closed)
    facility = _facility_kwh(closed)
    planning_kind = getattr(getattr(scheduling, "provider", None), "signal_type", "average")
    signal["uses"] = {
        # GHG Protocol Scope 2, location-based: budgets and kg are on average intensity.
        "budget_charge": "average",
        "planning": planning_kind,
        "saving_claim": planning_kind,
    }
    return {
        "job_id": job.id,
        "state": job.state,
        "kwh": kwh,
        "pue": signal["pue"],
        "facility_kwh": facility,
        "kg_co2e": kg,
        "intensity_g_per_kwh_avg": 1000.0 * kg / facility if facility > 0 else None,
        "observed_share": signal["observed_share"],
        "restatements": _restatements(session, rows),
        "signal": signal,
        "methods": {c: _method_summary(closed, c) for c in ("gpu", "cpu", "ram")},
        "attempts": [_attempt(row) for row in rows],
        "timeline": _timeline(closed),
        "codecarbon": _codecarbon(closed),
        "saving_vs_run_now_kg_co2e": (counterfactual - kg) if counterfactual is not None else None,
        "duration_s": _span(closed),
        "model": _model(job),
        "placement": _placement(job),
        # Per stage kWh per step, per audio hour and Wh per 1,000 samples; preparation and
        # training as separate phases; the team's median for the same configuration.
        **efficiency.report_section(session, job, rows),
    }


def _placement(job: Job) -> dict[str, Any]:
    """Where the job ran and, for a job that allowed several zones, what choosing that zone
    was expected to save against its first zone (the planner's estimates, not measurements)."""
    zones = list(job.zones or [job.zone])
    first_kg = job.first_zone_kg_co2e
    return {
        "zone": job.zone,
        "zones_allowed": zones,
        "first_zone": zones[0],
        "expected_saving_vs_first_zone_kg_co2e": (
            first_kg - job.estimated_kg_co2e if first_kg is not None else None
        ),
    }


def _model(job: Job) -> dict[str, Any] | None:
    """What the energy trained: the base and which feature path it used (stand-in or upstream)."""
    if job.kind != "gpt-sovits-finetune":
        return None
    return {
        "base": (job.config or {}).get("base", "none"),
        "resolved_base": job.base,
        "features": feature_path(job.base or "none"),
    }
