"""Telemetry from job heartbeats: validation, the latest snapshot, a downsampled history per
attempt and the health warnings derived from it.

Called from the job heartbeat (under the job's row lock, so one attempt's heartbeats are
applied one at a time). Work per heartbeat is bounded: one point written or merged, a
window of at most `leak_window` (or 20) figures, and a compaction of at most
`max_points_per_attempt` rows each time the history fills up (amortised: the number of
heartbeats per point doubles each time).
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scheduler.errors import InvalidInput
from scheduler.jobs import lifecycle
from scheduler.jobs.models import Job
from scheduler.telemetry.models import TelemetryPoint, TelemetryState
from scheduler.telemetry.schemas import GPU_FIELDS, TELEMETRY_FIELDS, Telemetry
from scheduler.telemetry.settings import TelemetrySettings, telemetry_settings

# Figures of a GPU that merge as a maximum, not a mean (a peak stays a peak).
_MAX_FIELDS = {"torch_peak_mib", "mem_total_mib"}
_GRAD_WINDOW = 20


def validate(raw: Any) -> Telemetry:
    """`progress.telemetry` checked; a bad one is a 422 naming the field."""
    try:
        return Telemetry.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in ("progress", "telemetry", *error["loc"]))
        raise InvalidInput(f"{field}: {error['msg']}", field=field) from None


def record_heartbeat(
    session: Session,
    job: Job,
    progress: dict[str, Any],
    *,
    now: datetime,
    settings: TelemetrySettings | None = None,
) -> dict[str, Any]:
    """Validate and keep the heartbeat's telemetry; returns the progress to store on the job
    (its `telemetry` replaced by the checked snapshot with the attempt's warnings)."""
    if "telemetry" not in progress:
        return progress
    if progress["telemetry"] is None:
        return {key: value for key, value in progress.items() if key != "telemetry"}
    telemetry = validate(progress["telemetry"])
    settings = settings or telemetry_settings()
    state = _state(session, job)
    state.heartbeats += 1
    peaks = [gpu.torch_peak_mib for gpu in telemetry.gpus if gpu.torch_peak_mib is not None]
    if peaks:
        state.peak_mib = max(peaks + [state.peak_mib or 0.0])
    _add_point(session, job, state, telemetry, progress, now=now, settings=settings)
    _check_health(session, job, state, telemetry, now=now, settings=settings)
    snapshot = telemetry.model_dump()
    snapshot.update(at=now.isoformat(), attempt=job.attempt, warnings=list(state.warnings))
    return {**progress, "telemetry": snapshot}


def _state(session: Session, job: Job) -> TelemetryState:
    state = session.scalar(
        select(TelemetryState).where(
            TelemetryState.job_id == job.id, TelemetryState.attempt == job.attempt
        )
    )
    if state is None:
        state = TelemetryState(
            job_id=job.id,
            attempt=job.attempt,
            stride=1,
            points=0,
            next_seq=0,
            heartbeats=0,
            window=[],
            warnings=[],
        )
        session.add(state)
    return state


# -- history -------------------------------------------------------------------------------


def _point_figures(telemetry: Telemetry) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    values = {name: getattr(telemetry, name) for name in TELEMETRY_FIELDS}
    gpus = [gpu.model_dump() for gpu in telemetry.gpus]
    return values, gpus


def _mean(a: float | None, wa: int, b: float | None, wb: int) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return (a * wa + b * wb) / (wa + wb)


def merge_values(a: dict[str, Any], wa: int, b: dict[str, Any], wb: int) -> dict[str, float | None]:
    """Weighted means of two points' figures (a figure missing on one side keeps the other)."""
    return {key: _mean(a.get(key), wa, b.get(key), wb) for key in sorted({*a, *b})}


def merge_gpus(
    a: list[dict[str, Any]], wa: int, b: list[dict[str, Any]], wb: int
) -> list[dict[str, Any]]:
    """Per (rank, index): weighted means, maxima for peaks and totals."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for gpu in a:
        merged[(gpu["rank"], gpu["index"])] = dict(gpu)
    for gpu in b:
        key = (gpu["rank"], gpu["index"])
        if key not in merged:
            merged[key] = dict(gpu)
            continue
        old = merged[key]
        for name in GPU_FIELDS:
            x, y = old.get(name), gpu.get(name)
            if name in _MAX_FIELDS:
                present = [v for v in (x, y) if v is not None]
                old[name] = max(present) if present else None
            else:
                old[name] = _mean(x, wa, y, wb)
    return [merged[key] for key in sorted(merged)]


def _merge_into(target: TelemetryPoint, other: TelemetryPoint) -> None:
    """Fold `other` (the later point) into `target`."""
    target.values = merge_values(target.values, target.weight, other.values, other.weight)
    target.gpus = merge_gpus(target.gpus, target.weight, other.gpus, other.weight)
    target.weight += other.weight
    target.last_at = other.last_at
    target.step = other.step if other.step is not None else target.step
    target.stage = other.stage or target.stage


def _add_point(
    session: Session,
    job: Job,
    state: TelemetryState,
    telemetry: Telemetry,
    progress: dict[str, Any],
    *,
    now: datetime,
    settings: TelemetrySettings,
) -> None:
    values, gpus = _point_figures(telemetry)
    step = progress.get("step")
    step = step if isinstance(step, int) and 0 <= step < 2**31 else None
    stage = progress.get("stage")
    stage = stage[:16] if isinstance(stage, str) else None
    last = None
    if state.next_seq > 0:
        last = session.scalar(
            select(TelemetryPoint).where(
                TelemetryPoint.job_id == job.id,
                TelemetryPoint.attempt == job.attempt,
                TelemetryPoint.seq == state.next_seq - 1,
            )
        )
    fresh = TelemetryPoint(
        job_id=job.id,
        attempt=job.attempt,
        seq=state.next_seq,
        first_at=now,
        last_at=now,
        weight=1,
        step=step,
        stage=stage,
        values=values,
        gpus=gpus,
    )
    if last is not None and last.weight < state.stride and last.stage == stage:
        _merge_into(last, fresh)
        return
    session.add(fresh)
    state.next_seq += 1
    state.points += 1
    if state.points > settings.max_points_per_attempt:
        _compact(session, job, state)


def _compact(session: Session, job: Job, state: TelemetryState) -> None:
    """Halve the attempt's history: merge neighbours pairwise, double the stride."""
    session.flush()
    points = list(
        session.scalars(
            select(TelemetryPoint)
            .where(TelemetryPoint.job_id == job.id, TelemetryPoint.attempt == job.attempt)
            .order_by(TelemetryPoint.seq)
        )
    )
    gone = []
    for first, second in zip(points[0::2], points[1::2], strict=False):
        _merge_into(first, second)
        gone.append(second.id)
    if gone:
        session.execute(
            delete(TelemetryPoint)
            .where(TelemetryPoint.id.in_(gone))
            .execution_options(synchronize_session=False)
        )
        for point in points[1::2]:
            session.expunge(point)
    state.points = len(points) - len(gone)
    state.stride *= 2
    # The newest point keeps absorbing heartbeats until it holds `stride` of them.
    state.next_seq = points[-1].seq + 1 if len(points) % 2 else points[-2].seq + 1


# -- health --------------------------------------------------------------------------------


def _warn(
    session: Session,
    job: Job,
    state: TelemetryState,
    code: str,
    message: str,
    figures: dict[str, Any],
    *,
    now: datetime,
) -> None:
    """Raise a warning once per attempt: a job event with the figure that triggered it."""
    if any(warning["code"] == code for warning in state.warnings):
        return
    warning = {
        "code": code,
        "message": message,
        "at": now.isoformat(),
        "attempt": job.attempt,
        **figures,
    }
    state.warnings = [*state.warnings, warning]
    lifecycle.record_event(
        session,
        job,
        to_state=job.state,
        reason=f"health warning: {message}",
        now=now,
        data={"warning": code, **figures},
    )


def _check_health(
    session: Session,
    job: Job,
    state: TelemetryState,
    telemetry: Telemetry,
    *,
    now: datetime,
    settings: TelemetrySettings,
) -> None:
    def warn(code: str, message: str, **figures: Any) -> None:
        _warn(session, job, state, code, message, figures, now=now)

    utils = [gpu.util_pct for gpu in telemetry.gpus if gpu.util_pct is not None]
    if utils and (mean_util := sum(utils) / len(utils)) < settings.low_util_pct:
        state.low_util_since = state.low_util_since or now
        lasted = (now - state.low_util_since).total_seconds()
        if lasted >= settings.low_util_seconds:
            warn(
                "low_gpu_utilisation",
                f"GPU utilisation {mean_util:.0f} % (below {settings.low_util_pct:g} %) for "
                f"{lasted:.0f} s: the input pipeline may be the bottleneck",
                util_pct=mean_util,
                seconds=lasted,
                threshold_pct=settings.low_util_pct,
            )
    elif utils:
        state.low_util_since = None

    for gpu in telemetry.gpus:
        reserved, allocated = gpu.torch_reserved_mib, gpu.torch_allocated_mib
        if reserved is None or allocated is None:
            continue
        if reserved >= settings.frag_ratio * allocated and (
            reserved - allocated >= settings.frag_min_gap_mib
        ):
            warn(
                "memory_fragmentation",
                f"rank {gpu.rank} GPU {gpu.index}: torch reserves {reserved:.0f} MiB but has "
                f"only {allocated:.0f} MiB allocated (fragmentation)",
                rank=gpu.rank,
                index=gpu.index,
                reserved_mib=reserved,
                allocated_mib=allocated,
            )
            break

    allocs = [g.torch_allocated_mib for g in telemetry.gpus if g.torch_allocated_mib is not None]
    window = [
        *state.window,
        {"alloc": max(allocs) if allocs else None, "grad": telemetry.grad_norm},
    ]
    recent = [entry["alloc"] for entry in window[-settings.leak_window :]]
    if len(recent) == settings.leak_window and None not in recent:
        growth = recent[-1] - recent[0]
        climbing = all(later >= earlier for earlier, later in zip(recent, recent[1:], strict=False))
        if climbing and growth >= settings.leak_min_growth_mib:
            warn(
                "memory_climbing",
                f"torch-allocated memory grew {growth:.0f} MiB ({recent[0]:.0f} to "
                f"{recent[-1]:.0f} MiB) over {len(recent)} heartbeats without falling: "
                "a leak?",
                growth_mib=growth,
                from_mib=recent[0],
                to_mib=recent[-1],
                heartbeats=len(recent),
            )

    if "grad_norm" in telemetry.nonfinite:
        warn("grad_norm_nonfinite", "gradient norm is NaN or infinite", field="grad_norm")
    elif telemetry.grad_norm is not None:
        earlier = [e["grad"] for e in state.window[-_GRAD_WINDOW:] if e.get("grad") is not None]
        median = statistics.median(earlier) if len(earlier) >= 3 else None
        if telemetry.grad_norm > settings.grad_norm_max:
            warn(
                "grad_norm_exploding",
                f"gradient norm {telemetry.grad_norm:.4g} is above {settings.grad_norm_max:g}",
                grad_norm=telemetry.grad_norm,
                threshold=settings.grad_norm_max,
            )
        elif median and telemetry.grad_norm > settings.grad_norm_jump * median:
            warn(
                "grad_norm_exploding",
                f"gradient norm {telemetry.grad_norm:.4g} is over "
                f"{settings.grad_norm_jump:g}x the recent median {median:.4g}",
                grad_norm=telemetry.grad_norm,
                recent_median=median,
            )
    bad_losses = [name for name in ("loss", "kl", "mel") if name in telemetry.nonfinite]
    if bad_losses:
        warn("loss_nonfinite", f"{', '.join(bad_losses)} NaN or infinite", fields=bad_losses)
    if telemetry.kl is not None and telemetry.kl < settings.kl_min:
        warn(
            "kl_negative",
            f"KL divergence is negative ({telemetry.kl:.4g}): unstable training",
            kl=telemetry.kl,
        )
    state.window = window[-max(settings.leak_window, _GRAD_WINDOW) :]


# -- reads ---------------------------------------------------------------------------------


def attempts_with_history(session: Session, job_id: str) -> list[int]:
    return list(
        session.scalars(
            select(TelemetryState.attempt)
            .where(TelemetryState.job_id == job_id)
            .order_by(TelemetryState.attempt)
        )
    )


def history(session: Session, job: Job, attempt: int | None = None) -> dict[str, Any]:
    """An attempt's downsampled history (default: the latest with one) and its warnings."""
    attempts = attempts_with_history(session, job.id)
    if attempt is None:
        attempt = attempts[-1] if attempts else job.attempt
    state = session.scalar(
        select(TelemetryState).where(
            TelemetryState.job_id == job.id, TelemetryState.attempt == attempt
        )
    )
    points = session.scalars(
        select(TelemetryPoint)
        .where(TelemetryPoint.job_id == job.id, TelemetryPoint.attempt == attempt)
        .order_by(TelemetryPoint.seq)
    )
    return {
        "job_id": job.id,
        "attempt": attempt,
        "attempts": attempts,
        "stride": state.stride if state else 1,
        "points": [
            {
                "attempt": p.attempt,
                "seq": p.seq,
                "first_at": p.first_at.isoformat(),
                "last_at": p.last_at.isoformat(),
                "weight": p.weight,
                "step": p.step,
                "stage": p.stage,
                "values": p.values,
                "gpus": p.gpus,
            }
            for p in points
        ],
        "warnings": list(state.warnings) if state else [],
    }
