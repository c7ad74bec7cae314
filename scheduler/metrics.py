"""Prometheus metrics read from the database at scrape time, so every replica reports the same.

Each group of families is read in its own savepoint: a table that does not exist yet (or a
failing query) drops that group from the scrape, is logged, and leaves the rest intact.
Labels come only from bounded sets: job states, team names, zones, worker ids (live ones),
GPU indices and tick names.
"""

from __future__ import annotations

import hmac
import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.budgets import service as budgets
from scheduler.budgets.models import Budget, LedgerEntry
from scheduler.context import AppContext
from scheduler.deps import bearer_token
from scheduler.jobs.models import Job
from scheduler.jobs.states import WAITING, JobState
from scheduler.teams.models import Team

log = logging.getLogger("greenwindow.metrics")

# Queue wait = submission to start, over the jobs that started within this window.
QUEUE_WAIT_WINDOW = timedelta(hours=24)
QUEUE_WAIT_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0, 48 * 3600.0)

Part = Callable[[Session, datetime], Iterable[Metric]]


def job_state_counts(session: Session, _: datetime) -> Iterator[Metric]:
    """greenwindow_jobs{state}: every state, zero included, so dashboards see all series."""
    counts = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    family = GaugeMetricFamily("greenwindow_jobs", "Jobs by state.", labels=["state"])
    for state in JobState:
        family.add_metric([state.value], float(counts.get(state, 0)))
    yield family


def bucket_counts(values: Iterable[float], bounds: Iterable[float]) -> list[tuple[str, float]]:
    """Cumulative histogram buckets (`le` label, count) ending with +Inf."""
    ordered = sorted(values)
    buckets: list[tuple[str, float]] = []
    index = 0
    for bound in bounds:
        while index < len(ordered) and ordered[index] <= bound:
            index += 1
        buckets.append((_le(bound), float(index)))
    buckets.append(("+Inf", float(len(ordered))))
    return buckets


def _le(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def queue_wait(session: Session, now: datetime) -> Iterator[Metric]:
    """greenwindow_job_queue_wait_seconds: submission to start of jobs started recently."""
    rows = session.execute(
        select(Job.submitted_at, Job.started_at).where(
            Job.started_at.is_not(None), Job.started_at >= now - QUEUE_WAIT_WINDOW
        )
    ).all()
    waits = [
        max((started - submitted).total_seconds(), 0.0)
        for submitted, started in rows
        if started is not None  # the query asks for started jobs only
    ]
    yield HistogramMetricFamily(
        "greenwindow_job_queue_wait_seconds",
        "Seconds from submission to start, over jobs started in the last 24 hours.",
        buckets=bucket_counts(waits, QUEUE_WAIT_BUCKETS),
        sum_value=sum(waits),
    )


def planned_saving(session: Session, _: datetime) -> Iterator[Metric]:
    """greenwindow_planned_saving_kg_co2e: run-now minus planned emissions of waiting jobs."""
    rows = session.execute(
        select(Job.run_now_kg_co2e, Job.estimated_kg_co2e).where(Job.state.in_(WAITING))
    ).all()
    saving = sum(max(run_now - planned, 0.0) for run_now, planned in rows)
    yield GaugeMetricFamily(
        "greenwindow_planned_saving_kg_co2e",
        "Emissions the current plan avoids for waiting jobs versus starting them now.",
        value=saving,
    )


def team_totals(session: Session, _: datetime) -> Iterator[Metric]:
    """greenwindow_energy_kwh_total / greenwindow_emissions_kg_co2e_total: measured charges."""
    rows = session.execute(
        select(Team.name, func.sum(LedgerEntry.kwh), func.sum(LedgerEntry.kg_co2e))
        .join(LedgerEntry, LedgerEntry.team_id == Team.id)
        .where(LedgerEntry.kind == "charge")
        .group_by(Team.name)
    ).all()
    charged = {name: (kwh or 0.0, kg or 0.0) for name, kwh, kg in rows}
    energy = CounterMetricFamily(
        "greenwindow_energy_kwh", "Measured energy charged to each team.", labels=["team"]
    )
    emissions = CounterMetricFamily(
        "greenwindow_emissions_kg_co2e",
        "Measured emissions charged to each team.",
        labels=["team"],
    )
    for (name,) in session.execute(select(Team.name).order_by(Team.name)):
        kwh, kg = charged.get(name, (0.0, 0.0))
        energy.add_metric([name], kwh)
        emissions.add_metric([name], kg)
    yield energy
    yield emissions


def budget_ratios(session: Session, now: datetime) -> Iterator[Metric]:
    """greenwindow_budget_used_ratio{team}: (actual + committed) / limit this period."""
    family = GaugeMetricFamily(
        "greenwindow_budget_used_ratio",
        "Actual plus committed emissions as a share of the team's budget this period.",
        labels=["team"],
    )
    rows = session.execute(select(Budget, Team.name).join(Team, Team.id == Budget.team_id)).all()
    for budget, name in rows:
        status = budgets.budget_status(session, budget, now=now)
        family.add_metric([name], status.used_percent / 100.0)
    yield family


def _optional(module: str, attribute: str) -> Any:
    """A model or function from a package that may not be installed in this version."""
    return getattr(importlib.import_module(module), attribute)


def workers(session: Session, now: datetime) -> Iterator[Metric]:
    """greenwindow_workers_alive and greenwindow_worker_gpu_watts{worker} (live workers only)."""
    # The fleet's own liveness rule, so the metric and the planner agree.
    alive_workers = _optional("scheduler.workers.fleet", "alive_workers")
    alive = alive_workers(session, now)
    watts = GaugeMetricFamily(
        "greenwindow_worker_gpu_watts",
        "GPU power a live worker reported in its last heartbeat, summed over its GPUs.",
        labels=["worker"],
    )
    for worker in alive:
        total = sum(float(g.get("watts") or 0.0) for g in (worker.gpu_watts or []))
        watts.add_metric([worker.id], total)
    yield GaugeMetricFamily(
        "greenwindow_workers_alive", "Workers heard from within three heartbeats.", len(alive)
    )
    yield watts


# Per-GPU series: at most this many live workers (the most recently heard) and GPUs each,
# so a large or hostile fleet cannot blow up the scrape.
MAX_GPU_SERIES_WORKERS = 256
MAX_GPUS_PER_WORKER = 16
_MIB = 1024 * 1024
# (family, help, telemetry field, scale to the unit in the name)
_GPU_GAUGES = (
    ("greenwindow_worker_gpu_utilisation_percent", "GPU utilisation (NVML).", "util_pct", 1.0),
    ("greenwindow_worker_gpu_memory_used_bytes", "GPU memory used (NVML).", "mem_used_mib", _MIB),
    ("greenwindow_worker_gpu_memory_total_bytes", "GPU memory (NVML).", "mem_total_mib", _MIB),
    (
        "greenwindow_worker_gpu_torch_allocated_bytes",
        "Memory the training process's tensors hold on the GPU.",
        "torch_allocated_mib",
        _MIB,
    ),
    (
        "greenwindow_worker_gpu_torch_reserved_bytes",
        "Memory torch's caching allocator reserves on the GPU.",
        "torch_reserved_mib",
        _MIB,
    ),
    ("greenwindow_worker_gpu_temperature_celsius", "GPU temperature.", "temp_c", 1.0),
    ("greenwindow_worker_gpu_power_watts", "GPU power (NVML).", "power_w", 1.0),
)


def worker_gpus(session: Session, now: datetime) -> Iterator[Metric]:
    """greenwindow_worker_gpu_*{worker,gpu}: the latest telemetry of each live worker's GPUs,
    from the heartbeats of the jobs it runs (labels: worker id and GPU index only)."""
    alive_workers = _optional("scheduler.workers.fleet", "alive_workers")
    alive = sorted(alive_workers(session, now), key=lambda w: w.last_seen_at, reverse=True)
    alive_ids = {worker.id for worker in alive[:MAX_GPU_SERIES_WORKERS]}
    families = {
        field: (GaugeMetricFamily(name, text, labels=["worker", "gpu"]), scale)
        for name, text, field, scale in _GPU_GAUGES
    }
    seen: dict[str, set[int]] = {}
    rows = session.execute(
        select(Job.worker_id, Job.progress)
        .where(Job.state == JobState.RUNNING.value, Job.worker_id.in_(alive_ids))
        .order_by(Job.worker_id, Job.id)
    )
    for worker_id, progress in rows:
        snapshot = (progress or {}).get("telemetry") if isinstance(progress, dict) else None
        gpus = snapshot.get("gpus") if isinstance(snapshot, dict) else None
        for gpu in gpus if isinstance(gpus, list) else []:
            index = gpu.get("index") if isinstance(gpu, dict) else None
            indices = seen.setdefault(worker_id, set())
            if not isinstance(index, int) or index in indices:
                continue
            if len(indices) >= MAX_GPUS_PER_WORKER:
                break
            indices.add(index)
            for field, (family, scale) in families.items():
                value = gpu.get(field)
                if isinstance(value, int | float):
                    family.add_metric([worker_id, str(index)], float(value) * scale)
    for family, _ in families.values():
        yield family


def forecast_age(session: Session, now: datetime) -> Iterator[Metric]:
    """greenwindow_forecast_age_seconds{zone,source}: time since the newest stored forecast."""
    point = _optional("scheduler.carbon.models", "IntensityPoint")
    family = GaugeMetricFamily(
        "greenwindow_forecast_age_seconds",
        "Seconds since the provider generated the newest stored forecast of each zone and source.",
        labels=["zone", "source"],
    )
    rows = session.execute(
        select(point.zone, point.source, func.max(point.generated_at))
        .where(point.kind == "forecast")
        .group_by(point.zone, point.source)
    ).all()
    for zone, source, newest in rows:
        if newest is not None:
            family.add_metric([zone, source], max((now - _aware(newest)).total_seconds(), 0.0))
    yield family


def _aware(moment: datetime) -> datetime:
    # func.max() bypasses the UTC column type, so SQLite hands back a naive (UTC) datetime.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


PARTS: dict[str, Part] = {
    "jobs": job_state_counts,
    "queue_wait": queue_wait,
    "planned_saving": planned_saving,
    "team_totals": team_totals,
    "budgets": budget_ratios,
    "workers": workers,
    "worker_gpus": worker_gpus,
    "forecasts": forecast_age,
}


# Parts labelled with team names: served only to scrapes carrying GREENWINDOW_METRICS_TOKEN.
TEAM_PARTS = frozenset({"team_totals", "budgets"})


class DatabaseCollector(Collector):
    """Collects every family from the database at scrape time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        clock: Callable[[], datetime],
        tick_durations: Callable[[], dict[str, float]],
        *,
        with_teams: bool = True,
    ) -> None:
        self.session_factory = session_factory
        self.clock = clock
        self.tick_durations = tick_durations
        self.parts = {
            name: part for name, part in PARTS.items() if with_teams or name not in TEAM_PARTS
        }

    def collect(self) -> Iterator[Metric]:
        """One scrape: every part read in one transaction, failing parts skipped."""
        now = self.clock()
        failed = GaugeMetricFamily(
            "greenwindow_metrics_part_failed",
            "1 when a group of metrics could not be read in this scrape (see the log).",
            labels=["part"],
        )
        # One read transaction per scrape (on SQLite every transaction queues with the
        # writers); each part in a savepoint, so a failing query leaves the others usable.
        with self.session_factory() as session:
            for name, part in self.parts.items():
                try:
                    with session.begin_nested():
                        # Collected first: a part that fails half-way yields nothing.
                        families = list(part(session, now))
                except Exception as exc:  # noqa: BLE001 - missing tables or a down database
                    log.info("metrics part %s skipped: %s", name, type(exc).__name__)
                    failed.add_metric([name], 1.0)
                    continue
                failed.add_metric([name], 0.0)
                yield from families
            session.rollback()
        yield failed
        ticks = GaugeMetricFamily(
            "greenwindow_tick_duration_seconds",
            "Duration of the last run of each maintenance tick in this process.",
            labels=["tick"],
        )
        for tick_name, seconds in sorted(self.tick_durations().items()):
            ticks.add_metric([tick_name], seconds)
        yield ticks


def build_registry(app: FastAPI, *, with_teams: bool = True) -> CollectorRegistry:
    """A registry of this app's metrics (one per app, so tests can build many apps)."""
    context = AppContext.of(app)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        DatabaseCollector(
            # A scrape only reads: on SQLite it never waits for the writer.
            context.read_session_factory,
            context.now,
            lambda: dict(context.tick_durations),
            with_teams=with_teams,
        )
    )
    return registry


def add_metrics_endpoint(app: FastAPI) -> None:
    """Serve `GET /metrics` in the Prometheus text format.

    Team names and their emissions are not public: without GREENWINDOW_METRICS_TOKEN the
    endpoint is open and leaves out every team-labelled family; with it, a scrape must send
    `Authorization: Bearer <metrics token>` and gets everything.
    """
    token: str | None = AppContext.of(app).settings.metrics_token
    registry = build_registry(app, with_teams=token is not None)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus scrape endpoint."""
        if token is not None:
            presented = bearer_token(request) or ""
            if not hmac.compare_digest(presented.encode(), token.encode()):
                return JSONResponse(
                    {
                        "detail": "send 'Authorization: Bearer <metrics token>'",
                        "field": "Authorization",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
