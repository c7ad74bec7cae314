"""The `greenwindow` command line: service, database, worker, simulation and tools."""

from __future__ import annotations

import sys
from typing import Annotated

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
) -> None:
    """Run the API and the planner (applies migrations first unless --no-migrate)."""
    import uvicorn

    from scheduler.app import create_app

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not no_migrate:
        from scheduler.db.migrate import upgrade

        upgrade(settings.database_url)
    if not settings.admin_token:
        typer.echo(
            "warning: GREENWINDOW_ADMIN_TOKEN is not set; admin endpoints are closed", err=True
        )
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


def main() -> None:
    """Entry point for `python -m scheduler.cli`."""
    app()


if __name__ == "__main__":
    sys.exit(main())
