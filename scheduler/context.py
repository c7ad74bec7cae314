"""The application context: what request handlers and maintenance ticks share, typed.

One `AppContext` is built per service process. Routers reach it through the dependencies
in `scheduler.deps` (`ContextDep`, `SettingsDep`, `SchedulingDep`, ...), the ticks in
`scheduler.maintenance` take it as their argument, and nothing else is kept on the
FastAPI application.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State

from scheduler.db.base import utcnow
from scheduler.db.session import (
    make_engine,
    make_read_engine,
    make_read_session_factory,
    make_session_factory,
)
from scheduler.request_gate import Admission
from scheduler.scheduling.service import Scheduling
from scheduler.settings import Settings


@dataclass
class AppContext:
    """Settings, clock, database access, the scheduling caches and request admission."""

    settings: Settings
    clock: Callable[[], datetime]
    engine: Engine
    # Sessions that write (a transaction committed at the end of the unit of work).
    session_factory: sessionmaker[Session]
    # Sessions that only read: on SQLite they never take the write lock.
    read_session_factory: sessionmaker[Session]
    # The signal and capacity caches, the carbon provider and the estimate model.
    scheduling: Scheduling
    admission: Admission
    # Seconds the last run of each maintenance tick took (exported by /metrics).
    tick_durations: dict[str, float] = field(default_factory=dict)
    read_engine: Engine | None = None

    @classmethod
    def build(cls, settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> AppContext:
        """The context of one process, sized by `settings.concurrency`."""
        pool_size, max_overflow = settings.db_pool_size, settings.db_max_overflow
        pool_timeout = settings.db_pool_timeout_seconds
        engine = make_engine(
            settings.database_url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
        )
        read_engine = make_read_engine(
            settings.database_url,
            engine,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
        )
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            session_factory=make_session_factory(engine),
            read_session_factory=make_read_session_factory(read_engine),
            scheduling=Scheduling(settings, clock),
            admission=Admission(
                limit=settings.request_slots, upload_limit=settings.max_concurrent_uploads
            ),
            read_engine=read_engine,
        )

    def now(self) -> datetime:
        """The service's current time (a fixed or accelerated clock in tests and the demo)."""
        return self.clock()

    def close(self) -> None:
        """Close every pooled connection (at shutdown)."""
        self.engine.dispose()
        # On PostgreSQL (and in-memory SQLite) the read path shares the write engine's pool.
        if self.read_engine is not None and self.read_engine.pool is not self.engine.pool:
            self.read_engine.dispose()

    @staticmethod
    def of(holder: AppContext | Any) -> AppContext:
        """The context itself, or the one a FastAPI application carries."""
        if isinstance(holder, AppContext):
            return holder
        context = holder.state.context
        assert isinstance(context, AppContext)
        return context


# Older names on `app.state`, kept as views of the context so that scripts and tests
# written against them keep working; new code uses the context.
_CONTEXT_ATTRIBUTES = frozenset(
    {"settings", "clock", "engine", "session_factory", "scheduling", "admission", "tick_durations"}
)


class ContextState(State):
    """`app.state` holding the context; the older attribute names read and write it."""

    def __init__(self, context: AppContext) -> None:
        super().__init__({"context": context})

    def __getattr__(self, key: Any) -> Any:
        if key in _CONTEXT_ATTRIBUTES:
            return getattr(self._state["context"], key)
        return super().__getattr__(key)

    def __setattr__(self, key: Any, value: Any) -> None:
        if key in _CONTEXT_ATTRIBUTES:
            setattr(self._state["context"], key, value)
        else:
            super().__setattr__(key, value)
