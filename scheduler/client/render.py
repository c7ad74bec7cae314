"""Pure formatting for the CLI: times, windows, sparklines, bars and tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.table import Table
from rich.text import Text

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
WAITING_STATES = ("held", "scheduled", "ready", "paused")


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 string (or datetime) as an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def fmt_time(value: str | datetime | None) -> str:
    """A compact UTC time such as '2026-03-02 09:00Z', or '-'."""
    parsed = parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%MZ") if parsed else "-"


def fmt_window(start: str | datetime | None, end: str | datetime | None) -> str:
    """'2026-03-02 02:00Z → 06:00Z' (the date repeats only when the window crosses midnight)."""
    begin, finish = parse_time(start), parse_time(end)
    if begin is None:
        return "not planned"
    if finish is None:
        return fmt_time(begin) + " →"
    tail = finish.strftime("%H:%MZ" if finish.date() == begin.date() else "%Y-%m-%d %H:%MZ")
    return f"{fmt_time(begin)} → {tail}"


def fmt_number(value: float | None, unit: str = "", digits: int = 3) -> str:
    """A figure with a unit, at most `digits` decimals, or '-' when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def fmt_kg(value: float | None) -> str:
    """kg CO2e with enough precision for the small figures of short jobs."""
    if value is None:
        return "-"
    return fmt_number(value, "kg CO2e", 4 if abs(value) < 1 else 2)


def saving_text(job: Mapping[str, Any]) -> str:
    """Expected saving versus starting at submission, in kg and percent."""
    saving = float(job.get("expected_saving_kg_co2e") or 0.0)
    planned = float(job.get("estimated_kg_co2e") or 0.0)
    run_now = planned + saving
    share = f" (−{100 * saving / run_now:.0f} %)" if run_now > 0 and saving > 0 else ""
    return fmt_kg(saving) + share


def sparkline(
    values: Sequence[float | None], *, low: float | None = None, high: float | None = None
) -> str:
    """One block character per value, scaled between low and high; gaps are spaces."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low = min(known) if low is None else low
    high = max(known) if high is None else high
    span = high - low
    chars = []
    for value in values:
        if value is None:
            chars.append(" ")
            continue
        level = 0 if span <= 0 else round((value - low) / span * (len(SPARK_LEVELS) - 1))
        chars.append(SPARK_LEVELS[min(max(level, 0), len(SPARK_LEVELS) - 1)])
    return "".join(chars)


def hourly_columns(
    points: Iterable[Mapping[str, Any]], start: datetime, hours: int
) -> list[float | None]:
    """Mean intensity per hour from `start`, one column per hour (None where no point falls)."""
    sums = [0.0] * hours
    counts = [0] * hours
    for point in points:
        at = parse_time(point["t"])
        if at is None:
            continue
        column = math.floor((at - start).total_seconds() / 3600)
        if 0 <= column < hours:
            sums[column] += float(point["g_per_kwh"])
            counts[column] += 1
    return [s / c if c else None for s, c in zip(sums, counts, strict=True)]


def window_marks(
    intervals: Iterable[Sequence[str | datetime]], start: datetime, hours: int, mark: str = "▔"
) -> str:
    """A line under the sparkline with `mark` in every hour a planned interval overlaps."""
    marked = [False] * hours
    for interval in intervals:
        begin, end = parse_time(interval[0]), parse_time(interval[1])
        if begin is None or end is None:
            continue
        for column in range(hours):
            column_start = start + timedelta(hours=column)
            if begin < column_start + timedelta(hours=1) and end > column_start:
                marked[column] = True
    return "".join(mark if m else " " for m in marked)


def planned_intervals(job: Mapping[str, Any]) -> list[list[str]]:
    """The job's planned intervals, or its planned start/end as one interval."""
    intervals = job.get("planned_intervals") or []
    if intervals:
        return [list(i) for i in intervals]
    if job.get("planned_start") and job.get("planned_end"):
        return [[job["planned_start"], job["planned_end"]]]
    return []


def hour_axis(start: datetime, hours: int, every: int = 6) -> str:
    """Hour labels every `every` columns, aligned with the sparkline ('09' '15' ...)."""
    axis = [" "] * hours
    for column in range(0, hours, every):
        label = (start + timedelta(hours=column)).strftime("%H")
        for offset, char in enumerate(label):
            if column + offset < hours:
                axis[column + offset] = char
    return "".join(axis)


def budget_bar(actual: float, committed: float, limit: float, width: int = 40) -> Text:
    """Actual (solid) and committed (shaded) against the limit; red past the limit."""
    if limit <= 0:
        return Text("-")
    scale = width / limit
    actual_cells = min(round(actual * scale), width)
    committed_cells = min(round((actual + committed) * scale), width) - actual_cells
    free_cells = width - actual_cells - committed_cells
    over = actual + committed > limit
    bar = Text("[")
    bar.append("█" * actual_cells, style="red" if over else "green")
    bar.append("▒" * committed_cells, style="red" if over else "yellow")
    bar.append("·" * free_cells, style="dim")
    bar.append("]")
    bar.append(f" {100 * (actual + committed) / limit:.0f} % of {fmt_kg(limit)}")
    return bar


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> Table:
    """The jobs list: id, name, state, planned window, estimate or actual, and why it waits."""
    table = Table(show_lines=False, header_style="bold")
    for column in ("id", "name", "state", "planned window", "kg CO2e", "saving", "reason"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        kg = job.get("actual_kg_co2e")
        table.add_row(
            str(job["id"]),
            str(job.get("name", "")),
            str(job.get("state", "")),
            fmt_window(job.get("planned_start"), job.get("planned_end")),
            fmt_kg(kg if kg is not None else job.get("estimated_kg_co2e")),
            fmt_kg(job.get("expected_saving_kg_co2e")),
            str(job.get("state_reason") or ""),
        )
    return table


def job_rows(job: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The facts worth showing about one job, as label/value pairs."""
    rows = [
        ("id", str(job["id"])),
        ("name", str(job.get("name", ""))),
        ("state", str(job.get("state", ""))),
        ("reason", str(job.get("state_reason") or "")),
        ("planned window", fmt_window(job.get("planned_start"), job.get("planned_end"))),
        ("deadline", fmt_time(job.get("deadline"))),
        ("expected", fmt_kg(job.get("estimated_kg_co2e"))),
        ("saving", saving_text(job)),
        ("estimated energy", fmt_number(job.get("estimated_kwh"), "kWh", 4)),
        ("zone", str(job.get("zone", ""))),
        ("gpus", str(job.get("gpus", ""))),
        ("attempt", str(job.get("attempt", ""))),
    ]
    if job.get("started_at"):
        rows.append(("started", fmt_time(job["started_at"])))
    if job.get("finished_at"):
        rows.append(("finished", fmt_time(job["finished_at"])))
    if job.get("actual_kwh") is not None:
        rows.append(("measured energy", fmt_number(job["actual_kwh"], "kWh", 4)))
    if job.get("actual_kg_co2e") is not None:
        rows.append(("measured emissions", fmt_kg(job["actual_kg_co2e"])))
    if job.get("error"):
        rows.append(("error", str(job["error"])))
    return rows


def key_value_table(rows: Iterable[tuple[str, str]], title: str | None = None) -> Table:
    """A two-column table without a header."""
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, value)
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value, digits=6)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return f"{len(value)} items"
    return "-" if value is None else str(value)


def energy_tables(report: Mapping[str, Any]) -> list[Table]:
    """The energy report: its scalar figures, then one table per list of records (attempts...)."""
    # The timeline can hold 2,000 points: it belongs in --json, not in a terminal table.
    skipped = {"timeline"}
    scalars = [
        (key, _cell(value))
        for key, value in report.items()
        if key not in skipped and not isinstance(value, list)
    ]
    tables = [key_value_table(scalars, title="energy")]
    for key, value in report.items():
        if key in skipped or not isinstance(value, list) or not value:
            continue
        if not all(isinstance(item, dict) for item in value):
            continue
        columns = [c for c in dict.fromkeys(k for item in value for k in item) if c not in skipped]
        table = Table(title=key, header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for item in value:
            table.add_row(*(_cell(item.get(column)) for column in columns))
        tables.append(table)
    return tables


def progress_line(job: Mapping[str, Any]) -> str:
    """Loss, watts, kWh so far and state of a running job, for the live view."""
    progress = job.get("progress") or {}
    energy = progress.get("energy") if isinstance(progress.get("energy"), dict) else {}
    watts = progress.get("watts", energy.get("watts"))
    kwh = progress.get("kwh_so_far", energy.get("kwh_so_far"))
    parts = [
        f"state {job.get('state', '?')}",
        f"loss {fmt_number(progress.get('loss'), digits=4)}",
        f"{fmt_number(watts, 'W', 1)}",
        f"{fmt_number(kwh, 'kWh', 5)} so far",
    ]
    if progress.get("stage"):
        parts.insert(1, f"stage {progress['stage']}")
    return " · ".join(parts)
