"""Pure arithmetic of carbon accounting: energy per time bucket times the bucket's intensity."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.carbon.series import floor_to_step

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Bucket:
    """Energy used in one intensity slot and the slot's intensity."""

    start: datetime
    kwh: float
    g_per_kwh: float

    @property
    def kg_co2e(self) -> float:
        """Emissions of this bucket in kg CO2e."""
        return self.kwh * self.g_per_kwh / 1000.0

    def to_json(self) -> dict[str, Any]:
        """JSON form, as stored with the attempt."""
        return {"start": rfc3339(self.start), "kwh": self.kwh, "g_per_kwh": self.g_per_kwh}


def rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 UTC with a Z suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | datetime) -> datetime:
    """An RFC 3339 string (or datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_timeline(points: Sequence[dict[str, Any]]) -> list[tuple[datetime, float]]:
    """Timeline points as sorted (time, watts) pairs; malformed points are dropped."""
    parsed = []
    for point in points:
        try:
            watts = float(point["watts"])
            moment = parse_time(point["t"])
        except (KeyError, TypeError, ValueError):
            continue
        if watts >= 0:
            parsed.append((moment, watts))
    return sorted(parsed)


def timeline_kwh(timeline: Sequence[tuple[datetime, float]], ended_at: datetime) -> float:
    """Energy under a step-wise power timeline: each sample holds until the next (or the end)."""
    total_joules = 0.0
    for i, (moment, watts) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else max(ended_at, moment)
        total_joules += watts * (until - moment).total_seconds()
    return total_joules / JOULES_PER_KWH


def _split(
    start: datetime, end: datetime, watts: float, step: timedelta, into: dict[datetime, float]
) -> None:
    """Add the energy of a constant-power segment to the buckets it overlaps."""
    cursor = start
    while cursor < end:
        bucket = floor_to_step(cursor, int(step.total_seconds() // 60))
        boundary = min(bucket + step, end)
        into[bucket] = into.get(bucket, 0.0) + watts * (boundary - cursor).total_seconds()
        cursor = boundary


def energy_by_bucket(
    *,
    total_kwh: float,
    started_at: datetime,
    ended_at: datetime,
    timeline: Sequence[tuple[datetime, float]],
    step_minutes: int,
) -> list[tuple[datetime, float]]:
    """Spread an attempt's measured `total_kwh` over intensity slots.

    The power timeline gives the shape (when the energy was used); the measured total gives the
    amount, since counters are more exact than integrated samples. Without a usable timeline the
    energy is spread evenly over [started_at, ended_at].
    """
    if total_kwh <= 0:
        return []
    step = timedelta(minutes=step_minutes)
    joules: dict[datetime, float] = {}
    for i, (moment, watts) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else max(ended_at, moment)
        _split(moment, until, watts, step, joules)
    shape_total = sum(joules.values())
    if shape_total <= 0:
        joules = {}
        if ended_at > started_at:
            _split(started_at, ended_at, 1.0, step, joules)
        else:
            joules = {floor_to_step(started_at, step_minutes): 1.0}
        shape_total = sum(joules.values())
    scale = total_kwh / shape_total
    return [(start, value * scale) for start, value in sorted(joules.items()) if value > 0]


def price_buckets(
    energy: Sequence[tuple[datetime, float]], intensity_at: Callable[[datetime], float]
) -> list[Bucket]:
    """Attach each bucket's intensity (g/kWh)."""
    return [Bucket(start, kwh, intensity_at(start)) for start, kwh in energy]


def total_kg(buckets: Sequence[Bucket]) -> float:
    """Sum of bucket kWh x intensity, in kg CO2e."""
    return sum(bucket.kg_co2e for bucket in buckets)


def weighted_intensity(buckets: Sequence[Bucket]) -> float | None:
    """Energy-weighted mean intensity in g/kWh, or None without energy."""
    kwh = sum(bucket.kwh for bucket in buckets)
    return 1000.0 * total_kg(buckets) / kwh if kwh > 0 else None


def report_parts(report: dict[str, Any]) -> dict[str, float | None]:
    """GPU, CPU and RAM kWh of an attempt report; None where the worker could not measure
    (null, missing, negative or not a number), so a failure is never read as 0."""

    def number(key: str) -> float | None:
        value = report.get(key)
        if value is None or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) and number >= 0 else None

    return {"gpu": number("gpu_kwh"), "cpu": number("cpu_kwh"), "ram": number("ram_kwh")}
