"""Maintenance ticks run by APScheduler: idempotent, and one replica at a time on PostgreSQL.

APScheduler 3 does not coordinate processes, so each tick takes a transaction-scoped
PostgreSQL advisory lock; a replica that cannot get it skips that tick. On SQLite the
database is local to one service process, and BEGIN IMMEDIATE serialises writers.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from scheduler.budgets import service as budgets
from scheduler.budgets.models import Budget
from scheduler.carbon import service as carbon
from scheduler.context import AppContext
from scheduler.datasets import service as datasets
from scheduler.db.session import session_scope
from scheduler.energy import service as energy
from scheduler.jobs import service as jobs
from scheduler.scheduling import occupancy
from scheduler.settings import TICK_THREADS
from scheduler.teams.models import Team
from scheduler.webhooks import service as webhooks
from scheduler.workers import service as workers

log = logging.getLogger("greenwindow.ticks")

Tick = Callable[[Session, AppContext], Any]
WEBHOOK_PASS_SECONDS = 2
STALE_VALIDATION_PASS_SECONDS = 300
STALE_VALIDATION_AGE = timedelta(minutes=10)
TICKS: dict[str, Tick] = {}


def tick(name: str) -> Callable[[Tick], Tick]:
    """Register a maintenance tick under a name (used for its lock and its metrics)."""

    def register(fn: Tick) -> Tick:
        TICKS[name] = fn
        return fn

    return register


def run_tick(context: AppContext | Any, name: str) -> Any:
    """Run one tick in its own transaction, unless another replica is running it.

    `context` is the application context (a FastAPI app built by `create_app` is accepted
    too, for scripts and tests that hold only the app)."""
    context = AppContext.of(context)
    started = time.perf_counter()
    with session_scope(context.session_factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            lock_key = zlib.crc32(f"greenwindow:{name}".encode())
            got = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key})
            if not got.scalar():
                return None
        result = TICKS[name](session, context)
    context.tick_durations[name] = time.perf_counter() - started
    return result


@tick("readmit_held")
def readmit_held(session: Session, context: AppContext) -> int:
    """Admit held jobs that their team's budget can now cover."""
    return jobs.readmit_held(session, now=context.now(), scheduling=context.scheduling)


@tick("budget_notify")
def budget_notify(session: Session, context: AppContext) -> int:
    """Fire crossed `notify` thresholds once per period (webhook, and always the log)."""
    now = context.now()
    sent = 0
    for budget in session.scalars(select(Budget)):
        team = session.get(Team, budget.team_id)
        assert team is not None
        for threshold in budgets.thresholds_to_notify(session, budget, now=now):
            log.warning(
                "team %s reached %.1f %% of its carbon budget (threshold %s %%)",
                team.name,
                threshold["used_percent"],
                threshold["percent"],
            )
            # Only written here; delivered after commit (a slow receiver never holds this
            # transaction, which on SQLite is the database's write lock).
            webhooks.enqueue(
                session, team, "budget_threshold", {"team": team.name, **threshold}, now=now
            )
            sent += 1
    return sent


@tick("refresh_forecasts")
def refresh_forecasts(session: Session, context: AppContext) -> int:
    """Fetch and store each planned zone's forecast and recent history."""
    scheduling = context.scheduling
    now = context.now()
    return sum(
        carbon.refresh_zone(session, scheduling.provider, zone, now=now)
        for zone in sorted(scheduling.zones_to_plan(session))
    )


@tick("replan")
def replan(session: Session, context: AppContext) -> int:
    """Re-plan every zone's queue jointly; jobs whose window opened become ready."""
    scheduling = context.scheduling
    now = context.now()
    return sum(
        scheduling.replan_zone(session, zone, now=now)
        for zone in sorted(scheduling.zones_to_plan(session))
    )


@tick("reap_leases")
def reap_leases(session: Session, context: AppContext) -> int:
    """Requeue (or fail, or cancel) running jobs whose worker stopped renewing the lease."""
    return workers.reap_expired_leases(
        session,
        now=context.now(),
        max_infra_restarts=context.settings.max_infra_restarts,
        scheduling=context.scheduling,
    )


@tick("restate_emissions")
def restate_emissions(session: Session, context: AppContext) -> int:
    """Re-price recent attempts whose forecast-priced slots have been observed since."""
    return energy.restate_attempts(session, context.scheduling, now=context.now())


@tick("prune_zone_changes")
def prune_zone_changes(session: Session, context: AppContext) -> int:
    """Drop change-log rows no cache entry needs any more (scheduling/occupancy.py)."""
    return occupancy.prune_change_log(session)


def start_ticks(context: AppContext) -> BackgroundScheduler:
    """Start the background scheduler with every registered tick."""
    settings = context.settings
    intervals = {
        "readmit_held": settings.maintenance_seconds,
        "budget_notify": settings.maintenance_seconds,
        "reap_leases": settings.maintenance_seconds,
        "prune_zone_changes": settings.maintenance_seconds,
        "refresh_forecasts": settings.forecast_refresh_seconds,
        "replan": settings.replan_seconds,
        "restate_emissions": settings.restatement_seconds,
    }
    # The signal and the plan are wanted at once after a start, not one interval later.
    run_first = {"refresh_forecasts", "replan"}
    # A fixed number of threads, each holding at most one database connection: the pool
    # counts them (Settings.db_max_overflow). A tick that finds them busy runs late, once.
    scheduler = BackgroundScheduler(
        timezone="UTC",
        executors={"default": ThreadPoolExecutor(TICK_THREADS)},
        job_defaults={"misfire_grace_time": None},
    )
    for name, seconds in intervals.items():
        # APScheduler reads an explicit next_run_time=None as "paused": only pass it to start now.
        first = {"next_run_time": datetime.now(UTC)} if name in run_first else {}
        scheduler.add_job(
            _safe_tick,
            "interval",
            seconds=seconds,
            args=(context, name),
            id=name,
            max_instances=1,
            coalesce=True,
            **first,
        )
    # Webhooks go out from their own job, outside any tick's transaction.
    scheduler.add_job(
        _safe_deliver_webhooks,
        "interval",
        seconds=min(settings.maintenance_seconds, WEBHOOK_PASS_SECONDS),
        args=(context,),
        id="deliver_webhooks",
        max_instances=1,
        coalesce=True,
    )
    # Datasets whose validation was cut short (a restart) are picked up again, also outside
    # any tick's transaction: decoding audio takes a while.
    scheduler.add_job(
        _safe_resume_dataset_validation,
        "interval",
        seconds=STALE_VALIDATION_PASS_SECONDS,
        args=(context,),
        id="resume_dataset_validation",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    return scheduler


def resume_dataset_validation(context: AppContext | Any) -> int:
    """Validate datasets left `validating` for longer than a validation normally takes."""
    context = AppContext.of(context)
    factory, settings = context.session_factory, context.settings
    with session_scope(factory) as session:
        stale = datasets.stale_validations(session, before=context.now() - STALE_VALIDATION_AGE)
    return sum(datasets.validate_audio(factory, settings, d) is not None for d in stale)


def _safe_resume_dataset_validation(context: AppContext) -> None:
    try:
        resume_dataset_validation(context)
    except Exception:  # noqa: BLE001 - retried on the next pass
        log.exception("resuming dataset validation failed")


def deliver_webhooks(context: AppContext | Any) -> int:
    """One pass of the webhook outbox (POSTs with no transaction open)."""
    context = AppContext.of(context)
    return webhooks.deliver_due(context.session_factory, context.settings, context.clock)


def _safe_deliver_webhooks(context: AppContext) -> None:
    try:
        deliver_webhooks(context)
    except Exception:  # noqa: BLE001 - retried on the next pass
        log.exception("webhook delivery pass failed")


def _safe_tick(context: AppContext, name: str) -> None:
    try:
        run_tick(context, name)
    except Exception:  # noqa: BLE001 - a failing tick is logged and retried next interval
        log.exception("tick %s failed", name)
