"""Budget periods as UTC calendar windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def period_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the budget period containing `now` (UTC calendar; weeks start Monday)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        return start, _add_months(start, 1)
    if period == "quarter":
        start = day.replace(day=1, month=(day.month - 1) // 3 * 3 + 1)
        return start, _add_months(start, 3)
    if period == "year":
        start = day.replace(day=1, month=1)
        return start, start.replace(year=start.year + 1)
    raise ValueError(f"unknown period '{period}'")


def _add_months(start: datetime, months: int) -> datetime:
    month_index = start.month - 1 + months
    return start.replace(year=start.year + month_index // 12, month=month_index % 12 + 1)
