"""The `greenwindow` command line: service, database, worker, simulation and tools."""

from __future__ import annotations

import importlib
import os
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer

from scheduler.client import register_client_commands
from scheduler.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="greenwindow: carbon-aware scheduling of GPT-SoVITS fine-tunes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
register_client_commands(app)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from scheduler.db.migrate import upgrade

    upgrade(_settings().database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ('base' drops everything)."""
    from scheduler.db.migrate import downgrade

    downgrade(_settings().database_url, revision)
    typer.echo(f"database at {revision}")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Skip migrations.")] = False,
    log_level: str = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Service processes sharing the port (PostgreSQL only: each is a replica).",
        ),
    ] = 1,
    reuse_port: Annotated[
        bool,
        typer.Option("--reuse-port", hidden=True, help="One of --workers' processes."),
    ] = False,
) -> None:
    """Run the API and the planner (applies migrations first unless --no-migrate)."""
    import uvicorn

    settings = _settings()
    if workers > 1 and settings.is_sqlite:
        # Several writers on one SQLite file would queue on its lock and each process would
        # run the maintenance ticks (only PostgreSQL's advisory locks keep those to one).
        raise typer.BadParameter(
            "several processes need PostgreSQL (GREENWINDOW_DATABASE_URL=postgresql://...); "
            "the embedded SQLite database serves one process",
            param_hint="'--workers'",
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not no_migrate:
        from scheduler.db.migrate import upgrade

        # Once, here, before any process serves: never N processes racing on the schema.
        upgrade(settings.database_url)
    if not settings.admin_token and not reuse_port:
        typer.echo(
            "warning: GREENWINDOW_ADMIN_TOKEN is not set; admin endpoints are closed", err=True
        )
    if workers > 1:
        from scheduler.serving import serve_processes

        # Each process is this command again, on its own socket bound to the same port.
        one_process = [sys.executable, "-m", "scheduler.cli", "serve", "--no-migrate"]
        one_process += ["--reuse-port", "--host", host, "--port", str(port)]
        one_process += ["--log-level", log_level]
        raise typer.Exit(serve_processes(workers, one_process))

    from scheduler.app import create_app
    from scheduler.request_gate import header_timeout_protocol

    service = create_app(settings)
    http = header_timeout_protocol(settings.header_timeout_seconds)
    if not reuse_port:
        uvicorn.run(service, host=host, port=port, log_level=log_level, http=http)
        return
    from scheduler.serving import reuse_port_socket

    server = uvicorn.Server(uvicorn.Config(service, log_level=log_level, http=http))
    server.run(sockets=[reuse_port_socket(host, port)])
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run: the server failed to start


DEFAULT_WORKER_DIR = Path(".greenwindow/worker")


class ForecastMode(StrEnum):
    perfect = "perfect"
    forecaster = "forecaster"


class Policy(StrEnum):
    greenwindow = "greenwindow"
    run_now = "run-now"
    sdk_window = "sdk-window"
    edf = "edf"


@app.command()
def simulate(
    trace: Annotated[
        list[str],
        typer.Option(
            help="Intensity trace file, or ZONE=FILE (repeat for several zones: jobs may "
            "then list `zones`)."
        ),
    ],
    workload: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Workload JSON.")],
    out: Annotated[Path, typer.Option(help="Where to write the plan JSON.")],
    forecast: ForecastMode = ForecastMode.perfect,
    policy: Policy = Policy.greenwindow,
) -> None:
    """Backtest a policy online on a trace: jobs appear at submission, plans revise each slot."""
    from scheduler.planning.simulate import main as run_simulation
    from scheduler.planning.simulate import main_zones

    try:
        if len(trace) == 1 and "=" not in trace[0]:
            path = Path(trace[0])
            if not path.is_file():
                raise ValueError(f"trace file {path} does not exist")
            run_simulation(path, workload, out, forecast=forecast.value, policy=policy.value)
        else:
            main_zones(trace, workload, out, forecast=forecast.value, policy=policy.value)
    except (ValueError, KeyError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def worker(
    server: Annotated[str, typer.Option(envvar="GREENWINDOW_SERVER", help="Service URL.")],
    token: Annotated[
        str | None, typer.Option(envvar="GREENWINDOW_WORKER_TOKEN", help="Fleet worker token.")
    ] = None,
    gpus: Annotated[str | None, typer.Option(help="GPU indices to use, e.g. 0,1.")] = None,
    zone: Annotated[
        str, typer.Option(envvar="GREENWINDOW_ZONE", help="Grid zone of this host.")
    ] = "ES",
    work_dir: Annotated[
        Path, typer.Option(help="Scratch space for datasets and runs.")
    ] = DEFAULT_WORKER_DIR,
    cpu_only: Annotated[bool, typer.Option(help="Run jobs on the CPU (no GPU needed).")] = False,
    poll_seconds: float = 2.0,
    max_jobs: Annotated[int | None, typer.Option(help="Exit after this many jobs.")] = None,
    models: Annotated[
        Path | None,
        typer.Option(
            "--models",
            envvar="GREENWINDOW_MODELS_DIR",
            help="Base models in upstream GPT-SoVITS's pretrained_models layout.",
        ),
    ] = None,
) -> None:
    """Run a GPU worker: register, claim jobs, train, meter energy, report."""
    require_worker_extra()
    from worker.cli import run_agent

    if not token:
        typer.echo("error: set GREENWINDOW_WORKER_TOKEN or pass --token", err=True)
        raise typer.Exit(2)
    gpu_list = [int(g) for g in gpus.split(",")] if gpus else None
    run_agent(
        server.rstrip("/"),
        token,
        gpus=gpu_list,
        zone=zone,
        work_dir=work_dir,
        cpu_only=cpu_only,
        poll_seconds=poll_seconds,
        max_jobs=max_jobs,
        models_dir=models,
    )


WORKER_PACKAGES = ("torch", "codecarbon", "pynvml", "safetensors")


def require_worker_extra() -> None:
    """Stop with one line naming the extra when a worker runs on a service-only install."""
    missing = []
    for name in WORKER_PACKAGES:
        try:
            importlib.import_module(name)  # the worker imports them all at once anyway
        except ImportError:
            missing.append(name)
    if missing:
        typer.echo(
            f"error: the worker needs {', '.join(missing)}, which a service-only install lacks: "
            "pip install 'greenwindow[worker]' (GPU hosts: install a CUDA build of torch first, "
            "see the README)",
            err=True,
        )
        raise typer.Exit(2)


@app.command("sample-dataset")
def sample_dataset(
    out_dir: Path,
    utterances: Annotated[int, typer.Option(min=1, max=200)] = 12,
    zip_to: Annotated[Path | None, typer.Option("--zip", help="Also write a zip.")] = None,
) -> None:
    """Write a small speech dataset (espeak-ng when installed, else labelled synthetic)."""
    from worker.training.sample import write_sample_dataset, zip_dataset

    list_path = write_sample_dataset(out_dir, n_utterances=utterances)
    typer.echo(f"wrote {list_path}")
    if zip_to is not None:
        typer.echo(f"wrote {zip_dataset(out_dir, zip_to)}")


@app.command("export")
def export_weights(
    models: Annotated[
        Path, typer.Option(help="Directory in GPT-SoVITS's pretrained_models layout.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the merged .ckpt and .pth.")],
    base: Annotated[str, typer.Option(help="Base model in --models.")] = "v2",
    adapters: Annotated[
        list[Path] | None, typer.Option("--adapters", help="A job's adapter file (repeatable).")
    ] = None,
) -> None:
    """Merge a job's adapters into a base; write GPT-SoVITS's GPT .ckpt and SoVITS .pth."""
    from worker.training.export import export_from_base

    try:
        written = export_from_base(models, base, adapters or [], out)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def demo(
    speedup: Annotated[
        float, typer.Option(min=1, max=3600, help="Grid seconds per real second while jobs wait.")
    ] = 720.0,
    run_speedup: Annotated[
        float, typer.Option(min=1, max=3600, help="Grid seconds per real second while one runs.")
    ] = 10.0,
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port.")] = 8765,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's database here (default: a temp dir).")
    ] = None,
    exit_when_done: Annotated[
        bool, typer.Option("--exit-when-done", help="Exit after the reports (tests, CI).")
    ] = False,
    kind: Annotated[str, typer.Option(help="auto, gpt-sovits-finetune or burn-in.")] = "auto",
    steps: Annotated[int, typer.Option(min=1, max=10_000, help="Training steps per job.")] = 24,
    timeout: Annotated[float, typer.Option(help="Give up after this many real seconds.")] = 900.0,
    start_at: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
            help="Start the grid clock at this UTC-offset time, e.g. 2026-11-30T23:07:00+00:00.",
        ),
    ] = None,
) -> None:
    """Run the whole loop locally: service, CPU worker, three jobs, reports, dashboard."""
    require_worker_extra()
    from scheduler.demo import DemoOptions, run_demo

    if kind not in ("auto", "gpt-sovits-finetune", "burn-in"):
        typer.echo("error: --kind must be auto, gpt-sovits-finetune or burn-in", err=True)
        raise typer.Exit(2)
    run_demo(
        DemoOptions(
            speedup=speedup,
            run_speedup=run_speedup,
            port=port,
            data_dir=data_dir,
            exit_when_done=exit_when_done,
            kind=kind,
            steps=steps,
            timeout_s=timeout,
            start_at=start_at,
        )
    )


signals_app = typer.Typer(help="The carbon signal provider.", no_args_is_help=True)
app.add_typer(signals_app, name="signals")


@signals_app.command("check")
def signals_check(
    zone: Annotated[
        str | None, typer.Option(help="Grid zone to try (default: GREENWINDOW_ZONE).")
    ] = None,
) -> None:
    """Call each endpoint of the configured provider once and print what this account has."""
    from scheduler.carbon.providers.check import check_signals, format_report, usable
    from scheduler.carbon.providers.factory import plan_for

    settings = _settings()
    zone = zone or settings.zone
    try:
        probes = check_signals(
            settings.carbon_provider,
            zone,
            token=settings.carbon_token,
            username=settings.carbon_username,
            password=settings.carbon_password,
            trace_path=settings.carbon_trace_path,
            base_url=settings.carbon_base_url,
        )
    except Exception as exc:  # a provider that cannot even be built: say why, plainly
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        format_report(
            settings.carbon_provider,
            zone,
            plan_for(settings.carbon_plan, settings.carbon_provider),
            settings.carbon_base_url,
            probes,
        )
    )
    if not usable(probes):
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the `greenwindow` command: a failure is one plain line, never a traceback
    (GREENWINDOW_DEBUG=1 shows it)."""
    try:
        app()
    except Exception as exc:  # usage errors and Ctrl-C were already handled by the parser
        if os.environ.get("GREENWINDOW_DEBUG"):
            raise
        typer.echo(f"error: {one_line_error(exc)}", err=True)
        sys.exit(1)


def one_line_error(exc: BaseException) -> str:
    """What went wrong, in one line: an HTTP answer's status and detail, else the message."""
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        request = exc.request
        return (
            f"{request.method} {request.url.path} answered {response.status_code}: {detail}"
        ).replace("\n", " ")[:500]
    if isinstance(exc, httpx.HTTPError):
        return f"cannot reach the service: {type(exc).__name__}: {exc}".replace("\n", " ")
    message = str(exc).strip().replace("\n", " ") or "no message"
    return f"{type(exc).__name__}: {message}"


if __name__ == "__main__":
    main()
