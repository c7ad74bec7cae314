"""`greenwindow admin ...`: teams, keys, budgets, tariffs and workers, with the admin token.

The admin token is given like a team key: `--key`, GREENWINDOW_API_KEY or the client config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from scheduler.client import render
from scheduler.client.commands import KeyOption, ServerOption, _client, _console, _one_line_errors
from scheduler.client.http import ClientError

admin_app = typer.Typer(help="Administration (needs the admin token as key).", no_args_is_help=True)
teams_app = typer.Typer(help="Create and list teams.", no_args_is_help=True)
keys_app = typer.Typer(help="Create and revoke team API keys.", no_args_is_help=True)
budget_app = typer.Typer(help="Set and show team carbon budgets.", no_args_is_help=True)
tariff_app = typer.Typer(help="Set a zone's time-of-use tariff.", no_args_is_help=True)
admin_app.add_typer(teams_app, name="teams")
admin_app.add_typer(keys_app, name="keys")
admin_app.add_typer(budget_app, name="budget")
admin_app.add_typer(tariff_app, name="tariff")


def _shown_once(what: str, secret: str) -> None:
    typer.echo(f"{what}: {secret}")
    typer.echo("store it now: only its hash is kept, it cannot be shown again", err=True)


@teams_app.command("create")
def teams_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Team name: a-z, 0-9, '-' and '_'.")],
    webhook_url: Annotated[
        str | None, typer.Option(help="Where budget notifications are POSTed.")
    ] = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Create a team and its first API key."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        created = client.create_team(name, webhook_url=webhook_url)
    typer.echo(f"team {created['name']} created (key id {created['key_id']})")
    _shown_once("api key", created["api_key"])


@teams_app.command("list")
def teams_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="The raw list as JSON.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Every team with its keys."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        found = client.teams()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("team", "created", "active keys", "revoked keys", "webhook")
    for team in found:
        keys = team.get("keys") or []
        table.add_row(
            str(team["name"]),
            render.fmt_time(team["created_at"]),
            ", ".join(k["id"] for k in keys if not k.get("revoked_at")) or "-",
            str(sum(1 for k in keys if k.get("revoked_at"))),
            str(team.get("webhook_url") or "-"),
        )
    _console().print(table)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team name.")],
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """A new API key for a team (e.g. to rotate the old one out)."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        created = client.create_key(team)
    typer.echo(f"key {created['key_id']} created for {team}")
    _shown_once("api key", created["api_key"])


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team name.")],
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (not its secret).")],
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Revoke a team's API key at once."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        revoked = client.revoke_key(team, key_id)
    typer.echo(f"key {revoked['id']} of {team} revoked at {render.fmt_time(revoked['revoked_at'])}")


@budget_app.command("set")
def budget_set(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team name.")],
    limit: Annotated[float, typer.Option("--limit", help="kg CO2e per period.")],
    period: Annotated[str, typer.Option(help="day, week, month, quarter or year.")] = "month",
    mode: Annotated[str, typer.Option(help="hard (holds or refuses jobs) or soft (warns).")] = (
        "hard"
    ),
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            help="PERCENT:ACTION, e.g. 80:notify or 100:hold_new (repeatable).",
        ),
    ] = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Set or replace a team's carbon budget."""
    with _one_line_errors():
        spec = {
            "period": period,
            "limit_kg_co2e": limit,
            "mode": mode,
            "thresholds": [_threshold(text) for text in threshold or []],
        }
        with _client(ctx, server, key) as client:
            figures = client.set_budget(team, spec)
    typer.echo(
        f"{team}: {render.fmt_kg(figures['limit_kg_co2e'])} per {figures['period']} "
        f"({figures['mode']}); {render.fmt_kg(figures['remaining_kg_co2e'])} remaining"
    )


def _threshold(text: str) -> dict[str, Any]:
    percent, sep, action = text.partition(":")
    try:
        value = float(percent)
    except ValueError:
        value = None
    if not sep or value is None or not action:
        raise ClientError(f"--threshold {text!r}: write PERCENT:ACTION, e.g. 80:notify")
    return {"percent": value, "action": action}


@budget_app.command("show")
def budget_show(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="Team name.")],
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """A team's budget figures this period (the same view as `greenwindow budget TEAM`)."""
    from scheduler.client.commands import budget

    budget(ctx, team=team, as_json=False, server=server, key=key)


@tariff_app.command("set")
def tariff_set(
    ctx: typer.Context,
    zone: Annotated[str, typer.Argument(help="Grid zone, e.g. ES.")],
    file: Annotated[Path, typer.Argument(help="The schedule as YAML or JSON.")],
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Set a zone's time-of-use tariff from a file (see the README for its shape)."""
    with _one_line_errors():
        try:
            schedule = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ClientError(f"cannot read {file}: {exc}".splitlines()[0]) from None
        if not isinstance(schedule, dict):
            raise ClientError(f"{file} must hold one mapping (timezone, default_price, windows)")
        with _client(ctx, server, key) as client:
            stored = client.set_tariff(zone, schedule)
    windows = len(stored.get("windows") or [])
    typer.echo(f"tariff of {zone} set: {windows} windows, timezone {stored.get('timezone')}")


@admin_app.command("workers")
def workers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="The raw list as JSON.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """The registered workers: zone, GPUs, liveness and what they run."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        found = client.workers()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no workers registered")
        return
    table = Table("worker", "host", "zone", "GPUs", "alive", "last seen", "running")
    for worker in found:
        gpus = worker.get("gpus") or []
        names = sorted({str(g.get("name", "?")) for g in gpus})
        table.add_row(
            str(worker["id"]),
            str(worker["host"]),
            str(worker["zone"]),
            "cpu only" if worker.get("cpu_only") else f"{len(gpus)} × {', '.join(names)}",
            "yes" if worker.get("alive") else "no",
            render.fmt_time(worker["last_seen_at"]),
            ", ".join(worker.get("running_jobs") or []) or "-",
        )
    _console().print(table)


def register_admin_commands(app: typer.Typer) -> None:
    """Add `greenwindow admin ...`."""
    app.add_typer(admin_app, name="admin")
