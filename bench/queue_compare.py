"""The same queue workload through three paths, side by side: enqueue N no-op jobs, then 16
concurrent consumers claim and complete them until the queue is empty.

1. greenwindow's claim path called directly (scheduler.workers.service) on PostgreSQL;
2. greenwindow's claim path over HTTP (a real `greenwindow serve`, 16 worker clients);
3. procrastinate (a PostgreSQL job queue) with a 16-way worker, on its own database.

    python bench/queue_compare.py --jobs 1000
    python bench/queue_compare.py --jobs 300 --only direct,procrastinate

Figures are printed (jobs/s), never asserted. Each path gets a fresh database on
--postgres-admin-url (default GREENWINDOW_TEST_POSTGRES_URL), dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load import (  # noqa: E402 - bench scripts are run as files, not as a package
    claim_and_complete_over_http,
    double_claims,
    fresh_database,
    psycopg_url,
    served,
)

CONSUMERS = 16


def insert_ready_jobs(database_url: str, count: int) -> None:
    """A team and `count` ready one-GPU no-op jobs, inserted in one transaction."""
    from scheduler.db.session import make_engine, make_session_factory, session_scope
    from scheduler.jobs.models import Job
    from scheduler.teams import service as teams

    now = datetime.now(UTC)
    engine = make_engine(psycopg_url(database_url))
    with session_scope(make_session_factory(engine)) as session:
        team, _, _ = teams.create_team(session, name=f"queue-{count}", now=now)
        session.add_all(
            Job(
                team_id=team.id,
                name=f"noop-{i}",
                kind="burn-in",
                dataset={},
                config={"steps": 1},
                gpus=1,
                deadline=now + timedelta(hours=1),
                interruptible=False,
                objective="carbon",
                priority=0,
                zone="ES",
                state="ready",
                state_reason="ready",
                submitted_at=now,
                updated_at=now,
                planned_start=now,
                planned_intervals=[],
                attempt=0,
                infra_restarts=0,
                cancel_requested=False,
                pause_requested=False,
            )
            for i in range(count)
        )
    engine.dispose()


def migrate(database_url: str) -> None:
    from scheduler.db.migrate import upgrade

    upgrade(psycopg_url(database_url))


def direct_path(database_url: str, jobs: int) -> tuple[float, int]:
    """16 threads call the service's claim and complete functions, one transaction each."""
    from scheduler.db.session import make_engine, make_session_factory, session_scope
    from scheduler.scheduling.service import Scheduling
    from scheduler.settings import Settings
    from scheduler.workers import service
    from scheduler.workers.models import Worker
    from scheduler.workers.schemas import WorkerRegister

    settings = Settings(database_url=database_url, data_dir=Path(tempfile.mkdtemp()))
    scheduling = Scheduling(settings, lambda: datetime.now(UTC))
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    worker_ids = []
    with session_scope(sessions) as session:
        for i in range(CONSUMERS):
            spec = WorkerRegister(host=f"direct-{i}", zone="ES", cpu_only=True)
            worker, _ = service.register(
                session, spec, now=datetime.now(UTC), heartbeat_seconds=15, default_zone="ES"
            )
            session.flush()
            worker_ids.append(worker.id)
    done: list[str] = []
    lock = threading.Lock()

    def consume(worker_id: str) -> None:
        while True:
            with session_scope(sessions) as session:
                worker = session.get(Worker, worker_id)
                assert worker is not None
                claimed = service.claim(session, worker, now=datetime.now(UTC), lease_seconds=90)
                if claimed is None:
                    return
                job_id = claimed.job.id
            with session_scope(sessions) as session:
                worker = session.get(Worker, worker_id)
                assert worker is not None
                job = service.fenced_job(
                    session,
                    worker,
                    job_id,
                    attempt=claimed.job.attempt,
                    lease_token=claimed.job.lease_token or "",
                )
                service.complete(
                    session,
                    job,
                    report=None,
                    result={},
                    now=datetime.now(UTC),
                    scheduling=scheduling,
                )
            with lock:
                done.append(job_id)

    started = time.perf_counter()
    threads = [threading.Thread(target=consume, args=(w,)) for w in worker_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, len(done)


def procrastinate_path(database_url: str, jobs: int) -> tuple[float, int]:
    """procrastinate: defer `jobs` no-op tasks in one batch, then a 16-way worker drains them."""
    import procrastinate

    completed: list[int] = []
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database_url))

    @app.task(name="noop")
    def noop(index: int) -> None:
        completed.append(index)

    with app.open():
        app.schema_manager.apply_schema()
        noop.batch_defer(*({"index": i} for i in range(jobs)))
        started = time.perf_counter()
        # wait=False: the worker stops once the queue is empty.
        app.run_worker(concurrency=CONSUMERS, wait=False, install_signal_handlers=False)
        elapsed = time.perf_counter() - started
    return elapsed, len(completed)


def main() -> None:
    """Run the chosen paths and print jobs/s for each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--only", default="direct,http,procrastinate")
    parser.add_argument(
        "--postgres-admin-url", default=os.environ.get("GREENWINDOW_TEST_POSTGRES_URL")
    )
    args = parser.parse_args()
    paths = args.only.split(",")
    print(f"{args.jobs} no-op jobs, {CONSUMERS} concurrent consumers, PostgreSQL")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "direct" in paths:
            with fresh_database("postgresql", args.postgres_admin_url, work) as url:
                migrate(url)
                insert_ready_jobs(url, args.jobs)
                elapsed, done = direct_path(url, args.jobs)
                twice, never = double_claims(url)
                results["greenwindow claim, direct"] = (elapsed, done, twice, never)
        if "http" in paths:
            quiet = {
                "GREENWINDOW_REPLAN_SECONDS": "86400",
                "GREENWINDOW_FORECAST_REFRESH_SECONDS": "86400",
            }
            with fresh_database("postgresql", args.postgres_admin_url, work) as url:
                with served(url, work, **quiet) as (service_url, _):
                    time.sleep(2)  # the start-up replan would defer jobs readied before it
                    insert_ready_jobs(url, args.jobs)
                    elapsed, done = claim_and_complete_over_http(service_url, CONSUMERS, args.jobs)
                twice, never = double_claims(url)
                results["greenwindow claim, HTTP"] = (elapsed, done, twice, never)
        if "procrastinate" in paths:
            with fresh_database("postgresql", args.postgres_admin_url, work) as url:
                elapsed, done = procrastinate_path(url, args.jobs)
                results["procrastinate"] = (elapsed, done, None, None)
    for name, (elapsed, done, twice, never) in results.items():
        checks = "" if twice is None else f"  double claims {twice}, never run {never}"
        print(
            f"  {name:<28} {done:>6} jobs in {elapsed:6.1f} s = {done / elapsed:7.1f} jobs/s"
            f"{checks}"
        )


if __name__ == "__main__":
    main()
