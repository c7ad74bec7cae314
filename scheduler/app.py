"""The FastAPI application: routers, error handling, request limits and background ticks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from scheduler.artifacts.router import router as artifacts_router
from scheduler.budgets.router import router as budgets_router
from scheduler.carbon.router import router as carbon_router
from scheduler.datasets.router import router as datasets_router
from scheduler.db.base import utcnow
from scheduler.db.session import make_engine, make_session_factory
from scheduler.energy.router import router as energy_router
from scheduler.errors import ERROR_RESPONSES, DomainError
from scheduler.jobs.router import router as jobs_router
from scheduler.jobs.states import IllegalTransition
from scheduler.metrics import add_metrics_endpoint
from scheduler.request_gate import Admission, RequestGate
from scheduler.scheduling.service import Scheduling
from scheduler.settings import Settings
from scheduler.teams.router import router as teams_router
from scheduler.telemetry.router import router as telemetry_router
from scheduler.web import mount_dashboard
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
    problems = [{"field": _field_of(tuple(e["loc"])), "message": str(e["msg"])} for e in errors]
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


def _illegal_transition(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": "state"}, status_code=409)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    run_ticks: bool = True,
) -> FastAPI:
    """Build the service. `clock` is injectable (tests, the accelerated demo)."""
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ticks = None
        if run_ticks:
            from scheduler.maintenance import start_ticks

            ticks = start_ticks(app)
        try:
            yield
        finally:
            if ticks is not None:
                ticks.shutdown(wait=False)
            engine.dispose()

    app = FastAPI(
        title="greenwindow",
        version="0.1.0",
        description="Carbon- and energy-aware scheduling of GPT-SoVITS fine-tunes on GPUs.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.clock = clock
    app.state.tick_durations = {}
    app.state.scheduling = Scheduling(settings, clock)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(IllegalTransition, _illegal_transition)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.state.admission = Admission(
        limit=settings.max_concurrent_requests, upload_limit=settings.max_concurrent_uploads
    )
    app.add_middleware(
        RequestGate,
        settings=settings,
        admission=app.state.admission,
        session_factory=app.state.session_factory,
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
        saturated_s = app.state.admission.saturated_for()
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
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app
