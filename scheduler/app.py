"""The FastAPI application: routers, error handling, request limits and background ticks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from scheduler.artifacts.router import router as artifacts_router
from scheduler.budgets.router import router as budgets_router
from scheduler.carbon.router import router as carbon_router
from scheduler.context import AppContext, ContextState
from scheduler.datasets.router import router as datasets_router
from scheduler.db.base import utcnow
from scheduler.energy.router import router as energy_router
from scheduler.errors import ERROR_RESPONSES, DomainError
from scheduler.jobs.router import router as jobs_router
from scheduler.jobs.states import IllegalTransition
from scheduler.metrics import add_metrics_endpoint
from scheduler.request_gate import RequestGate
from scheduler.settings import Settings
from scheduler.teams.router import router as teams_router
from scheduler.telemetry.router import router as telemetry_router
from scheduler.web import mount_dashboard
from scheduler.web.router import ShowInstead
from scheduler.workers.router import router as workers_router

log = logging.getLogger("greenwindow")


def _field_of(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body",)]
    return ".".join(parts) or "body"


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        message = next(e.get("ctx", {}).get("error", "") for e in errors)
        return JSONResponse(
            {"detail": f"malformed JSON body: {message}".strip(), "field": "body"},
            status_code=400,
        )
    problems: list[dict[str, str]] = []
    for e in errors:
        problem = {"field": _field_of(tuple(e["loc"])), "message": str(e["msg"])}
        # A body checked by a route and by a dependency (the lease fence) fails in both.
        if problem not in problems:
            problems.append(problem)
    detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return JSONResponse(
        {"detail": detail, "field": problems[0]["field"], "errors": problems}, status_code=422
    )


def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # Connection loss, a restarting PostgreSQL or a busy SQLite: nothing was committed, so
    # the client can retry safely (with an Idempotency-Key for submissions).
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        {"detail": "database unavailable or busy; retry shortly", "field": "database"},
        status_code=503,
        headers={"Retry-After": "2"},
    )


def _pool_exhausted(_: Request, exc: Exception) -> JSONResponse:
    # Every pooled connection stayed busy for GREENWINDOW_DB_POOL_TIMEOUT_SECONDS: the
    # request did nothing yet, so it can be retried.
    log.warning("database connection pool exhausted: %s", exc)
    return JSONResponse(
        {"detail": "service busy: no database connection free; retry shortly", "field": "database"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def _show_instead(_: Request, exc: Exception) -> Response:
    # A dashboard viewer who is not signed in gets a page or a redirect, not an error body.
    assert isinstance(exc, ShowInstead)
    return exc.response


def _illegal_transition(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": "state"}, status_code=409)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    run_ticks: bool = True,
) -> FastAPI:
    """Build the service. `clock` is injectable (tests, the accelerated demo)."""
    context = AppContext.build(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Synchronous endpoints and dependencies run on AnyIO's threads: as many as the
        # concurrency model allows (admitted requests, uploads, health and metrics).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        ticks = None
        if run_ticks:
            from scheduler.maintenance import start_ticks

            ticks = start_ticks(context)
        try:
            yield
        finally:
            if ticks is not None:
                ticks.shutdown(wait=False)
            context.close()

    app = FastAPI(
        title="greenwindow",
        version="0.1.0",
        description="Carbon- and energy-aware scheduling of GPT-SoVITS fine-tunes on GPUs.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state = ContextState(context)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(IllegalTransition, _illegal_transition)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _pool_exhausted)
    app.add_exception_handler(ShowInstead, _show_instead)
    app.add_middleware(
        RequestGate,
        settings=settings,
        admission=context.admission,
        session_factory=context.read_session_factory,
    )

    app.include_router(teams_router)
    app.include_router(budgets_router)
    app.include_router(jobs_router)
    app.include_router(workers_router)
    app.include_router(datasets_router)
    app.include_router(artifacts_router)
    app.include_router(energy_router)
    app.include_router(telemetry_router)
    app.include_router(carbon_router)
    add_metrics_endpoint(app)
    mount_dashboard(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        """Process up, requests being served and database reachable (503 otherwise)."""
        saturated_s = context.admission.saturated_for()
        if saturated_s > settings.health_saturation_seconds:
            # Checked before the database: a stuck database is the usual cause, and this
            # answer must not wait for it.
            return JSONResponse(
                {
                    "status": "unhealthy",
                    "requests": f"every request slot busy for {saturated_s:.0f} s",
                },
                503,
            )
        try:
            with context.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app
