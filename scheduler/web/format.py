"""Number and time formatting for the dashboard templates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def fmt_time(value: str | datetime | None) -> str:
    """`2026-03-02 14:15Z`, or an em dash for no time."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def fmt_number(value: float | int | None, digits: int = 3) -> str:
    """A number with a sensible number of significant digits; an em dash for None."""
    if value is None:
        return "—"
    number = float(value)
    if number == 0:
        return "0"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.{digits}g}"


def fmt_co2e(kg: float | None) -> str:
    """Emissions in g below one kilogram (short jobs emit grams), else in kg."""
    if kg is None:
        return "—"
    if abs(kg) < 1e-9:
        return "0 g"
    if abs(kg) < 1:
        return f"{fmt_number(kg * 1000)} g"
    return f"{fmt_number(kg)} kg"


def fmt_window(intervals: list[list[Any]] | None) -> str:
    """Planned intervals as `start → end` (and `+N more` when split)."""
    if not intervals:
        return "—"
    first = f"{fmt_time(intervals[0][0])} → {fmt_time(intervals[-1][1])[11:]}"
    return first if len(intervals) == 1 else f"{first} ({len(intervals)} parts)"


def fmt_percent(value: float | None) -> str:
    """`42 %`, or an em dash."""
    return "—" if value is None else f"{value:.0f} %"


def fmt_times(ratio: float | None, of: str) -> str:
    """`1.3× the team's median`, or an em dash when there is nothing to compare with."""
    if ratio is None:
        return "—"
    return f"{ratio:.2g}× {of}" if ratio < 10 else f"{ratio:,.0f}× {of}"


TEMPLATE_FILTERS = {
    "times": fmt_times,
    "time": fmt_time,
    "num": fmt_number,
    "co2e": fmt_co2e,
    "window": fmt_window,
    "percent": fmt_percent,
}
