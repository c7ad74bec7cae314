"""The user-facing commands: submit, jobs, status, watch, cancel, energy, budget, forecast."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from scheduler.client import render
from scheduler.client.config import ClientConfigError, resolve_config
from scheduler.client.http import ClientError, ConnectionFailed, JsonClient
from scheduler.client.jobfile import build_submission, load_job_file, parse_assignments

# The bundled trace's zone: what a fresh install plans against when nothing else says.
FALLBACK_ZONE = "ES"
FORECAST_HOURS = 48
# A watch survives this many failed polls in a row (a restarting server) before giving up.
WATCH_RETRIES = 5

ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Service URL [env GREENWINDOW_SERVER].", show_default=False),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", help="Team API key [env GREENWINDOW_API_KEY].", show_default=False),
]


@dataclass
class ClientHooks:
    """What a caller (the tests, an embedding program) may inject as the command context's obj."""

    transport: httpx.BaseTransport | None = None
    env: dict[str, str] | None = None
    sleep: Callable[[float], None] = time.sleep


def _hooks(ctx: typer.Context) -> ClientHooks:
    return ctx.find_object(ClientHooks) or ClientHooks()


def _console() -> Console:
    # No markup: job names, reasons and errors are user data and may contain brackets.
    return Console(highlight=False, markup=False, soft_wrap=False)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn client failures into `error: ...` on stderr and exit status 1."""
    try:
        yield
    except (ClientError, ClientConfigError) as exc:
        message = exc.one_line() if isinstance(exc, ClientError) else str(exc)
        typer.echo(f"error: {render.inert(message)}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def _client(ctx: typer.Context, server: str | None, key: str | None) -> Iterator[JsonClient]:
    hooks = _hooks(ctx)
    config = resolve_config(server=server, api_key=key, env=hooks.env)
    with JsonClient(config, transport=hooks.transport) as client:
        yield client


def _newest_job(client: JsonClient) -> dict[str, Any] | None:
    page = client.jobs_page(limit=1)
    return page["items"][0] if page["items"] else None


def submit(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="A YAML or JSON job file.", show_default=False)
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name.")] = None,
    kind: Annotated[str | None, typer.Option(help="gpt-sovits-finetune or burn-in.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset id, or a local directory or zip to upload first."),
    ] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs the job needs.")] = None,
    deadline: Annotated[str | None, typer.Option(help="RFC 3339 deadline.")] = None,
    max_delay: Annotated[
        int | None,
        typer.Option(
            "--max-delay", help="Start delay in minutes (0: start now) instead of a deadline."
        ),
    ] = None,
    interruptible: Annotated[
        bool | None,
        typer.Option("--interruptible/--not-interruptible", help="May be paused and resumed."),
    ] = None,
    objective: Annotated[str | None, typer.Option(help="carbon, cost or balanced.")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    zone: Annotated[str | None, typer.Option(help="Grid zone to run in.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Training config value, key=value (repeatable)."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Resubmitting with the same key returns the same job.")
    ] = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Submit a job from flags or a job file; print its plan."""
    with _one_line_errors():
        if dataset is not None and Path(dataset).exists():
            dataset = _upload_for_submission(ctx, Path(dataset), server, key)
        body = build_submission(
            load_job_file(file) if file else None,
            {
                "name": name,
                "kind": kind,
                "dataset": dataset,
                "gpus": gpus,
                "deadline": deadline,
                "max_delay_minutes": max_delay,
                "interruptible": interruptible,
                "objective": objective,
                "priority": priority,
                "zone": zone,
            },
            parse_assignments(set_ or []),
        )
        with _client(ctx, server, key) as client:
            job = client.submit(body, idempotency_key=idempotency_key)
    job = render.inert_data(job)
    console = _console()
    console.print(Text.assemble("submitted ", (str(job["id"]), "bold")))
    console.print(
        render.key_value_table(
            [
                ("state", job["state"]),
                ("planned window", render.fmt_window(job["planned_start"], job["planned_end"])),
                ("expected", render.fmt_kg(job["estimated_kg_co2e"])),
                ("saving", render.saving_text(job)),
                ("reason", job.get("state_reason") or "-"),
            ]
        )
    )


def _upload_for_submission(
    ctx: typer.Context, source: Path, server: str | None, key: str | None
) -> str:
    """Upload a local dataset and wait until the service accepts it; its id."""
    from scheduler.client.files import upload_dataset_path, wait_until_usable

    with _client(ctx, server, key) as client:
        uploaded = upload_dataset_path(client, source, name=None)
        usable = wait_until_usable(client, uploaded, sleep=_hooks(ctx).sleep)
    typer.echo(f"uploaded dataset {usable['id']} from {source}", err=True)
    return str(usable["id"])


def jobs(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just the first.")] = (
        False
    ),
    limit: Annotated[int, typer.Option(min=1, max=200, help="Jobs per page.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List your jobs, newest first."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        if all_pages:
            found, more = list(client.iter_jobs(state=state, limit=limit, all_pages=True)), False
        else:
            page = client.jobs_page(state=state, limit=limit)
            found, more = page["items"], bool(page.get("next_cursor"))
    if as_json:
        for job in found:
            typer.echo(json.dumps(job))
        return
    if not found:
        typer.echo("no jobs" + (f" in state {render.inert(state)}" if state else ""))
        return
    _console().print(render.jobs_table(render.inert_data(found)))
    if more:
        typer.echo(f"showing the newest {len(found)}; --all lists every job", err=True)


def status(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The raw job as JSON.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Show one job."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        job = client.job(job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    _console().print(render.key_value_table(render.job_rows(render.inert_data(job))))


def cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Cancel a job (a running one stops through its worker)."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        job = client.cancel(job_id)
    job = render.inert_data(job)
    if job["state"] == "cancelled":
        typer.echo(f"{job['id']} cancelled")
    else:
        typer.echo(f"{job['id']} cancel requested; it is {job['state']} until its worker stops")


def _poll(
    client: JsonClient, job_id: str, sleep: Callable[[float], None], interval: float
) -> dict[str, Any]:
    failures = 0
    while True:
        try:
            return client.job(job_id)
        except ConnectionFailed:
            failures += 1
            if failures > WATCH_RETRIES:
                raise
            sleep(interval)


def _running_report(client: JsonClient, job: dict[str, Any]) -> dict[str, Any] | None:
    """The energy report of a running job (kWh so far); None when unavailable."""
    if job["state"] != "running":
        return None
    try:
        return client.energy(job["id"])
    except ClientError:
        # Progress without energy figures beats no progress: the bar keeps going.
        return None


def _follow(
    client: JsonClient, job_id: str, hooks: ClientHooks, interval: float
) -> Iterator[tuple[dict[str, Any], dict[str, float | None]]]:
    """Each poll's job and live energy, the last one being the terminal state."""
    job = client.job(job_id)
    while True:
        yield job, render.live_energy(job, _running_report(client, job))
        if job["state"] in render.TERMINAL_STATES:
            return
        hooks.sleep(interval)
        job = _poll(client, job_id, hooks.sleep, interval)


def _step_text(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if progress.get("step") is None:
        return ""
    total = progress.get("total_steps")
    return f"step {progress['step']}/{total if total is not None else '?'} · "


def watch(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between polls.")] = 2.0,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Follow a job live until it ends (exit status 0 only if it succeeded)."""
    hooks = _hooks(ctx)
    console = _console()
    job: dict[str, Any] = {}
    with _one_line_errors(), _client(ctx, server, key) as client:
        updates = _follow(client, job_id, hooks, interval)
        if console.is_terminal:
            bar = Progress(
                TextColumn("{task.description}", style="bold", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[line]}", markup=False),
                console=console,
            )
            task = bar.add_task(job_id, total=None, line="")
            with Live(bar, console=console, refresh_per_second=4):
                for raw_job, energy in updates:
                    job = render.inert_data(raw_job)
                    progress = job.get("progress") or {}
                    bar.update(
                        task,
                        description=job["name"],
                        total=progress.get("total_steps"),
                        completed=progress.get("step") or 0,
                        line=render.progress_line(job, energy),
                    )
        else:
            # Piped or logged: one plain line per change instead of a redrawn bar.
            last = ""
            for raw_job, energy in updates:
                job = render.inert_data(raw_job)
                line = f"{job['name']}: {_step_text(job)}{render.progress_line(job, energy)}"
                if line != last:
                    console.print(line)
                    last = line
    summary = f"{job['id']} {job['state']}"
    if job.get("actual_kwh") is not None:
        summary += f": {render.fmt_number(job['actual_kwh'], 'kWh', 5)}"
        summary += f", {render.fmt_kg(job.get('actual_kg_co2e'))}"
    if job.get("error"):
        summary += f" ({job['error']})"
    console.print(summary)
    if job["state"] != "succeeded":
        raise typer.Exit(1)


def energy(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The raw report as JSON.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Show a job's energy and emissions report."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        report = client.energy(job_id)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = _console()
    for table in render.energy_tables(render.inert_data(report)):
        console.print(table)


def budget(
    ctx: typer.Context,
    team: Annotated[
        str | None, typer.Argument(help="Team name (default: your team).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The raw figures as JSON.")] = False,
    history: Annotated[
        bool, typer.Option("--history", help="How the budget burned over this period.")
    ] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Show a team's carbon budget: actual and committed against the limit."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        name = team or client.config.team or _team_of_newest_job(client)
        figures = client.budget_history(name) if history else client.budget(name)
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    console = _console()
    name, figures = render.inert(name), render.inert_data(figures)
    if history:
        console.print(Text.assemble((name, "bold"), " budget burn this period"))
        console.print(render.burn_table(figures))
        return
    console.print(
        Text.assemble(
            (name, "bold"),
            f" {figures['period']} budget {render.fmt_time(figures['period_start'])}"
            f" → {render.fmt_time(figures['period_end'])} ({figures['mode']}, {figures['state']})",
        )
    )
    console.print(
        render.budget_bar(
            figures["actual_kg_co2e"], figures["committed_kg_co2e"], figures["limit_kg_co2e"]
        )
    )
    console.print(
        render.key_value_table(
            [
                ("limit", render.fmt_kg(figures["limit_kg_co2e"])),
                ("actual", render.fmt_kg(figures["actual_kg_co2e"])),
                ("committed", render.fmt_kg(figures["committed_kg_co2e"])),
                ("remaining", render.fmt_kg(figures["remaining_kg_co2e"])),
                ("forecast", render.fmt_kg(figures["forecast_kg_co2e"])),
            ]
        )
    )


def _team_of_newest_job(client: JsonClient) -> str:
    newest = _newest_job(client)
    if newest is None:
        raise ClientError("give a TEAM (or set GREENWINDOW_TEAM / team in the client config)")
    return str(newest["team"])


def _planned_jobs(client: JsonClient, zone: str) -> list[dict[str, Any]]:
    """The caller's jobs that wait or run in `zone` (their windows go under the sparkline)."""
    found: list[dict[str, Any]] = []
    for state in (*render.WAITING_STATES, "running"):
        found.extend(j for j in client.iter_jobs(state=state, limit=200) if j["zone"] == zone)
    return found


def forecast(
    ctx: typer.Context,
    zone: Annotated[
        str | None, typer.Argument(help="Grid zone (default: your newest job's).")
    ] = None,
    hours: Annotated[int, typer.Option(min=1, max=168, help="Hours ahead.")] = FORECAST_HOURS,
    as_json: Annotated[bool, typer.Option("--json", help="The raw forecast as JSON.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Show the zone's carbon-intensity forecast as a sparkline, with your planned windows."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        if zone is None:
            newest = None if client.config.zone else _newest_job(client)
            zone = client.config.zone or (newest["zone"] if newest else FALLBACK_ZONE)
        data = client.forecast(zone, hours=hours)
        planned = _planned_jobs(client, zone)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    _console().print(
        forecast_view(
            render.inert(zone), render.inert_data(data), render.inert_data(planned), hours=hours
        )
    )


def forecast_view(
    zone: str, data: dict[str, Any], planned: list[dict[str, Any]], *, hours: int
) -> Text:
    """The forecast as text: header, sparkline, planned-window marks, hour axis, extremes."""
    points = data.get("points") or []
    if not points:
        return Text(f"{zone}: the forecast has no points")
    first = render.parse_time(points[0]["t"]) or datetime.now(UTC)
    start = first.replace(minute=0, second=0, microsecond=0)
    columns = render.hourly_columns(points, start, hours)
    known = [(v, i) for i, v in enumerate(columns) if v is not None]
    low, low_at = min(known)
    high = max(v for v, _ in known)
    intervals = [i for job in planned for i in render.planned_intervals(job)]
    generated = render.fmt_time(data.get("generated_at"))
    text = Text()
    text.append(f"{zone}", style="bold")
    text.append(
        f" carbon intensity, next {hours} h "
        f"({data.get('source', '?')}, {data.get('signal_type', '?')}; generated {generated})\n"
    )
    text.append(f"{render.sparkline(columns)}  max {high:.0f} g/kWh\n", style="green")
    marks = render.window_marks(intervals, start, hours)
    text.append(marks, style="bold cyan")
    text.append(f"  your planned jobs: {len(planned)}\n")
    text.append(render.hour_axis(start, hours) + "  UTC hour\n", style="dim")
    low_time = render.fmt_time(start + timedelta(hours=low_at))
    now_value = columns[0] if columns[0] is not None else known[0][0]
    text.append(f"min {low:.0f} g/kWh at {low_time}; now {now_value:.0f} g/kWh")
    return text


def register_client_commands(app: typer.Typer) -> None:
    """Add the user commands to the top level of the `greenwindow` app."""
    for command in (submit, jobs, status, watch, cancel, energy, budget, forecast):
        app.command(name=command.__name__)(command)


# The names other modules (and programs embedding the client) use.
__all__ = ["ClientHooks", "forecast_view", "register_client_commands"]
