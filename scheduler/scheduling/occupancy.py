"""Per-zone caches for the submit path, kept exact by version counters in the database.

Placing one new job needs what every other job of the zone already holds: reading and
JSON-parsing the whole queue's `planned_intervals` on every submission costs more than
planning the job. So each process keeps, per database and zone:

- the occupancy: every waiting or running job's GPUs and windows, parsed;
- the carbon signal and the tariff the slot grid is built from.

How they stay correct, on any number of replicas, with no TTL:

- `zone_versions` holds two counters per zone: `version` (its queue) and `signal_version`
  (its stored intensities, signal status and tariff). Session events installed below on
  every Session note which zones a transaction changes: a Job inserted, deleted, or with a
  queue attribute changed (`QUEUE_ATTRIBUTES`: state, windows, GPUs, zone...); a Tariff,
  IntensityPoint or ZoneSignalStatus of the zone; and bulk INSERT/UPDATE/DELETE statements
  on those tables, which name their zone with the `queue_zone` execution option (without
  it, every zone is bumped). Just before the outermost commit, the counters of those zones
  are incremented in the same transaction, so a change and its bump commit or roll back
  together.
- An entry records the version it was built at and is used only while the database holds
  the same version (one primary-key read per submission). The version is read before the
  rows: an entry may hold rows newer than its version (advancing it never counts a job
  twice) but never older ones.
- The counter's row lock orders a zone's bumps, so version R is exactly one transaction.
  Just before it commits, that transaction leaves what it did to the queue (the jobs it
  inserted, or "something else") under R. Once R is known to have committed (a reader read
  R, or the transaction reported its commit) an entry at R-1 advances to R with those jobs;
  "something else" drops it. Without this, every commit reported late by its thread (32
  submissions in flight) made the next readers miss and re-read the whole queue.
- A transaction that rolls back before bumping leaves the caches as they were; one that
  fails to commit after bumping takes its delta back and drops the zone's entry.
- Other processes' commits (replicas, `serve --workers`) leave gaps in this process's
  deltas. A transaction that only inserted jobs also writes them to `zone_changes` under
  its version, in the same transaction; a reader with a gap reads the missing versions'
  rows in one statement and replays them. A version with no row (any other change, or
  pruned by the `prune_zone_changes` tick) makes it re-read the queue.

Changes made outside the service's sessions (hand-written SQL against `jobs`) must bump
`zone_versions` themselves, or restart the service.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from weakref import WeakKeyDictionary

import numpy as np
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Result,
    Select,
    Table,
    bindparam,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from scheduler.carbon import service as carbon
from scheduler.carbon.models import IntensityPoint, Tariff, ZoneSignalStatus
from scheduler.db.base import JSONType
from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.planning.memory import worker_memory_mib
from scheduler.planning.planner import plan
from scheduler.planning.tariff import TariffSchedule, prices_for_slots
from scheduler.planning.types import RunningJob, SlotGrid, to_utc
from scheduler.scheduling.models import ZoneChange, ZoneVersion
from scheduler.telemetry.memory import fitting_floor, holds_memory, job_need
from scheduler.workers.models import Worker
from worker.training.config import BASE_NONE

if TYPE_CHECKING:
    from scheduler.jobs.states import JobState as State
    from scheduler.scheduling.service import Scheduling

SLOT_MINUTES = 15
MAX_HORIZON_HOURS = 7 * 24
WAITING = (JobState.SCHEDULED.value, JobState.READY.value, JobState.PAUSED.value)
RUNNING = JobState.RUNNING.value
# Job attributes whose change alters the zone's queue (not progress, leases, energy...).
QUEUE_ATTRIBUTES = (
    "state",
    "zone",
    "gpus",
    "planned_intervals",
    "planned_start",
    "planned_end",
    "not_before",
    "deadline",
    "priority",
    "base",
)
_QUEUE_ATTRIBUTE_SET = frozenset(QUEUE_ATTRIBUTES)
SIGNAL_MODELS = (Tariff, IntensityPoint, ZoneSignalStatus)
SIGNAL_TABLES = frozenset(str(model.__tablename__) for model in SIGNAL_MODELS)
# A trace signal is fetched this much longer than asked, so later submissions reuse it.
SIGNAL_MARGIN_HOURS = 24.0
# Worker liveness: heard from within this many heartbeat intervals (workers/service.py).
MISSED_BEATS = 3
_CHANGES = "greenwindow.zone_changes"


# -- what a transaction changed ------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """What one job of the zone holds: its GPUs over its planned windows."""

    job_id: str
    state: str
    gpus: int
    planned_end: datetime | None
    intervals: tuple[tuple[datetime, datetime], ...]


def _held(job_id: str, state: str, gpus: int, end: datetime | None, intervals: Any) -> Held:
    parsed = tuple(
        (datetime.fromisoformat(start), datetime.fromisoformat(stop))
        for start, stop in intervals or []
    )
    return Held(job_id, state, gpus, end, parsed)


@dataclass
class _Changes:
    """Zones a transaction changed, and the jobs it added (the only change a cache entry
    can be advanced by)."""

    queue: set[str] = field(default_factory=set)
    signal: set[str] = field(default_factory=set)
    # Zones with a queue change other than an inserted job: their entries are dropped.
    unknown: set[str] = field(default_factory=set)
    # The jobs flushed as new; at commit, those really inserted become `added`.
    inserted: list[Job] = field(default_factory=list)
    added: dict[str, list[Held]] = field(default_factory=dict)
    all_queue: bool = False
    all_signal: bool = False
    # Filled at commit: zone -> (version, signal_version) after this transaction's bump.
    bumped: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Zones whose cache entry has taken this transaction's delta.
    taken: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.queue or self.signal or self.all_queue or self.all_signal)


def _changes(session: Session) -> _Changes:
    return session.info.setdefault(_CHANGES, _Changes())


def _note_job(changes: _Changes, zone: str) -> None:
    """A change to the zone's queue that an entry cannot replay."""
    changes.queue.add(zone)
    changes.unknown.add(zone)


def _before_flush(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    for obj in session.new:
        if isinstance(obj, Job):
            changes = _changes(session)
            changes.queue.add(obj.zone)
            changes.inserted.append(obj)
        elif isinstance(obj, SIGNAL_MODELS):
            _changes(session).signal.add(obj.zone)
    for obj in session.dirty:
        if isinstance(obj, Job):
            state = inspect(obj)
            # Only attributes set since the load or last flush can have changed (a cheap
            # look before asking each for its history).
            touched = _QUEUE_ATTRIBUTE_SET.intersection(state.committed_state)
            if not touched:
                continue
            attrs = state.attrs
            if not any(attrs[name].history.has_changes() for name in touched):
                continue
            # A move between zones changes both queues.
            for zone in {obj.zone, *attrs["zone"].history.deleted}:
                _note_job(_changes(session), zone)
        elif isinstance(obj, SIGNAL_MODELS) and session.is_modified(obj):
            _changes(session).signal.add(obj.zone)
    for obj in session.deleted:
        if isinstance(obj, Job):
            _note_job(_changes(session), obj.zone)
        elif isinstance(obj, SIGNAL_MODELS):
            _changes(session).signal.add(obj.zone)


def _on_bulk(state: ORMExecuteState) -> None:
    """Bulk statements on jobs or the signal tables (claims, promotions, forecast refresh)."""
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(getattr(state.statement, "table", None), "name", None)
    if table != Job.__tablename__ and table not in SIGNAL_TABLES:
        return
    zone = state.execution_options.get("queue_zone")
    changes = _changes(state.session)
    if table == Job.__tablename__:
        if zone:
            _note_job(changes, zone)
        else:
            changes.all_queue = True
    elif zone:
        changes.signal.add(zone)
    else:
        changes.all_signal = True


def _before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: the outermost commit bumps
    session.flush()
    changes = session.info.get(_CHANGES)
    if changes:
        for job in changes.inserted:
            # Not persistent: flushed in a savepoint that rolled back (a lost idempotency
            # race), so never inserted.
            if inspect(job).persistent:
                held = _held(job.id, job.state, job.gpus, job.planned_end, job.planned_intervals)
                changes.added.setdefault(job.zone, []).append(held)
        changes.bumped = _bump(session.connection(), changes)
        caches_for(session.get_bind()).prepared(changes)


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    changes = session.info.pop(_CHANGES, None)
    if changes and changes.bumped:
        caches_for(session.get_bind()).committed(changes)


def _after_transaction_end(session: Session, transaction: Any) -> None:
    # The outermost transaction ended without a commit: nothing it noted happened.
    if transaction.parent is None:
        changes = session.info.pop(_CHANGES, None)
        if changes and changes.bumped:
            caches_for(session.get_bind()).abandoned(changes)


def _bump(connection: Connection, changes: _Changes) -> dict[str, tuple[int, int]]:
    """Increment the changed zones' counters in this transaction; returns the new values."""
    # Declarative classes type `__table__` as any FromClause; one with a __tablename__ has a Table.
    table = cast(Table, ZoneVersion.__table__)
    bumped: dict[str, tuple[int, int]] = {}
    postgresql = connection.dialect.name == "postgresql"
    if changes.all_queue or changes.all_signal:
        if postgresql:
            # Lock in zone order, as the upserts below go, so two bumps never deadlock.
            connection.execute(select(table.c.zone).order_by(table.c.zone).with_for_update())
        rows = connection.execute(
            update(table)
            .values(
                version=table.c.version + int(changes.all_queue),
                signal_version=table.c.signal_version + int(changes.all_signal),
            )
            .returning(table.c.zone, table.c.version, table.c.signal_version)
        )
        bumped.update({zone: (v, s) for zone, v, s in rows})
    to_log = _jobs_to_log(changes)
    for zone in sorted((changes.queue | changes.signal) - bumped.keys()):
        values = {
            "zone": zone,
            "queue": int(zone in changes.queue),
            "signal": int(zone in changes.signal),
        }
        logged = to_log.pop(zone, None) if postgresql else None
        if logged is None:
            statement = _upsert(connection.dialect.name)
        else:
            # The log row goes in with the bump, in one statement: the counter's row lock is
            # held from the bump to the commit, and this saves a round trip under it.
            statement, values["jobs"] = _upsert_and_log(), logged
        _, version, signal_version = connection.execute(statement, values).one()
        bumped[zone] = (int(version), int(signal_version))
    if to_log:  # SQLite (or zones bumped all at once): one more statement
        log_rows = [
            {"zone": zone, "version": bumped[zone][0], "jobs": jobs}
            for zone, jobs in to_log.items()
        ]
        connection.execute(_LOG_INSERT, log_rows)
    return bumped


def _jobs_to_log(changes: _Changes) -> dict[str, list[list[Any]]]:
    """The zones for which this transaction leaves its jobs in the change log (only
    inserted jobs), with those jobs: other processes replay them (`_replay_logged`)."""
    if changes.all_queue:
        return {}
    return {
        zone: [_logged(held) for held in added]
        for zone, added in changes.added.items()
        if zone in changes.queue and zone not in changes.unknown
    }


_LOG_INSERT = cast(Table, ZoneChange.__table__).insert()


def _logged(held: Held) -> list[Any]:
    return [
        held.job_id,
        held.state,
        held.gpus,
        held.planned_end.isoformat() if held.planned_end is not None else None,
        [[start.isoformat(), end.isoformat()] for start, end in held.intervals],
    ]


def _from_log(row: list[Any]) -> Held:
    job_id, state, gpus, planned_end, intervals = row
    end = datetime.fromisoformat(planned_end) if planned_end is not None else None
    return _held(job_id, state, gpus, end, intervals)


@functools.cache
def _upsert_and_log() -> Any:
    """PostgreSQL: one zone's bump, and its change-log row under the new version."""
    bump = _upsert("postgresql").cte("bumped")
    log = (
        cast(Table, ZoneChange.__table__)
        .insert()
        .from_select(
            ["zone", "version", "jobs"],
            select(bump.c.zone, bump.c.version, bindparam("jobs", type_=JSONType)),
        )
        .cte("logged")
    )
    return select(bump.c.zone, bump.c.version, bump.c.signal_version).add_cte(log)


@functools.cache
def _upsert(dialect: str) -> Any:
    """One zone's bump, built once per dialect: insert the counters or add to them."""
    table = cast(Table, ZoneVersion.__table__)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table).values(
        zone=bindparam("zone"), version=bindparam("queue"), signal_version=bindparam("signal")
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.zone],
        set_={
            "version": table.c.version + statement.excluded.version,
            "signal_version": table.c.signal_version + statement.excluded.signal_version,
        },
    ).returning(table.c.zone, table.c.version, table.c.signal_version)


event.listen(Session, "before_flush", _before_flush)
event.listen(Session, "do_orm_execute", _on_bulk)
event.listen(Session, "before_commit", _before_commit)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_transaction_end", _after_transaction_end)


# -- the caches ----------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# How far before its reader's clock an entry is complete (see `occupancy`).
READ_MARGIN = timedelta(minutes=10)
# How many committed versions a zone may run ahead of its entry before the gap is given up.
MAX_PENDING_VERSIONS = 256


def _microseconds(moment: datetime) -> int:
    return (to_utc(moment) - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class _Windows:
    """The waiting jobs' planned windows as arrays (microseconds since the epoch), so that the
    free GPUs per slot take a few vector operations instead of a loop over the queue."""

    owner: np.ndarray  # the job id of each window
    start: np.ndarray
    end: np.ndarray
    planned_end: np.ndarray  # the owning job's planned end
    gpus: np.ndarray

    @classmethod
    def of(cls, jobs: Iterable[Held]) -> _Windows:
        rows = [
            (
                held.job_id,
                _microseconds(a),
                _microseconds(b),
                _microseconds(held.planned_end),
                held.gpus,
            )
            for held in jobs
            if held.state in WAITING and held.planned_end is not None
            for a, b in held.intervals
        ]
        owner, start, end, planned_end, gpus = zip(*rows, strict=True) if rows else ([],) * 5
        return cls(
            np.array(owner, dtype=str),
            np.array(start, dtype=np.int64),
            np.array(end, dtype=np.int64),
            np.array(planned_end, dtype=np.int64),
            np.array(gpus, dtype=np.int64),
        )

    def __add__(self, other: _Windows) -> _Windows:
        return _Windows(
            *(
                np.concatenate((mine, theirs))
                for mine, theirs in zip(self.arrays(), other.arrays(), strict=True)
            )
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.owner, self.start, self.end, self.planned_end, self.gpus)


@dataclass(frozen=True)
class Occupancy:
    """A zone's waiting and running jobs at `version`; waiting jobs whose windows had ended
    by `complete_from` were left out, so it serves requests whose clock is at or after it."""

    version: int
    complete_from: datetime
    jobs: tuple[Held, ...]
    # Derived from `jobs` once, and extended (not rebuilt) as the entry advances: a
    # submission must not pay for a pass over the whole queue.
    windows: _Windows = field(compare=False, repr=False)
    job_ids: frozenset[str] = field(compare=False, repr=False)
    running_jobs: tuple[Held, ...] = field(compare=False, repr=False)

    @classmethod
    def of(cls, version: int, complete_from: datetime, jobs: tuple[Held, ...]) -> Occupancy:
        return cls(
            version,
            complete_from,
            jobs,
            _Windows.of(jobs),
            frozenset(held.job_id for held in jobs),
            tuple(held for held in jobs if held.state == RUNNING),
        )

    def plus(self, version: int, added: tuple[Held, ...]) -> Occupancy:
        """This entry advanced to `version` by a transaction that only inserted `added`. An
        entry read while that transaction committed may already hold its jobs: they are
        not counted twice."""
        new = tuple(held for held in added if held.job_id not in self.job_ids)
        return Occupancy(
            version,
            self.complete_from,
            self.jobs + new,
            self.windows + _Windows.of(new),
            self.job_ids | {held.job_id for held in new},
            self.running_jobs + tuple(held for held in new if held.state == RUNNING),
        )

    def free(self, grid: SlotGrid, capacity: int, *, exclude: str) -> np.ndarray:
        """GPUs per slot left by the other waiting jobs (may go below zero): the same
        figures as Scheduling.place_new_job's loop over the rows, window by window."""
        windows = self.windows
        origin = _microseconds(grid.start)
        keep = (windows.planned_end > origin) & (windows.owner != exclude)
        step = grid.step_minutes * 60_000_000
        # As SlotGrid.floor_index and ceil_index: int64 / int divides exactly as timedeltas do.
        first = np.maximum(np.floor((windows.start[keep] - origin) / step + 1e-9), 0)
        last = np.minimum(np.ceil((windows.end[keep] - origin) / step - 1e-9), grid.n_slots)
        used = first < last
        change = np.zeros(grid.n_slots + 1, dtype=np.int64)
        np.add.at(change, first[used].astype(np.int64), windows.gpus[keep][used])
        np.add.at(change, last[used].astype(np.int64), -windows.gpus[keep][used])
        return capacity - np.cumsum(change[:-1])

    def running(self, now: datetime) -> list[RunningJob]:
        until_at_least = now + timedelta(minutes=SLOT_MINUTES)
        return [
            RunningJob(held.job_id, held.gpus, max(held.planned_end or now, until_at_least))
            for held in self.running_jobs
        ]


# What a transaction did to a zone's queue: the jobs it inserted, or None when it changed
# anything else (an entry cannot be advanced past it).
_Delta = tuple[Held, ...] | None


@dataclass
class ZoneCaches:
    """One database's caches (shared by every session on its engine).

    Entries advance through consecutive queue versions. The counter's row lock numbers a
    zone's transactions in commit order, so a transaction knows its version just before it
    commits (`prepared`) and leaves its delta here. Once the database shows that version
    (a reader reads it, or the transaction reports its commit), every version up to it has
    committed and the entry may take their deltas, whichever thread reports first. A
    transaction that fails to commit takes its delta back and drops the entry
    (`abandoned`).
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    occupancy: dict[str, Occupancy] = field(default_factory=dict)
    # zone -> version -> (the transaction's changes, or None when read from the change log;
    # its delta)
    pending: dict[str, dict[int, tuple[_Changes | None, _Delta]]] = field(default_factory=dict)
    # zone -> the highest queue version known to have committed
    committed_upto: dict[str, int] = field(default_factory=dict)
    # zone -> (signal_version, value)
    signals: dict[str, tuple[int, carbon.Signal]] = field(default_factory=dict)
    # zone -> (signal_version, tariff, its slot prices by grid: see `slot_grid`)
    tariffs: dict[str, tuple[int, TariffSchedule | None, PriceMemo]] = field(default_factory=dict)

    def prepared(self, changes: _Changes) -> None:
        """A transaction has bumped its zones and is about to commit."""
        with self.lock:
            for zone, (version, _) in changes.bumped.items():
                if changes.all_queue or zone in changes.queue:
                    known = zone not in changes.unknown and not changes.all_queue
                    delta = tuple(changes.added.get(zone, ())) if known else None
                    pending = self.pending.setdefault(zone, {})
                    if len(pending) >= MAX_PENDING_VERSIONS:
                        # A gap that never closes (another replica's commit, a write outside
                        # the service): what waits behind it is stale for good.
                        pending.clear()
                    pending[version] = (changes, delta)

    def committed(self, changes: _Changes) -> None:
        """A transaction committed: bring entries up to its versions."""
        with self.lock:
            for zone, (version, signal_version) in changes.bumped.items():
                if changes.all_queue or zone in changes.queue:
                    self._seen(zone, version)
                for store in (self.signals, self.tariffs):
                    cached = store.get(zone)
                    if cached is not None and cached[0] != signal_version:
                        del store[zone]

    def abandoned(self, changes: _Changes) -> None:
        """A transaction bumped its zones but did not commit: its delta never happened. It
        is taken back, and an entry that already took it is dropped."""
        with self.lock:
            for zone, (version, _) in changes.bumped.items():
                pending = self.pending.get(zone, {})
                own = pending.get(version, (None, None))[0] is changes
                if own:
                    del pending[version]
                # Taken: a reader saw this number (another replica's commit under it) and
                # applied the delta, so the entry holds jobs that never existed.
                if own or zone in changes.taken:
                    self.occupancy.pop(zone, None)

    def current(self, zone: str, version: int) -> Occupancy | None:
        """The zone's entry at `version`, just read from the database (so committed), or
        at a later version: commits since the read are what a cold read of the rows, a
        statement later, would see too."""
        with self.lock:
            self._seen(zone, version)
            entry = self.occupancy.get(zone)
            return entry if entry is not None and entry.version >= version else None

    def missing(self, zone: str, version: int) -> tuple[int, int] | None:
        """The versions after the zone's entry, up to `version`, whose deltas this process
        has not seen (other processes' commits): (first, last), or None when there is no
        entry to bring up or nothing is missing."""
        with self.lock:
            entry = self.occupancy.get(zone)
            if entry is None or entry.version >= version:
                return None
            if version - entry.version > LOG_KEPT_VERSIONS:
                return None  # further behind than the log reaches: re-read
            pending = self.pending.get(zone, {})
            gaps = [v for v in range(entry.version + 1, version + 1) if v not in pending]
            return (gaps[0], gaps[-1]) if gaps else None

    def replay(self, zone: str, logged: dict[int, tuple[Held, ...]]) -> None:
        """Deltas of committed versions read from the change log: applied as this
        process's own would be."""
        with self.lock:
            pending = self.pending.setdefault(zone, {})
            for version, added in logged.items():
                pending.setdefault(version, (None, added))
            self._advance(zone)

    def store(self, zone: str, fresh: Occupancy) -> None:
        """Keep an entry read at its version, and bring it up to the commits seen since."""
        with self.lock:
            current = self.occupancy.get(zone)
            if current is None or current.version <= fresh.version:
                self.occupancy[zone] = fresh
                self._advance(zone)

    def _seen(self, zone: str, version: int) -> None:
        if version > self.committed_upto.get(zone, -1):
            self.committed_upto[zone] = version
        self._advance(zone)

    def _advance(self, zone: str) -> None:
        """Apply the committed deltas that follow the entry's version; drop the entry at a
        change it cannot replay. Called with the lock held."""
        pending = self.pending.get(zone, {})
        upto = self.committed_upto.get(zone, -1)
        entry = self.occupancy.get(zone)
        while entry is not None and entry.version < upto and entry.version + 1 in pending:
            changes, delta = pending.pop(entry.version + 1)
            if changes is not None:  # None: replayed from the change log, so committed
                changes.taken.add(zone)
            if delta is None:
                del self.occupancy[zone]
                entry = None
            else:
                entry = self.occupancy[zone] = entry.plus(entry.version + 1, delta)
        if entry is not None:
            for version in [v for v in pending if v <= entry.version]:
                del pending[version]


_caches: WeakKeyDictionary[Engine, ZoneCaches] = WeakKeyDictionary()
_caches_lock = threading.Lock()


def caches_for(bind: Engine | Connection) -> ZoneCaches:
    engine = bind.engine if isinstance(bind, Connection) else bind
    with _caches_lock:
        caches = _caches.get(engine)
        if caches is None:
            caches = _caches[engine] = ZoneCaches()
        return caches


def _plain_read(
    session: Session, statement: Select[*tuple[Any, ...]], params: dict[str, Any]
) -> Result[*tuple[Any, ...]]:
    """A column read of every submission: built once and run on the session's connection, it
    skips the ORM's statement handling (less than half the CPU per read). Pending changes
    are flushed first, as the ORM's autoflush would (a no-op when there are none)."""
    session.flush()
    return session.connection().execute(statement, params)


_VERSIONS_READ = select(ZoneVersion.version, ZoneVersion.signal_version).where(
    ZoneVersion.zone == bindparam("zone")
)


def zone_versions(session: Session, zone: str) -> tuple[int, int] | None:
    """The zone's (version, signal_version) as committed; None before its first change."""
    row = _plain_read(session, _VERSIONS_READ, {"zone": zone}).first()
    return None if row is None else (int(row[0]), int(row[1]))


def occupancy(
    session: Session, caches: ZoneCaches, zone: str, version: int | None, now: datetime
) -> Occupancy:
    """The zone's occupancy: cached at `version`, else read (and cached when versioned)."""
    entry = caches.current(zone, version) if version is not None else None
    if entry is None and version is not None:
        entry = _replay_logged(session, caches, zone, version)
    if entry is not None and entry.complete_from <= now:
        return entry
    # Read a little into the past: requests in flight took their clocks a moment before this
    # one, and an entry that left out jobs ending since then could not serve them.
    complete_from = now - READ_MARGIN
    rows = session.execute(
        select(Job.id, Job.state, Job.gpus, Job.planned_end, Job.planned_intervals).where(
            Job.zone == zone,
            (Job.state == RUNNING) | (Job.state.in_(WAITING) & (Job.planned_end > complete_from)),
        )
    )
    fresh = Occupancy.of(
        version if version is not None else -1,
        complete_from,
        tuple(_held(i, s, g, e, intervals) for i, s, g, e, intervals in rows),
    )
    if version is not None:
        caches.store(zone, fresh)
    return fresh


def _replay_logged(
    session: Session, caches: ZoneCaches, zone: str, version: int
) -> Occupancy | None:
    """Bring the zone's entry up to `version` with other processes' submissions, read from
    the change log; None when some version between has no row (it changed the queue some
    other way, or was pruned), and the queue is read afresh."""
    missing = caches.missing(zone, version)
    if missing is None:
        return None
    first, last = missing
    rows = _plain_read(session, _LOG_READ, {"zone": zone, "first": first, "last": last}).all()
    if len(rows) != last - first + 1:
        return None
    caches.replay(zone, {int(v): tuple(_from_log(job) for job in jobs) for v, jobs in rows})
    return caches.current(zone, version)


# Log rows kept per zone behind its current version. An entry further behind than this
# re-reads the queue, which is then cheaper than replaying as many submissions anyway.
LOG_KEPT_VERSIONS = 1000


def prune_change_log(session: Session) -> int:
    """Delete log rows more than LOG_KEPT_VERSIONS behind their zone's version."""
    current = (
        select(ZoneVersion.version).where(ZoneVersion.zone == ZoneChange.zone).scalar_subquery()
    )
    deleted = session.execute(
        delete(ZoneChange).where(ZoneChange.version <= current - LOG_KEPT_VERSIONS)
    )
    return int(cast(CursorResult[Any], deleted).rowcount or 0)  # a DML result counts its rows


_LOG_READ = select(ZoneChange.version, ZoneChange.jobs).where(
    ZoneChange.zone == bindparam("zone"),
    ZoneChange.version.between(bindparam("first"), bindparam("last")),
)


def _signal(
    scheduling: Scheduling,
    session: Session,
    caches: ZoneCaches,
    zone: str,
    signal_version: int | None,
    now: datetime,
    hours: float,
) -> carbon.Signal:
    """The zone's planning signal over [now, now + hours + 1 h], from the cache when a
    cold read would give the same values in every slot.

    Only two origins are cached. The bundled trace is a fixed recording: a longer series
    fetched earlier holds the same value at every time. A stored forecast is what the cold
    read picks, unchanged while `signal_version` is, as long as it still covers `now` the
    way the cold read requires. Forecasts from history and flat fallbacks depend on `now`
    and are always computed.
    """
    with caches.lock:
        cached = caches.signals.get(zone)
    if cached is not None and cached[0] == signal_version:
        signal, series = cached[1], cached[1].series
        if (
            signal.origin == "provider"
            and series.start <= now
            and (series.end >= now + timedelta(hours=hours + 1))
        ):
            return signal
        if signal.origin == "stored_forecast" and (
            series.start <= now and series.end >= now + timedelta(hours=1)
        ):
            return signal
    trace = scheduling.provider.name == "trace"
    fetch_hours = hours + 1 + (SIGNAL_MARGIN_HOURS if trace else 0.0)
    signal = carbon.planning_signal(session, scheduling.provider, zone, now=now, hours=fetch_hours)
    if signal_version is not None and signal.origin in ("provider", "stored_forecast"):
        with caches.lock:
            caches.signals[zone] = (signal_version, signal)
    return signal


def _tariff(
    scheduling: Scheduling,
    session: Session,
    caches: ZoneCaches,
    zone: str,
    signal_version: int | None,
) -> tuple[TariffSchedule | None, PriceMemo]:
    with caches.lock:
        cached = caches.tariffs.get(zone)
    if cached is not None and cached[0] == signal_version:
        return cached[1], cached[2]
    tariff = scheduling.tariff(session, zone)
    memo: PriceMemo = {}
    if signal_version is not None:
        with caches.lock:
            caches.tariffs[zone] = (signal_version, tariff, memo)
    return tariff, memo


# Slot prices of one tariff, by (the grid's start to the minute, slot count).
PriceMemo = dict[tuple[datetime, int], np.ndarray]


def slot_grid(
    signal: carbon.Signal,
    tariff: TariffSchedule | None,
    *,
    now: datetime,
    hours: float,
    prices: PriceMemo | None = None,
) -> SlotGrid:
    """15-minute slots from `now` for `hours` (already clamped) with the signal's intensity
    (each slot takes the value at its middle) and the tariff's prices.

    A tariff prices a slot by the local weekday and minute its start falls in. Slots are
    whole minutes apart and time zones change offset on whole minutes, so every grid that
    starts within the same minute gets the same prices: `prices` keeps the last grid's."""
    count = math.ceil(hours * 60 / SLOT_MINUTES)
    step = SLOT_MINUTES * 60_000_000  # microseconds
    series = signal.series
    # Microseconds, so that the division is exact as timedeltas' is.
    middles = (to_utc(now) - series.start) // _MICROSECOND + step // 2
    offsets = (middles + step * np.arange(count, dtype=np.int64)) / (
        series.step_minutes * 60_000_000
    )
    index = np.clip(np.floor(offsets).astype(np.int64), 0, len(series) - 1)
    priced = None
    if tariff:
        key = (now.replace(second=0, microsecond=0), count)
        priced = prices.get(key) if prices is not None else None
        if priced is None:
            starts = [now + i * timedelta(minutes=SLOT_MINUTES) for i in range(count)]
            priced = prices_for_slots(tariff, starts)
            priced.flags.writeable = False  # shared by every grid of that minute
            if prices is not None:
                prices.clear()  # the clock moved on: only the newest minute is asked for
                prices[key] = priced
    return SlotGrid(now, SLOT_MINUTES, series.values[index], priced)


def clamp_hours(hours: float) -> float:
    return min(max(hours, 1.0), float(MAX_HORIZON_HOURS))


# -- capacity --------------------------------------------------------------------------


class FleetWorker(NamedTuple):
    """What placement needs of one live worker."""

    slots: int
    bases: tuple[str, ...]
    memory_mib: int | None  # its smallest GPU's memory (None: CPU-only or not registered)


@dataclass(frozen=True)
class ZoneFleet:
    """The zone's live workers, read once per submission (liveness moves with every
    heartbeat, so this is read, not cached)."""

    workers: tuple[FleetWorker, ...]

    def capacity(self, default: int) -> int:
        """As Scheduling.capacity: GPUs of live workers, or the default when none count."""
        return sum(worker.slots for worker in self.workers) or default

    def capacity_for_base(self, base: str, default: int, memory_floor: int = 0) -> int:
        """As Scheduling.capacity_for_base: GPUs of live workers holding `base` (and GPUs of
        at least `memory_floor` MiB); with no live worker at all, the zone's capacity."""
        if not self.workers:
            return self.capacity(default)
        return sum(
            worker.slots
            for worker in self.workers
            if base in worker.bases and holds_memory(worker.memory_mib, memory_floor)
        )

    def memory_floor(self, session: Session, job: Job) -> int:
        """As Scheduling.memory_floor; the job's need is only worked out (a read of the
        memory model) when some live worker's GPU memory is known."""
        sizes = [worker.memory_mib for worker in self.workers if worker.memory_mib is not None]
        return fitting_floor(sizes, job_need(session, job)) if sizes else 0


_FLEET_READ = select(
    Worker.gpu_count,
    Worker.cpu_only,
    Worker.gpus,
    Worker.bases,
    Worker.last_seen_at,
    Worker.heartbeat_seconds,
).where(Worker.zone == bindparam("zone"))


def zone_fleet(session: Session, zone: str, now: datetime) -> ZoneFleet:
    rows = _plain_read(session, _FLEET_READ, {"zone": zone})
    live = tuple(
        FleetWorker(
            1 if cpu_only else gpu_count,
            tuple(bases or [BASE_NONE]),
            worker_memory_mib(gpus, cpu_only),
        )
        for gpu_count, cpu_only, gpus, bases, seen, beat in rows
        if now - seen <= timedelta(seconds=MISSED_BEATS * beat)
    )
    return ZoneFleet(live)


# -- the cached submit path ------------------------------------------------------------


def place_new_job(
    scheduling: Scheduling, session: Session, job: Job, *, now: datetime
) -> tuple[State, str]:
    """Scheduling.place_new_job from the caches: the same plan, fewer reads. A job that
    needs more GPU memory than some live worker has counts only the workers that fit."""
    default = scheduling.settings.default_capacity_gpus
    fleet = zone_fleet(session, job.zone, now)
    memory_floor = fleet.memory_floor(session, job)
    held = fleet.capacity_for_base(job.base or "none", default, memory_floor)
    if held == 0:
        return scheduling._wait_for_base(job, memory_floor), job.state_reason
    caches = caches_for(session.get_bind())
    versions = zone_versions(session, job.zone)
    version, signal_version = versions if versions is not None else (None, None)
    hours = clamp_hours(scheduling._hours_needed([job], now))
    signal = _signal(scheduling, session, caches, job.zone, signal_version, now, hours)
    tariff, prices = _tariff(scheduling, session, caches, job.zone, signal_version)
    grid = slot_grid(signal, tariff, now=now, hours=hours, prices=prices)
    zone_jobs = occupancy(session, caches, job.zone, version, now)
    free = zone_jobs.free(grid, min(held, fleet.capacity(default)), exclude=job.id)
    result = plan(
        grid, [scheduling._plan_job(job, now)], np.maximum(free, 0), zone_jobs.running(now), now=now
    )
    state = scheduling._apply(job, result.jobs[job.id], signal, now)
    return state, job.state_reason


# A waiting job of the zone the finishing worker cannot vouch for: not ready, or on a base
# it does not hold. Built once: it runs after every completion.
_UNEXPLAINED_WAITING = (
    select(Job.id)
    .where(
        Job.zone == bindparam("zone"),
        Job.state.in_(WAITING),
        (Job.state != JobState.READY.value)
        | func.coalesce(func.nullif(Job.base, ""), BASE_NONE).not_in(
            bindparam("bases", expanding=True)
        ),
    )
    .limit(1)
)


def replan_has_nothing_to_do(
    scheduling: Scheduling,
    session: Session,
    zone: str,
    now: datetime,
    live_worker: Worker | None = None,
) -> bool:
    """Whether a promote-only replan of the zone would change nothing: it changes only
    scheduled or paused jobs, and ready ones whose base no live worker holds any more.
    Small reads instead of loading and planning the whole queue after every completion:
    with `live_worker` (the calling worker, just authenticated, so live) usually one that
    stops at the first waiting job it cannot vouch for."""
    if live_worker is not None and live_worker.zone == zone and live_worker.slots > 0:
        bases = live_worker.bases or [BASE_NONE]
        unexplained = _plain_read(session, _UNEXPLAINED_WAITING, {"zone": zone, "bases": bases})
        if unexplained.first() is None:
            return True
    waiting = (Job.zone == zone, Job.state.in_(WAITING))
    pairs = session.execute(select(Job.state, Job.base).where(*waiting).distinct()).all()
    if any(state != JobState.READY.value for state, _ in pairs):
        return False
    if not pairs:
        return True
    fleet = zone_fleet(session, zone, now)
    default = scheduling.settings.default_capacity_gpus
    return all(fleet.capacity_for_base(base or BASE_NONE, default) > 0 for _, base in pairs)
