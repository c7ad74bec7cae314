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


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    pool_timeout: float = 30.0,
    **kwargs: Any,
) -> Engine:
    """Create an engine with the per-database settings the service relies on.

    The service sizes the pool from `Settings.concurrency` (see `AppContext.build`); the defaults
    here serve scripts and the command line.
    """
    pool: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
    }
    if "poolclass" in kwargs:
        pool = {}
    if url.startswith("sqlite"):
        _make_parent(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool, **kwargs)


def make_read_engine(
    url: str, write_engine: Engine, *, pool_size: int, max_overflow: int, pool_timeout: float
) -> Engine:
    """The engine of the read path: on SQLite, connections whose transactions start with a
    plain (deferred) BEGIN, so they read a WAL snapshot while a writer holds the lock, and
    that refuse to write (`query_only`). On PostgreSQL reads never wait for writers, so the
    read path shares the write engine's pool (one pool to count against max_connections)
    and its transactions are READ ONLY."""
    if not url.startswith("sqlite"):
        return write_engine.execution_options(postgresql_readonly=True)
    if _is_memory(url):
        # A second engine would open a second, empty in-memory database.
        return write_engine
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Deferred: a read transaction, which in WAL mode never waits for the writer.
        connection.exec_driver_sql("BEGIN")

    return engine


def _is_memory(url: str) -> bool:
    path = url.split("///", 1)[-1] if "///" in url else ""
    return not path or path == ":memory:" or "mode=memory" in url


def _make_parent(url: str) -> None:
    if not _is_memory(url):
        Path(url.split("///", 1)[-1].split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)


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


def make_read_session_factory(read_engine: Engine) -> sessionmaker[Session]:
    """Sessions of the read path; `session.info["read_only"]` tells code that must not write
    (the key-use stamp of authentication) which kind it was given."""
    return sessionmaker(read_engine, expire_on_commit=False, info={"read_only": True})


def is_read_only(session: Session) -> bool:
    """Whether the session belongs to the read path (its transaction cannot write)."""
    return bool(session.info.get("read_only"))


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
    except BaseException:
        finish(session, commit=False)
        raise
    finish(session, commit=True)


def finish(session: Session, *, commit: bool) -> None:
    """End a unit of work: commit it (rolled back when the commit fails) or roll it back;
    then close the session."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read: the transaction is ended by rolling back (there is nothing to commit)."""
    session = factory()
    try:
        yield session
    finally:
        session.close()
