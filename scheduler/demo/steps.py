"""The demo's steps against a running service: team, budget, dataset, submissions, the run
until every job ends, and the reports."""

from __future__ import annotations

import logging
import math
import multiprocessing
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from scheduler.client.render import fmt_kg, fmt_time
from scheduler.demo.clock import MAX_SPEEDUP, DemoClock, GridTimeTransport, scaled_timing
from scheduler.demo.render import budget_table, energy_table, plan_table, progress_text
from scheduler.serving import serve_in_thread

log = logging.getLogger("greenwindow.demo")

TEAM = "voice-lab"
# The demo's budget is this many times the three jobs' planned emissions, so the story (jobs
# admitted, then charged against the budget) is the same on every date and at every hour.
BUDGET_HEADROOM = 2.0
TERMINAL = {"succeeded", "failed", "cancelled"}
BUSY = {"ready", "running"}
POLL_S = 0.5


@dataclass(frozen=True)
class DemoJob:
    """One of the demo's submissions."""

    name: str
    objective: str
    deadline_hours: float
    interruptible: bool = False


DEMO_JOBS = (
    DemoJob("narrator-en", "carbon", 6.0),
    DemoJob("support-bot", "balanced", 12.0, interruptible=True),
    DemoJob("game-npc", "cost", 9.0),
)


@dataclass
class DemoOptions:
    """How the demo runs."""

    speedup: float = 720.0
    run_speedup: float = 10.0
    port: int = 8765
    data_dir: Path | None = None
    exit_when_done: bool = False
    kind: str = "auto"  # auto | gpt-sovits-finetune | burn-in
    steps: int = 24
    timeout_s: float = 900.0
    zone: str = "ES"
    # Where the grid clock starts (default: now), to replay the demo on a given date.
    start_at: datetime | None = None


def worker_main(server: str, token: str, work_dir: str, zone: str, clock_state: Any) -> None:
    """Entry point of the demo's worker child: one CPU-only agent on grid time."""
    logging.basicConfig(level=logging.WARNING, format="worker: %(levelname)s %(message)s")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    from worker.cli import run_agent

    run_agent(
        server,
        token,
        gpus=None,
        zone=zone,
        work_dir=Path(work_dir),
        cpu_only=True,
        poll_seconds=POLL_S,
        transport=GridTimeTransport(DemoClock(clock_state)),
    )


def demo_settings(data_dir: Path, options: DemoOptions) -> Any:
    """Service settings for the demo: SQLite in `data_dir`, fresh tokens, fast ticks."""
    from scheduler.settings import Settings

    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{(data_dir / 'greenwindow.db').as_posix()}",
        admin_token=secrets.token_urlsafe(24),
        worker_token=secrets.token_urlsafe(24),
        zone=options.zone,
        carbon_provider="trace",
        # Real-time tick intervals: grid hours pass in seconds, so replan every second.
        replan_seconds=1,
        maintenance_seconds=1,
        forecast_refresh_seconds=10,
        **scaled_timing(options.speedup),
    )


# -- the story ------------------------------------------------------------------------------


@dataclass
class DemoRun:
    """What the demo did: its jobs, their reports and the team's budget."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: dict[str, Any] | None = None
    dashboard_url: str = ""
    kind: str = ""


def training_core_usable() -> bool:
    """Whether the GPT-SoVITS training core imports here (else the demo runs burn-ins)."""
    try:
        import worker.training.runner  # noqa: F401
        import worker.training.sample  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: fall back
        return False
    return True


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (> 0)."""
    if value <= 0:
        return 1e-6
    scale = 10.0 ** math.floor(math.log10(value))
    mantissa = next(m for m in (1, 2, 5, 10) if m * scale >= value * (1 - 1e-12))
    return float(f"{mantissa * scale:.12g}")


def wait_until_validated(
    client: httpx.Client, dataset_id: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    """The dataset once its audio has been validated (jobs need it `ready`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = client.get(f"/v1/datasets/{dataset_id}").raise_for_status().json()
        if answer["state"] != "validating":
            if answer["state"] != "ready":
                raise RuntimeError(f"dataset {dataset_id} is invalid: {answer['state_reason']}")
            return dict(answer)
        if time.monotonic() > deadline:
            raise RuntimeError(f"dataset {dataset_id} still validating after {timeout_s:g} s")
        # Short: under the demo's accelerated clock every real second is an hour of plan.
        time.sleep(0.01)


def job_body(job: DemoJob, kind: str, dataset_id: str | None, steps: int) -> dict[str, Any]:
    """The submission for one demo job: a tiny CPU fine-tune (or a burn-in)."""
    body: dict[str, Any] = {
        "name": job.name,
        "kind": kind,
        "objective": job.objective,
        "interruptible": job.interruptible,
        "max_delay_minutes": int(job.deadline_hours * 60),
    }
    if kind == "gpt-sovits-finetune":
        # Stage 1 of the tiny model: a few dozen steps take seconds on a CPU. The demo's
        # worker holds no base models, so it starts from the random-init base.
        body["dataset"] = {"id": dataset_id}
        body["config"] = {
            "base": "none",
            "model_size": "tiny",
            "stage": "s1",
            "max_steps": steps,
            "batch_size": 2,
            "save_every_steps": max(1, steps // 3),
            "lora_rank": 8,
        }
    else:
        body["config"] = {"steps": steps * 10, "size": 256, "checkpoint_every": steps}
    return body


class Demo:
    """The demo's steps, each a method, against a running service."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def wait_for_worker(self, admin: httpx.Client, worker: Any, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(w.get("alive") for w in admin.get("/v1/workers").raise_for_status().json()):
                return
            if not worker.is_alive():
                raise RuntimeError("the demo worker exited before registering")
            time.sleep(0.2)
        raise RuntimeError("the demo worker did not register in time")

    def create_team(self, admin: httpx.Client) -> str:
        return str(
            admin.post("/v1/teams", json={"name": TEAM}).raise_for_status().json()["api_key"]
        )

    def set_budget(self, admin: httpx.Client, team: httpx.Client, bodies: list[dict]) -> None:
        """A monthly hard budget sized from what the planner expects the jobs to emit."""
        expected = 0.0
        for body in bodies:
            plan = team.post("/v1/plan/preview", json=body).raise_for_status().json()
            expected += max(plan["estimated_kg_co2e"], plan["run_now_kg_co2e"])
        limit = nice_ceiling(BUDGET_HEADROOM * expected)
        admin.put(
            f"/v1/teams/{TEAM}/budget",
            json={
                "period": "month",
                "limit_kg_co2e": limit,
                "thresholds": [{"percent": 80, "action": "notify"}],
            },
        ).raise_for_status()
        self.say(
            f"[bold]team[/] {TEAM}: budget {fmt_kg(limit)} per month (hard limit), "
            f"{BUDGET_HEADROOM:g}x what the planner expects the three jobs to emit"
        )

    def upload_dataset(self, team: httpx.Client, work: Path) -> str:
        from scheduler.client.files import zip_dataset_dir
        from worker.training.sample import audio_seconds, write_sample_dataset

        list_path = write_sample_dataset(work / "sample-dataset", n_utterances=8)
        # As `greenwindow datasets upload` does: the list and the audio only (a synthetic
        # sample's README.txt stays behind; the service refuses any other member).
        archive = zip_dataset_dir(list_path.parent, work / "sample-dataset.zip")
        answer = (
            team.post(
                "/v1/datasets",
                params={"name": "sample-voice"},
                content=archive.read_bytes(),
                headers={"Content-Type": "application/zip"},
            )
            .raise_for_status()
            .json()
        )
        answer = wait_until_validated(team, str(answer["id"]))
        self.say(
            f"[bold]dataset[/] {answer['id']}: 8 generated clips, "
            f"{audio_seconds(list_path):.0f} s of audio, uploaded"
        )
        return str(answer["id"])

    def submit(self, team: httpx.Client, bodies: list[dict]) -> list[str]:
        ids = [team.post("/v1/jobs", json=body).raise_for_status().json()["id"] for body in bodies]
        jobs = [team.get(f"/v1/jobs/{job_id}").raise_for_status().json() for job_id in ids]
        self.console.print(plan_table(jobs))
        return ids

    def run_until_done(self, team: httpx.Client, clock: DemoClock, ids: list[str]) -> None:
        seen: dict[str, tuple[str, int]] = {}
        started = time.monotonic()
        while True:
            jobs = [team.get(f"/v1/jobs/{job_id}").raise_for_status().json() for job_id in ids]
            busy = any(job["state"] in BUSY for job in jobs)
            clock.set_rate(self.options.run_speedup if busy else self.options.speedup)
            for job in jobs:
                step = int((job.get("progress") or {}).get("step") or 0)
                state = job["state"]
                before = seen.get(job["id"])
                changed = before is None or before[0] != state
                stepped = (
                    before is not None
                    and step != before[1]
                    and (step % 6 == 0 or step == (job.get("progress") or {}).get("total_steps"))
                )
                if changed or stepped:
                    grid = clock().strftime("%m-%d %H:%MZ")
                    reason = f"  ({job['state_reason']})" if changed and state != "running" else ""
                    self.say(
                        f"[dim]grid {grid}[/]  {job['name']:<12} {state:<9}"
                        f"{progress_text(job)}{reason}"
                    )
                    seen[job["id"]] = (state, step)
                elif before is not None and step != before[1]:
                    seen[job["id"]] = (state, before[1])
            if all(job["state"] in TERMINAL for job in jobs):
                return
            if time.monotonic() - started > self.options.timeout_s:
                raise TimeoutError(f"jobs not finished after {self.options.timeout_s:.0f} s")
            time.sleep(POLL_S)


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoRun:
    """Run the whole demo; returns what it did (after Ctrl-C unless `exit_when_done`)."""
    from scheduler.app import create_app
    from scheduler.db.migrate import upgrade

    console = console or Console()
    if not console.is_terminal:
        # Logs and CI captures: wide enough that the tables keep their columns.
        console = Console(width=180)
    if not 1 <= options.speedup <= MAX_SPEEDUP or not 1 <= options.run_speedup <= MAX_SPEEDUP:
        raise ValueError(f"speedups must be between 1 and {MAX_SPEEDUP:.0f}")
    created = options.data_dir is None
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="greenwindow-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    kind = options.kind
    if kind == "auto":
        kind = "gpt-sovits-finetune" if training_core_usable() else "burn-in"
    demo = Demo(options, console)
    result = DemoRun(kind=kind)
    settings = demo_settings(data_dir, options)
    upgrade(settings.database_url)
    context = multiprocessing.get_context("spawn")
    # Real time until the jobs are in: the planner should see "now" as the submission time.
    clock = DemoClock.start(1.0, context=context, at=options.start_at)
    app = create_app(settings, clock=clock)
    demo.say(
        f"[bold green]greenwindow demo[/]: zone {options.zone}, bundled carbon trace, "
        f"SQLite in {data_dir}\ngrid time runs {options.speedup:g}x while jobs wait and "
        f"{options.run_speedup:g}x while one runs; training, metering and accounting are real"
    )
    if kind == "burn-in":
        demo.say("[yellow]training core not importable here: running burn-in jobs instead[/]")
    worker = None
    try:
        with serve_in_thread(app, options.port) as url:
            admin = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {settings.admin_token}"},
                timeout=60,
            )
            demo.say(f"[bold]service[/] {url} (clock starts at {fmt_time(clock())})")
            worker = context.Process(
                target=worker_main,
                args=(
                    url,
                    settings.worker_token,
                    str(data_dir / "worker"),
                    options.zone,
                    clock.state,
                ),
                name="demo-worker",
            )
            worker.start()
            demo.wait_for_worker(admin, worker)
            demo.say("[bold]worker[/] registered (CPU only)")
            key = demo.create_team(admin)
            team = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            dataset_id = (
                demo.upload_dataset(team, data_dir) if kind == "gpt-sovits-finetune" else None
            )
            bodies = [job_body(job, kind, dataset_id, options.steps) for job in DEMO_JOBS]
            demo.set_budget(admin, team, bodies)
            ids = demo.submit(team, bodies)
            demo.say("[bold]running[/] (grid clock, job, state, progress):")
            demo.run_until_done(team, clock, ids)
            clock.set_rate(1.0)
            jobs = [team.get(f"/v1/jobs/{job_id}").raise_for_status().json() for job_id in ids]
            result.jobs = {job["id"]: job for job in jobs}
            result.reports = {
                job_id: team.get(f"/v1/jobs/{job_id}/energy").raise_for_status().json()
                for job_id in ids
            }
            result.budget = team.get(f"/v1/teams/{TEAM}/budget").raise_for_status().json()
            console.print(energy_table(jobs, result.reports))
            console.print(budget_table(result.budget, TEAM))
            result.dashboard_url = f"{url}/dashboard"
            demo.say(
                f"[bold]dashboard[/] {result.dashboard_url} "
                f"(sign in with the admin token {settings.admin_token})"
            )
            if not options.exit_when_done:
                demo.say("serving until Ctrl-C")
                _wait_forever()
    except KeyboardInterrupt:
        demo.say("stopping")
    finally:
        if worker is not None:
            _stop(worker)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


def _stop(worker: Any) -> None:
    """Ask the worker to finish (SIGTERM), then insist."""
    if worker.is_alive():
        worker.terminate()
        worker.join(timeout=30)
    if worker.is_alive():
        worker.kill()
        worker.join(timeout=5)
