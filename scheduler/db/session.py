"""Engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_LOCK_TIMEOUT_S = 30.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the per-database settings the service relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if "poolclass" not in kwargs:
            kwargs = {"pool_size": 10, "max_overflow": 20, **kwargs}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would defer BEGIN; we issue it ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # SQLite has one writer at a time, and its busy handler polls with growing sleeps, so
    # under load some requests starve for seconds. Queue writers on a process-wide lock
    # instead (blocked threads wake in turn), keeping busy_timeout for other processes.
    write_lock = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not write_lock.acquire(timeout=SQLITE_LOCK_TIMEOUT_S):
            raise OperationalError("BEGIN IMMEDIATE", {}, TimeoutError("database is busy"))
        connection.info["holds_write_lock"] = True
        try:
            # Take the write lock up front: two readers upgrading to writers would otherwise
            # fail with SQLITE_BUSY instead of waiting.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(connection.info)
            raise

    def _release(info: dict[str, Any]) -> None:
        if info.pop("holds_write_lock", False):
            write_lock.release()

    event.listen(engine, "commit", lambda connection: _release(connection.info))
    event.listen(engine, "rollback", lambda connection: _release(connection.info))
    # A connection returned to the pool mid-transaction must not keep the lock.
    @event.listens_for(engine.pool, "reset")
    def _on_reset(_dbapi_connection: Any, record: Any, _reset_state: Any) -> None:
        _release(record.info)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
