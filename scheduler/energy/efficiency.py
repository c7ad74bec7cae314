"""Efficiency of fine-tunes: kWh per optimizer step, kWh per hour of training audio and Wh
per 1,000 samples, per stage, from the phases workers report; stored per finished job under
its configuration signature and GPU model, so a job can be compared with the team's
earlier runs of the same configuration and estimates can learn the figures.

Figures are IT energy (what the hardware drew, before PUE), like the phases they come from.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.energy.models import JobAttempt, JobEfficiency
from scheduler.energy.schemas import (
    Efficiency,
    PhaseTotals,
    ReportedPhase,
    StageEfficiency,
)
from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.planning.estimate import config_signature, normalise_gpu_model
from worker.training.config import FinetuneConfig

TRAINING_STAGES = ("s1", "s2")
FIGURES = ("kwh_per_optimizer_step", "kwh_per_audio_hour", "wh_per_1k_samples")
# The most earlier jobs a comparison or an estimate reads (bounded work per report).
BASELINE_JOBS = 50
LEARN_JOBS = 200
MAX_PHASES = 64


def reported_phases(report: dict[str, Any] | None) -> list[ReportedPhase]:
    """The well-formed phases of an attempt report."""
    phases = (report or {}).get("phases")
    if not isinstance(phases, list):
        return []
    kept = []
    for raw in phases[:MAX_PHASES]:
        try:
            kept.append(ReportedPhase.model_validate(raw))
        except ValidationError:
            continue
    return kept


def phase_totals(rows: list[JobAttempt]) -> list[PhaseTotals]:
    """Each phase summed over the attempts, in the order prepare, s1, s2."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        for phase in reported_phases(row.report):
            total = totals.setdefault(
                phase.name,
                {"kwh": 0.0, "seconds": 0.0, "optimizer_steps": 0, "samples": 0, "attempts": []},
            )
            total["kwh"] += phase.kwh
            if phase.started_at and phase.ended_at and phase.ended_at > phase.started_at:
                total["seconds"] += (phase.ended_at - phase.started_at).total_seconds()
            total["optimizer_steps"] += phase.optimizer_steps or 0
            total["samples"] += phase.samples or 0
            if row.attempt not in total["attempts"]:
                total["attempts"].append(row.attempt)
    order = ["prepare", *TRAINING_STAGES]
    return [PhaseTotals(name=name, **totals[name]) for name in order if name in totals]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def stage_figures(
    kwh: float, steps: int, samples: int, audio_hours: float | None
) -> StageEfficiency:
    return StageEfficiency(
        kwh=kwh,
        optimizer_steps=steps,
        samples=samples,
        kwh_per_optimizer_step=_ratio(kwh, steps),
        kwh_per_audio_hour=_ratio(kwh, audio_hours) if audio_hours else None,
        wh_per_1k_samples=_ratio(kwh * 1000.0, samples / 1000.0),
    )


def audio_hours_of(rows: list[JobAttempt], fallback_seconds: float | None) -> float | None:
    """Hours of training audio: the newest report's `audio_seconds`, else the dataset's."""
    for row in reversed(rows):
        value = (row.report or {}).get("audio_seconds")
        if isinstance(value, int | float) and 0 < value < 1e9:
            return float(value) / 3600.0
    return fallback_seconds / 3600.0 if fallback_seconds else None


def efficiency(
    rows: list[JobAttempt],
    *,
    audio_hours: float | None,
    signature: str | None,
    gpu_model: str | None,
) -> Efficiency:
    """A job's figures from its closed attempts: per stage and for training as a whole."""
    phases = phase_totals(rows)
    stages = {
        phase.name: stage_figures(phase.kwh, phase.optimizer_steps, phase.samples, audio_hours)
        for phase in phases
        if phase.name in TRAINING_STAGES
    }
    if stages:
        training = [p for p in phases if p.name in TRAINING_STAGES]
        stages["training"] = stage_figures(
            sum(p.kwh for p in training),
            sum(p.optimizer_steps for p in training),
            sum(p.samples for p in training),
            audio_hours,
        )
    return Efficiency(
        signature=signature,
        gpu_model=gpu_model,
        audio_hours=audio_hours,
        phases=phases,
        stages=stages,
    )


def _per_figure(
    figure_sets: list[dict[str, Any]], reduce: Callable[[list[float]], float]
) -> dict[str, dict[str, float | None]]:
    """Per stage and figure, `reduce` over the jobs that have it (None where none does)."""
    result: dict[str, dict[str, float | None]] = {}
    stages = sorted({stage for figures in figure_sets for stage in figures})
    for stage in stages:
        result[stage] = {}
        for name in FIGURES:
            values = [
                float(value)
                for figures in figure_sets
                if isinstance(value := (figures.get(stage) or {}).get(name), int | float)
            ]
            result[stage][name] = reduce(values) if values else None
    return result


def median_figures(figure_sets: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per stage and figure, the median over jobs that have it."""
    return _per_figure(figure_sets, statistics.median)


def mean_figures(figure_sets: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per stage and figure, the mean over jobs that have it (what an estimate learns)."""
    return _per_figure(figure_sets, statistics.fmean)


# -- the service side -----------------------------------------------------------------------


def job_signature(session: Session, job: Job) -> str | None:
    """The configuration signature of a fine-tune (None for other kinds)."""
    if job.kind != "gpt-sovits-finetune":
        return None
    from scheduler.datasets.service import audio_minutes

    try:
        config = FinetuneConfig.model_validate(job.config)
    except ValidationError:
        return None
    minutes = audio_minutes(session, (job.dataset or {}).get("id", "")) or 1.0
    return config_signature(config, minutes, job.gpus)


def _gpu_model(rows: list[JobAttempt]) -> str | None:
    for row in reversed(rows):
        name = ((row.report or {}).get("hardware") or {}).get("gpu_model")
        if isinstance(name, str) and name.strip():
            return normalise_gpu_model(name)[:64]
    return None


def job_efficiency(session: Session, job: Job, rows: list[JobAttempt]) -> Efficiency:
    from scheduler.datasets.models import Dataset

    dataset = session.get(Dataset, (job.dataset or {}).get("id", "")) if job.dataset else None
    closed = [row for row in rows if row.outcome != "running"]
    return efficiency(
        closed,
        audio_hours=audio_hours_of(closed, dataset.audio_seconds if dataset else None),
        signature=job_signature(session, job),
        gpu_model=_gpu_model(closed),
    )


def record(session: Session, job: Job, rows: list[JobAttempt], *, now: datetime) -> None:
    """Store a succeeded fine-tune's figures under its signature and GPU model."""
    if job.state != JobState.SUCCEEDED or job.kind != "gpt-sovits-finetune":
        return
    figures = job_efficiency(session, job, rows)
    if not figures.stages or figures.signature is None:
        return
    stored = {stage: value.model_dump() for stage, value in figures.stages.items()}
    row = session.get(JobEfficiency, job.id)
    if row is None:
        row = JobEfficiency(job_id=job.id)
        session.add(row)
    row.team_id = job.team_id
    row.signature = figures.signature
    row.gpu_model = figures.gpu_model or "unknown"
    row.figures = stored
    row.recorded_at = now


def team_baseline(session: Session, job: Job, signature: str | None) -> dict[str, Any]:
    """Median figures of the team's other finished jobs of the same configuration."""
    if signature is None:
        return {"signature": None, "jobs": 0, "stages": {}}
    rows = list(
        session.scalars(
            select(JobEfficiency.figures)
            .where(
                JobEfficiency.team_id == job.team_id,
                JobEfficiency.signature == signature,
                JobEfficiency.job_id != job.id,
            )
            .order_by(JobEfficiency.recorded_at.desc())
            .limit(BASELINE_JOBS)
        )
    )
    return {"signature": signature, "jobs": len(rows), "stages": median_figures(rows)}


def learned(session: Session, signature: str | None, gpu_model: str | None) -> dict[str, Any]:
    """What estimates expect for this signature and GPU model: the mean of every team's
    finished jobs (figures only, no team is named)."""
    if signature is None or gpu_model is None:
        return {"signature": signature, "gpu_model": gpu_model, "jobs": 0, "stages": {}}
    rows = list(
        session.scalars(
            select(JobEfficiency.figures)
            .where(JobEfficiency.signature == signature, JobEfficiency.gpu_model == gpu_model)
            .order_by(JobEfficiency.recorded_at.desc())
            .limit(LEARN_JOBS)
        )
    )
    return {
        "signature": signature,
        "gpu_model": gpu_model,
        "jobs": len(rows),
        "stages": mean_figures(rows),
    }


def report_section(session: Session, job: Job, rows: list[JobAttempt]) -> dict[str, Any]:
    """The energy report's `efficiency`, `team_baseline` and `expected_efficiency`."""
    figures = job_efficiency(session, job, rows)
    return {
        "efficiency": figures.model_dump(),
        "team_baseline": team_baseline(session, job, figures.signature),
        "expected_efficiency": learned(session, figures.signature, figures.gpu_model),
    }
