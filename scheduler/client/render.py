"""Pure formatting for the CLI: times, windows, sparklines, bars and tables."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.table import Table
from rich.text import Text

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
# What a terminal acts on instead of showing: C0 and C1 controls (ESC starts colour changes,
# screen clears and OSC-8 hyperlinks), DEL, and the invisible bidi and zero-width marks
# that reorder or hide text. Newlines and tabs too: in a table cell they could fake rows.
_TERMINAL_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
WAITING_STATES = ("held", "scheduled", "ready", "paused")


def inert(value: Any) -> str:
    """Server data as text a terminal only shows: every control character written out as an
    escape (ESC as `\\x1b`). Rich markup stays inert because tables get `Text`, never markup."""
    return _TERMINAL_CONTROLS.sub(_escape_control, str(value))


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert_data(value: Any) -> Any:
    """A JSON answer with every string (keys too) made `inert`, for human-readable output."""
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, dict):
        return {inert(k): inert_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [inert_data(v) for v in value]
    return value


def literal(value: Any) -> Text:
    """A table cell that is shown as written: escaped controls, never parsed as markup."""
    return value if isinstance(value, Text) else Text(inert(value))


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
    if 0 < abs(value) < 0.001:
        # Short jobs emit grams; a kg figure would round to zero.
        return f"{value * 1000:.3g} g CO2e"
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
            *map(
                literal,
                (
                    job["id"],
                    job.get("name", ""),
                    job.get("state", ""),
                    fmt_window(job.get("planned_start"), job.get("planned_end")),
                    fmt_kg(kg if kg is not None else job.get("estimated_kg_co2e")),
                    fmt_kg(job.get("expected_saving_kg_co2e")),
                    job.get("state_reason") or "",
                ),
            )
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
        table.add_row(literal(label), literal(value))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt_number(value, digits=6)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items() if v is not None) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) if value else "-"
    return "-" if value is None else inert(value)


def _kwh_with_method(kwh: Mapping[str, Any], methods: Mapping[str, Any], part: str) -> str:
    figure = fmt_number(kwh.get(part), "kWh", 6)
    method = methods.get(part)
    return f"{figure} ({method})" if method else figure


def energy_summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The report's headline figures: kWh per component with its method, CO2e and the signal."""
    kwh = report.get("kwh") or {}
    methods = report.get("methods") or {}
    signal = report.get("signal") or {}
    intensity = report.get("intensity_g_per_kwh_avg")
    rows = [
        ("job", _cell(report.get("job_id"))),
        ("state", _cell(report.get("state"))),
        ("energy", fmt_number(kwh.get("total"), "kWh", 6)),
        ("  gpu", _kwh_with_method(kwh, methods, "gpu")),
        ("  cpu", _kwh_with_method(kwh, methods, "cpu")),
        ("  ram", _kwh_with_method(kwh, methods, "ram")),
        ("emissions", fmt_kg(report.get("kg_co2e"))),
        ("intensity", fmt_number(intensity, "g/kWh", 1)),
        ("signal", _cell({k: signal.get(k) for k in ("zone", "source", "type", "estimated")})),
        ("saving vs run now", fmt_kg(report.get("saving_vs_run_now_kg_co2e"))),
        ("duration", fmt_number(report.get("duration_s"), "s", 1)),
    ]
    if kwh.get("unattributed"):
        rows.insert(6, ("  unattributed", fmt_number(kwh["unattributed"], "kWh", 6)))
    if report.get("pue") is not None:
        facility = fmt_number(report.get("facility_kwh"), "kWh", 6)
        rows.append(("pue", f"{report['pue']:g} ({facility} priced)"))
    if signal.get("basis") is not None:
        rows.append(("emission factors", _cell(signal["basis"])))
    if report.get("observed_share") is not None:
        rows.append(("observed share", f"{100 * report['observed_share']:.1f} %"))
    restatements = report.get("restatements") or []
    if restatements:
        delta = sum(r.get("delta_kg_co2e") or 0.0 for r in restatements)
        rows.append(("restatements", f"{len(restatements)} ({fmt_kg(delta)})"))
    codecarbon = report.get("codecarbon") or {}
    if codecarbon.get("kg_co2e") is not None:
        covers = "+".join(codecarbon.get("covers") or ["cpu", "ram"])
        rows.append((f"codecarbon cross-check ({covers})", fmt_kg(codecarbon["kg_co2e"])))
    return rows


ATTEMPT_COLUMNS = (
    "attempt",
    "worker",
    "outcome",
    "started_at",
    "duration_s",
    "kwh",
    "kg_co2e",
    "measurement_ok",
    "errors",
)


def attempts_table(attempts: Sequence[Mapping[str, Any]]) -> Table:
    """One row per attempt: where and how it ran, and what it used."""
    table = Table(title="attempts", header_style="bold")
    for column in ATTEMPT_COLUMNS:
        table.add_column(column.replace("_", " "), overflow="fold")
    for attempt in attempts:
        kwh = attempt.get("kwh")
        total = kwh.get("total") if isinstance(kwh, dict) else kwh
        table.add_row(
            *map(
                literal,
                (
                    _cell(attempt.get("attempt")),
                    _cell(attempt.get("worker")),
                    _cell(attempt.get("outcome")),
                    fmt_time(attempt.get("started_at")),
                    fmt_number(attempt.get("duration_s"), "s", 1),
                    fmt_number(total, "kWh", 6),
                    fmt_kg(attempt.get("kg_co2e")),
                    _cell(attempt.get("measurement_ok")),
                    _cell(attempt.get("errors")),
                ),
            )
        )
    return table


def energy_tables(report: Mapping[str, Any]) -> list[Table]:
    """The energy report as tables: the headline figures, then the attempts.

    The power timeline (up to thousands of points) is left to `--json`.
    """
    tables = [key_value_table(energy_summary_rows(report), title="energy")]
    attempts = [a for a in report.get("attempts") or [] if isinstance(a, dict)]
    if attempts:
        tables.append(attempts_table(attempts))
    return tables


def live_energy(
    job: Mapping[str, Any], report: Mapping[str, Any] | None = None
) -> dict[str, float | None]:
    """Watts, kWh and kg CO2e so far of a running job: the job's `live` figures (its latest
    heartbeat), else its progress or its running attempt."""
    progress = job.get("progress") or {}
    nested = progress["energy"] if isinstance(progress.get("energy"), dict) else {}
    watts = progress.get("watts", nested.get("watts"))
    kwh = progress.get("kwh_so_far", nested.get("kwh_so_far"))
    running = [a for a in (report or {}).get("attempts") or [] if a.get("outcome") == "running"]
    if running:
        attempt = running[-1]
        watts = attempt.get("watts", watts)
        kwh = attempt.get("kwh_so_far", kwh)
    live = job.get("live") or {}
    if live.get("watts") is not None:
        watts = live["watts"]
    if live.get("kwh_so_far") is not None:
        kwh = live["kwh_so_far"]
    return {"watts": watts, "kwh_so_far": kwh, "kg_co2e_so_far": live.get("kg_co2e_so_far")}


def progress_line(job: Mapping[str, Any], energy: Mapping[str, Any] | None = None) -> str:
    """The live view's text: loss, watts, kWh so far and state; why it waits when it waits."""
    state = inert(job.get("state", "?"))
    if state in WAITING_STATES or (state in TERMINAL_STATES and not job.get("progress")):
        return f"{state} · {inert(job.get('state_reason') or '')}".rstrip(" ·")
    progress = job.get("progress") or {}
    energy = energy or live_energy(job)
    parts = [state]
    if progress.get("stage"):
        parts.append(f"stage {inert(progress['stage'])}")
    if progress.get("loss") is not None:
        parts.append(f"loss {fmt_number(progress['loss'], digits=4)}")
    # Live power and energy only mean something while the job runs.
    if state == "running" and energy.get("watts") is not None:
        parts.append(fmt_number(energy["watts"], "W", 1))
    if state == "running" and energy.get("kwh_so_far") is not None:
        parts.append(f"{fmt_number(energy['kwh_so_far'], 'kWh', 5)} so far")
    if state == "running" and energy.get("kg_co2e_so_far") is not None:
        parts.append(fmt_kg(energy["kg_co2e_so_far"]))
    if state == "running":
        loss_shown = progress.get("loss") is not None
        parts.extend(telemetry_parts(job.get("telemetry") or {}, loss_shown=loss_shown))
    parts.extend(warning_parts(job))
    return " · ".join(parts)


# More GPUs than this are summarised (lowest utilisation, fullest memory, hottest).
GPUS_LISTED = 4


def _gib(mib: Any) -> str:
    return f"{float(mib) / 1024:.1f}" if isinstance(mib, int | float) else "?"


def gpu_text(gpu: Mapping[str, Any]) -> str:
    """`gpu0 95% 19.5/79.6 GiB 61°C`: one GPU's utilisation, memory and temperature."""
    parts = [f"gpu{inert(gpu.get('index', '?'))}"]
    if isinstance(gpu.get("util_pct"), int | float):
        parts.append(f"{gpu['util_pct']:.0f}%")
    if gpu.get("mem_used_mib") is not None or gpu.get("mem_total_mib") is not None:
        parts.append(f"{_gib(gpu.get('mem_used_mib'))}/{_gib(gpu.get('mem_total_mib'))} GiB")
    if isinstance(gpu.get("temp_c"), int | float):
        parts.append(f"{gpu['temp_c']:.0f}°C")
    return " ".join(parts)


def telemetry_parts(telemetry: Mapping[str, Any], *, loss_shown: bool = False) -> list[str]:
    """Step time, loss, gradient norm (KL and mel for stage 2) and every GPU of the latest
    telemetry; figures reported as NaN or infinite are named."""
    parts = []
    if isinstance(telemetry.get("step_time_s"), int | float):
        parts.append(f"step {fmt_number(telemetry['step_time_s'], 's', 3)}")
    if telemetry.get("loss") is not None and not loss_shown:
        parts.append(f"loss {fmt_number(telemetry['loss'], digits=4)}")
    for name, label in (("grad_norm", "grad"), ("kl", "kl"), ("mel", "mel")):
        if telemetry.get(name) is not None:
            parts.append(f"{label} {fmt_number(telemetry[name], digits=4)}")
    nonfinite = [inert(name) for name in telemetry.get("nonfinite") or []]
    if nonfinite:
        parts.append(f"non-finite: {', '.join(nonfinite)}")
    gpus = [gpu for gpu in telemetry.get("gpus") or [] if isinstance(gpu, Mapping)]
    if len(gpus) <= GPUS_LISTED:
        parts.extend(gpu_text(gpu) for gpu in gpus)
    else:
        utils = [g["util_pct"] for g in gpus if isinstance(g.get("util_pct"), int | float)]
        used = [g["mem_used_mib"] for g in gpus if isinstance(g.get("mem_used_mib"), int | float)]
        temps = [g["temp_c"] for g in gpus if isinstance(g.get("temp_c"), int | float)]
        summary = [f"{len(gpus)} GPUs"]
        if utils:
            summary.append(f"util ≥{min(utils):.0f}%")
        if used:
            summary.append(f"mem ≤{_gib(max(used))} GiB")
        if temps:
            summary.append(f"≤{max(temps):.0f}°C")
        parts.append(" ".join(summary))
    return parts


def warning_parts(job: Mapping[str, Any]) -> list[str]:
    """The health warnings of the job's telemetry, each with the figure that raised it."""
    return [
        f"⚠ {inert(warning.get('message') or warning.get('code') or '')}"
        for warning in job.get("health_warnings") or []
        if isinstance(warning, Mapping)
    ]


BURN_ROWS = 12


def burn_table(history: Mapping[str, Any], rows: int = BURN_ROWS) -> Table:
    """A budget's burn over its period: at most `rows` evenly spread points, each with its bar."""
    points = list(history.get("points") or [])
    if len(points) > rows:
        # Evenly spread, always keeping the newest.
        step = (len(points) - 1) / (rows - 1)
        points = [points[round(i * step)] for i in range(rows)]
    limit = float(history["limit_kg_co2e"])
    table = Table(header_style="bold")
    for column in ("at", "actual", "committed", "against the limit"):
        table.add_column(column)
    for point in points:
        actual, committed = point["actual_kg_co2e"], point["committed_kg_co2e"]
        table.add_row(
            fmt_time(point["at"]),
            fmt_kg(actual),
            fmt_kg(committed),
            budget_bar(actual, committed, limit, width=30),
        )
    return table
