"""The submit path's zone caches (scheduling/occupancy.py) give the plan a cold read gives.

Random sequences of what changes a zone's queue (submissions, claims, completions, fails,
releases, cancels, replans, the lease reaper, forecast refreshes, rolled-back work and the
clock moving) run against the real app on SQLite and PostgreSQL. After every step a probe
job is planned twice in one session, with the caches and without them (the original reads
of every queued job), and the two plans must be identical.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from support.helpers import WORKER_TOKEN, FakeClock, admin_headers, bearer, burn_in_job

from scheduler.app import create_app
from scheduler.db.session import session_scope
from scheduler.jobs import service as jobs_service
from scheduler.jobs.models import Job
from scheduler.jobs.schemas import JobCreate
from scheduler.maintenance import run_tick
from scheduler.scheduling import occupancy
from scheduler.scheduling.models import ZoneChange
from scheduler.settings import Settings
from scheduler.teams.models import Team


@dataclass
class World:
    client: TestClient
    clock: FakeClock
    key: str
    team_id: str
    workers: list[tuple[str, dict[str, str]]]
    # job id -> (worker path, fence) for jobs this test's workers hold
    held: dict[str, tuple[str, dict[str, object]]] = field(default_factory=dict)

    @property
    def app(self):  # noqa: ANN201
        return self.client.app

    @property
    def scheduling(self):  # noqa: ANN201
        return self.app.state.scheduling

    def session(self):  # noqa: ANN201
        return session_scope(self.app.state.session_factory)


@pytest.fixture
def world(settings: Settings, clock: FakeClock) -> Iterator[World]:
    app = create_app(settings, clock=clock, run_ticks=False)
    with TestClient(app) as client:
        created = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
        assert created.status_code == 201, created.text
        workers = []
        for index in range(2):
            gpus = [{"index": i, "uuid": f"gpu-{index}-{i}", "name": "A100"} for i in range(2)]
            registered = client.post(
                "/v1/workers/register",
                json={"host": f"w{index}", "gpus": gpus},
                headers=bearer(WORKER_TOKEN),
            )
            assert registered.status_code == 201, registered.text
            body = registered.json()
            workers.append((f"/v1/workers/{body['worker_id']}", bearer(body["token"])))
        with session_scope(app.state.session_factory) as session:
            team_id = session.scalar(select(Team.id).where(Team.name == "alpha"))
        yield World(client, clock, created.json()["api_key"], team_id, workers)


def _probe(world: World, rng: random.Random) -> tuple[object, object]:
    """The probe's plan with the caches and without; the session is rolled back."""
    spec = JobCreate.model_validate(
        burn_in_job(
            gpus=rng.choice([1, 2]),
            max_delay_minutes=rng.choice([0, 60, 600]),
            priority=rng.choice([0, 5]),
        )
    )
    plans = []
    for cached in (False, True):
        world.scheduling.use_caches = cached
        with world.session() as session:
            team = session.get(Team, world.team_id)
            job, state, reason = jobs_service.draft(
                session, team=team, spec=spec, now=world.clock(), scheduling=world.scheduling
            )
            plans.append(
                (
                    state,
                    reason,
                    job.planned_intervals,
                    job.estimated_kg_co2e,
                    job.run_now_kg_co2e,
                )
            )
            session.rollback()
    world.scheduling.use_caches = True
    return plans[0], plans[1]


def _waiting_ids(world: World) -> list[str]:
    with world.session() as session:
        return list(
            session.scalars(
                select(Job.id)
                .where(Job.state.in_(("scheduled", "ready", "paused")))
                .order_by(Job.id)
            )
        )


def _submit_in_session(
    world: World, spec: JobCreate, idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """The service's submit in a session of its own (committed), without the HTTP layer."""
    with world.session() as session:
        return jobs_service.submit(
            session,
            team=session.get(Team, world.team_id),
            spec=spec,
            idempotency_key=idempotency_key,
            now=world.clock(),
            scheduling=world.scheduling,
        )


def _submit(world: World, rng: random.Random) -> None:
    body = burn_in_job(
        # Runs of a few seconds up to ~2 h: long interruptible ones get split windows,
        # which a claim turns into one running hold.
        config={"steps": rng.choice([50, 60, 120]), "step_sleep_s": rng.choice([0, 30, 60])},
        gpus=rng.choice([1, 1, 2]),
        max_delay_minutes=rng.choice([0, 0, 30, 240, 1440]),
        priority=rng.choice([0, 0, 3]),
        interruptible=rng.random() < 0.5,
    )
    response = world.client.post("/v1/jobs", json=body, headers=bearer(world.key))
    assert response.status_code == 201, response.text


def _claim(world: World, rng: random.Random) -> None:
    path, headers = rng.choice(world.workers)
    response = world.client.post(f"{path}/claim", json={}, headers=headers)
    assert response.status_code in (200, 204), response.text
    if response.status_code == 200:
        body = response.json()
        fence = {"attempt": body["attempt"], "lease_token": body["lease_token"]}
        world.held[body["job"]["id"]] = (path, {**fence, "_headers": headers})


def _finish(world: World, rng: random.Random) -> None:
    if not world.held:
        return _claim(world, rng)
    job_id = rng.choice(sorted(world.held))
    path, fence = world.held.pop(job_id)
    headers = fence.pop("_headers")
    how, extra = rng.choice(
        [
            ("complete", {"result": {}}),
            ("fail", {"error": "oom", "retryable": True}),
            ("fail", {"error": "bad config", "retryable": False}),
            ("release", {"reason": "paused"}),
        ]
    )
    response = world.client.post(
        f"{path}/jobs/{job_id}/{how}",
        json={**fence, **extra},
        headers=headers,  # type: ignore[arg-type]
    )
    assert response.status_code in (200, 409), response.text


def _cancel(world: World, rng: random.Random) -> None:
    waiting = _waiting_ids(world)
    if waiting:
        job_id = rng.choice(waiting)
        response = world.client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(world.key))
        assert response.status_code == 200, response.text


def _replan(world: World, rng: random.Random) -> None:
    run_tick(world.app, "replan")


def _reap(world: World, rng: random.Random) -> None:
    world.clock.advance(seconds=world.app.state.settings.lease_seconds + 1)
    run_tick(world.app, "reap_leases")
    world.held.clear()  # those leases are gone (a late report would get 409)


def _refresh(world: World, rng: random.Random) -> None:
    run_tick(world.app, "refresh_forecasts")


def _advance(world: World, rng: random.Random) -> None:
    world.clock.advance(minutes=rng.choice([1, 15, 50]))


def _rolled_back_submit(world: World, rng: random.Random) -> None:
    """A submission planned from the caches, flushed, then rolled back."""
    with world.session() as session:
        team = session.get(Team, world.team_id)
        jobs_service.submit(
            session,
            team=team,
            spec=JobCreate.model_validate(burn_in_job(max_delay_minutes=0, gpus=2)),
            idempotency_key=None,
            now=world.clock(),
            scheduling=world.scheduling,
        )
        session.flush()
        session.rollback()


def _rolled_back_replan(world: World, rng: random.Random) -> None:
    with world.session() as session:
        world.scheduling.replan_zone(session, world.scheduling.default_zone, now=world.clock())
        session.flush()
        session.rollback()


OPS = [
    (_submit, 6),
    (_claim, 3),
    (_finish, 3),
    (_cancel, 1),
    (_replan, 1),
    (_reap, 0.5),
    (_refresh, 0.5),
    (_advance, 1),
    (_rolled_back_submit, 1),
    (_rolled_back_replan, 0.5),
]


# Clocks at which the caches must hold too: a leap day's last hour (its month's last too),
# and the nights Madrid's clocks change, whose tariff hours the slot grids then cross.
LEAP_DAY_LAST_HOUR = datetime(2028, 2, 29, 23, 30, tzinfo=UTC)
SPRING_FORWARD = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
FALL_BACK = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
EDGE_CLOCKS = [LEAP_DAY_LAST_HOUR, SPRING_FORWARD, FALL_BACK]


@pytest.mark.parametrize(
    ("seed", "clock"),
    [(1, None), (2, None), (3, LEAP_DAY_LAST_HOUR), (4, SPRING_FORWARD), (5, FALL_BACK)],
    indirect=["clock"],
)
def test_cached_plan_equals_cold_plan_after_random_changes(world: World, seed: int) -> None:
    rng = random.Random(seed)
    operations, weights = zip(*OPS, strict=True)
    hits = 0
    for step in range(45):
        operation = rng.choices(operations, weights)[0]
        operation(world, rng)
        caches = occupancy.caches_for(world.app.state.engine)
        entry = caches.occupancy.get(world.scheduling.default_zone)
        with world.session() as session:
            versions = occupancy.zone_versions(session, world.scheduling.default_zone)
        hits += entry is not None and versions is not None and entry.version == versions[0]
        cold, cached = _probe(world, rng)
        assert cached == cold, f"step {step}: {operation.__name__}"
    # The comparison is only worth something if the probes really used cached entries.
    assert hits >= 10


def test_a_rolled_back_submission_leaves_the_cache_as_it_was(world: World) -> None:
    _submit(world, random.Random(0))
    rng = random.Random(0)
    _probe(world, rng)  # fills the cache at the committed version
    caches = occupancy.caches_for(world.app.state.engine)
    zone = world.scheduling.default_zone
    before = caches.occupancy[zone]
    _rolled_back_submit(world, rng)
    assert caches.occupancy[zone] == before
    with world.session() as session:
        assert occupancy.zone_versions(session, zone)[0] == before.version


def test_a_committed_submission_advances_the_cache_by_exactly_its_job(world: World) -> None:
    rng = random.Random(0)
    _submit(world, rng)
    _probe(world, rng)
    caches = occupancy.caches_for(world.app.state.engine)
    zone = world.scheduling.default_zone
    before = caches.occupancy[zone]
    response = world.client.post(
        "/v1/jobs", json=burn_in_job(max_delay_minutes=0), headers=bearer(world.key)
    )
    after = caches.occupancy[zone]
    assert after.version == before.version + 1
    assert [held.job_id for held in after.jobs[len(before.jobs) :]] == [response.json()["id"]]
    # A claim is a change the cache cannot replay: the entry is dropped, not advanced.
    _claim(world, rng)
    assert zone not in caches.occupancy


def test_concurrent_submissions_leave_the_cache_equal_to_a_cold_read(world: World) -> None:
    """Threads commit in one order and report their commits in another; entries advance
    by the deltas noted before each commit. Afterwards the entry holds exactly the queue a
    cold read finds, and plans from it equal cold plans."""
    rng = random.Random(3)
    _probe(world, rng)  # an entry to advance
    zone = world.scheduling.default_zone
    errors: list[BaseException] = []

    def submit_some(seed: int) -> None:
        local = random.Random(seed)
        try:
            for _ in range(6):
                spec = burn_in_job(gpus=local.choice([1, 2]), max_delay_minutes=600)
                _submit_in_session(world, JobCreate.model_validate(spec))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=submit_some, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with world.session() as session:
        version = occupancy.zone_versions(session, zone)
        assert version is not None
        cached = occupancy.caches_for(world.app.state.engine).current(zone, version[0])
        cold = occupancy.occupancy(session, occupancy.ZoneCaches(), zone, None, world.clock())
    assert cached is not None, "the entry fell behind the commits"
    assert sorted(job.job_id for job in cached.jobs) == sorted(job.job_id for job in cold.jobs)
    assert sorted(_waiting_ids(world)) == sorted(job.job_id for job in cold.jobs)
    cold_plan, cached_plan = _probe(world, rng)
    assert cached_plan == cold_plan


@pytest.mark.parametrize("clock", EDGE_CLOCKS, indirect=True)
def test_another_process_follows_submissions_from_the_change_log(
    world: World, settings: Settings, clock: FakeClock
) -> None:
    """Two apps on one database have two sets of caches, as two processes or replicas do.
    Each one's entry follows the other's submissions by replaying the change log, without
    re-reading the queue; a claim (no log row) makes it re-read. Every plan from a followed
    entry equals a cold plan."""
    other_app = create_app(settings, clock=clock, run_ticks=False)
    with TestClient(other_app) as other_client:
        other = World(other_client, clock, world.key, world.team_id, world.workers)
        rng = random.Random(7)
        zone = world.scheduling.default_zone
        queue_reads = {"count": 0}

        def count_queue_reads(_conn, _cursor, statement: str, *_: object) -> None:
            # The caches' read of the queue (the cold probe reads it another way).
            if statement.lstrip().startswith("SELECT jobs.id, jobs.state, jobs.gpus"):
                queue_reads["count"] += 1

        _submit(world, rng)
        _probe(other, rng)  # the other process's entry, read cold once
        event.listen(other_app.state.engine, "before_cursor_execute", count_queue_reads)
        try:
            for step in range(6):
                _submit(world, rng)  # a submission this process never saw
                _submit(world, rng)
                cold, cached = _probe(other, rng)
                assert cached == cold, f"step {step}"
            assert queue_reads["count"] == 0, "the entry was re-read, not brought up"
            entry = occupancy.caches_for(other_app.state.engine).occupancy[zone]
            with other.session() as session:
                assert entry.version == occupancy.zone_versions(session, zone)[0]
            assert sorted(held.job_id for held in entry.jobs) == _waiting_ids(world)
            # A claim logs nothing: the other process re-reads, and still plans the same.
            _claim(world, rng)
            before = queue_reads["count"]
            cold, cached = _probe(other, rng)
            assert cached == cold
            assert queue_reads["count"] == before + 1
        finally:
            event.remove(other_app.state.engine, "before_cursor_execute", count_queue_reads)


def test_the_change_log_keeps_only_the_newest_versions(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(occupancy, "LOG_KEPT_VERSIONS", 2)
    rng = random.Random(11)
    for _ in range(5):
        _submit(world, rng)
    zone = world.scheduling.default_zone
    with world.session() as session:
        logged = sorted(session.scalars(select(ZoneChange.version)))
        current = occupancy.zone_versions(session, zone)[0]
    assert logged[-5:] == list(range(current - 4, current + 1))
    assert run_tick(world.app, "prune_zone_changes") == len(logged) - 2
    with world.session() as session:
        assert sorted(session.scalars(select(ZoneChange.version))) == [current - 1, current]


def test_a_lost_idempotency_race_leaves_no_phantom_job_in_the_caches(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loser of an idempotency race flushed its job in a savepoint that rolled back:
    the entry (and the change log other processes read) must not hold that job."""
    rng = random.Random(13)
    _probe(world, rng)
    spec = JobCreate.model_validate(burn_in_job(max_delay_minutes=600))
    first, _ = _submit_in_session(world, spec, "race")
    # The second request looks for the key before the first one's commit is visible...
    real_lookup = jobs_service._existing_for_key
    lookups = []

    def lookup_too_early(*args: object) -> Job | None:
        lookups.append(args)
        return None if len(lookups) == 1 else real_lookup(*args)

    monkeypatch.setattr(jobs_service, "_existing_for_key", lookup_too_early)
    job, created = _submit_in_session(world, spec, "race")
    assert (job.id, created) == (first.id, False)  # ...and loses at the INSERT
    zone = world.scheduling.default_zone
    with world.session() as session:
        version = occupancy.zone_versions(session, zone)[0]
        entry = occupancy.occupancy(
            session, occupancy.caches_for(world.app.state.engine), zone, version, world.clock()
        )
    assert sorted(held.job_id for held in entry.jobs) == _waiting_ids(world)
    cold, cached = _probe(world, rng)
    assert cached == cold
