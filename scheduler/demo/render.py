"""The demo's tables: where the planner put the jobs, what they used, the team's budget."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from scheduler.client.render import fmt_kg, fmt_number, fmt_time, fmt_window, saving_text


def plan_table(jobs: list[dict[str, Any]]) -> Table:
    """Where the planner put each job, and why."""
    table = Table(title="Where the planner put each job", title_justify="left")
    for column in ("job", "objective", "deadline", "planned window"):
        table.add_column(column)
    table.add_column("expected", justify="right")
    table.add_column("saving vs now", justify="right")
    table.add_column("why")
    for job in jobs:
        table.add_row(
            job["name"] + (" (interruptible)" if job["interruptible"] else ""),
            job["objective"],
            fmt_time(job["deadline"]),
            fmt_window(job["planned_start"], job["planned_end"]),
            fmt_kg(job["estimated_kg_co2e"]),
            saving_text(job),
            job["state_reason"],
        )
    return table


def energy_table(jobs: list[dict[str, Any]], reports: dict[str, dict[str, Any]]) -> Table:
    """Each job's measured energy and emissions."""
    table = Table(title="Energy reports (measured)", title_justify="left")
    table.add_column("job")
    table.add_column("state")
    for column in ("kWh GPU", "kWh CPU", "kWh RAM", "kWh total", "kg CO2e", "g/kWh"):
        table.add_column(column, justify="right")
    table.add_column("methods (gpu/cpu/ram)")
    table.add_column("signal")
    for job in jobs:
        report = reports.get(job["id"]) or {}
        kwh = report.get("kwh") or {}
        methods = report.get("methods") or {}
        signal = report.get("signal") or {}
        table.add_row(
            job["name"],
            job["state"],
            *(fmt_number(kwh.get(part), digits=6) for part in ("gpu", "cpu", "ram", "total")),
            fmt_kg(report.get("kg_co2e")),
            fmt_number(report.get("intensity_g_per_kwh_avg"), digits=1),
            "/".join(str(methods.get(part) or "-") for part in ("gpu", "cpu", "ram")),
            f"{signal.get('source') or '-'} ({signal.get('type') or '-'})",
        )
    return table


def budget_table(budget: dict[str, Any], team: str) -> Table:
    """The team's budget this period."""
    table = Table(title=f"Team {team}: carbon budget this {budget['period']}", title_justify="left")
    for column in ("limit", "actual", "committed", "forecast", "remaining", "state"):
        table.add_column(column, justify="right")
    table.add_row(
        fmt_kg(budget["limit_kg_co2e"]),
        fmt_kg(budget["actual_kg_co2e"]),
        fmt_kg(budget["committed_kg_co2e"]),
        fmt_kg(budget["forecast_kg_co2e"]),
        fmt_kg(budget["remaining_kg_co2e"]),
        budget["state"],
    )
    return table


def progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if not progress.get("step"):
        return ""
    loss = progress.get("loss")
    total = progress.get("total_steps") or "?"
    text = f" {progress.get('stage') or ''} step {progress['step']}/{total}"
    return text + (f" loss {loss:.3f}" if isinstance(loss, int | float) else "")
