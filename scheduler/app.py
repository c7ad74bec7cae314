"""The FastAPI application: routers, error handling, request limits and background ticks."""

from __future__ import annotations

import asyncio
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
from scheduler.scheduling.service import Scheduling
from scheduler.settings import Settings
from scheduler.teams.router import router as teams_router
from scheduler.web import mount_dashboard
from scheduler.workers.router import router as workers_router

log = logging.getLogger("greenwindow")

# Paths that take large uploads (datasets, artifacts) get the upload limit instead.
UPLOAD_MARKERS = ("/v1/datasets", "/artifacts/")


class BodySizeLimit:
    """Refuse request bodies over the configured size with 413, also when streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = (
            self.max_upload_bytes
            if any(marker in path for marker in UPLOAD_MARKERS)
            else self.max_bytes
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send, limit)


class ConcurrencyLimit:
    """Admit at most `limit` requests at once; the rest wait in the event loop.

    Synchronous endpoints hop between worker threads (session, authentication, handler)
    while holding a database connection or SQLite's write lock. If every thread of the
    pool were taken by requests waiting for those, the holders could never get a thread
    back and the service would hang. Keeping in-flight requests below the thread pool and
    the connection pool makes that impossible; waiting requests hold nothing.
    """

    # Single-step endpoints that hold no resource across threads; kept answerable when busy.
    EXEMPT = frozenset({"/healthz", "/metrics"})

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.semaphore = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        async with self.semaphore:
            await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


async def _too_large(send: Send, limit: int) -> None:
    response = JSONResponse(
        {"detail": f"request body larger than {limit} bytes", "field": "body"}, status_code=413
    )
    await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


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
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )

    app.include_router(teams_router)
    app.include_router(budgets_router)
    app.include_router(jobs_router)
    app.include_router(workers_router)
    app.include_router(datasets_router)
    app.include_router(artifacts_router)
    app.include_router(energy_router)
    app.include_router(carbon_router)
    add_metrics_endpoint(app)
    mount_dashboard(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        """Process up and database reachable (503 otherwise)."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app
