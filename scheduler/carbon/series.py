"""Carbon-intensity time series on a regular UTC grid, and readers for trace files."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

ALLOWED_STEPS = (5, 15, 30, 60)
SIGNAL_TYPES = ("average", "marginal")
# Where a slot's value came from, most trustworthy first. A slot built from several
# (a coarse resample) takes the least trustworthy label among them.
PROVENANCE_LABELS = ("observed", "replayed", "estimated", "filled", "forecast")
_PROVENANCE_RANK = {label: rank for rank, label in enumerate(PROVENANCE_LABELS)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor_to_step(moment: datetime, step_minutes: int) -> datetime:
    """Round `moment` down to a multiple of `step_minutes` since the Unix epoch (UTC)."""
    moment = as_utc(moment)
    step = timedelta(minutes=step_minutes)
    return _EPOCH + ((moment - _EPOCH) // step) * step


@dataclass(frozen=True, eq=False)
class IntensitySeries:
    """Carbon intensity in gCO2e/kWh, one value per fixed-length slot starting at `start`."""

    start: datetime
    step_minutes: int
    values: np.ndarray
    signal_type: str = "average"
    source: str = ""
    # One label per slot from PROVENANCE_LABELS; None means "whatever the caller assumes"
    # (observed for history, forecast for a forecast).
    provenance: tuple[str, ...] | None = None
    # Optional per-slot detail of the label, e.g. Electricity Maps' estimationMethod.
    provenance_detail: tuple[str | None, ...] | None = None
    _step: timedelta = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("IntensitySeries.start must be timezone-aware")
        if self.step_minutes not in ALLOWED_STEPS:
            raise ValueError(
                f"step_minutes must be one of {ALLOWED_STEPS}, not {self.step_minutes}"
            )
        if self.signal_type not in SIGNAL_TYPES:
            raise ValueError(f"signal_type must be one of {SIGNAL_TYPES}, not {self.signal_type!r}")
        values = np.array(self.values, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(values)):
            raise ValueError("IntensitySeries.values must be finite (no NaN or inf)")
        # Frozen outside and inside: a shared series must not change under its readers.
        values.flags.writeable = False
        if self.provenance is not None:
            labels = tuple(self.provenance)
            if len(labels) != len(values):
                raise ValueError(f"provenance has {len(labels)} labels for {len(values)} values")
            unknown = set(labels) - set(PROVENANCE_LABELS)
            if unknown:
                raise ValueError(
                    f"provenance labels must be among {PROVENANCE_LABELS}, not {sorted(unknown)}"
                )
            object.__setattr__(self, "provenance", labels)
        if self.provenance_detail is not None:
            details = tuple(self.provenance_detail)
            if self.provenance is None or len(details) != len(values):
                raise ValueError("provenance_detail needs provenance and one entry per value")
            object.__setattr__(self, "provenance_detail", details)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "_step", timedelta(minutes=self.step_minutes))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntensitySeries):
            return NotImplemented
        return (
            self.start == other.start
            and self.step_minutes == other.step_minutes
            and self.signal_type == other.signal_type
            and self.source == other.source
            and self.provenance == other.provenance
            and self.provenance_detail == other.provenance_detail
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays: unhashable, as eq implies

    @property
    def end(self) -> datetime:
        """End of the last slot (equal to `start` for an empty series)."""
        return self.start + len(self) * self._step

    def times(self) -> list[datetime]:
        """Start of every slot, in order."""
        return [self.start + i * self._step for i in range(len(self))]

    def _index_floor(self, moment: datetime) -> int:
        return (as_utc(moment) - self.start) // self._step

    def window(self, start: datetime, end: datetime) -> IntensitySeries:
        """Slots that overlap `[start, end)`; empty when none do."""
        start, end = as_utc(start), as_utc(end)
        first = min(max(0, self._index_floor(start)), len(self))
        # A slot overlaps when it starts before `end`: the ceiling of the offset of `end`.
        last = min(len(self), -((self.start - end) // self._step))
        last = max(first, last) if end > start else first
        return self._slice(first, last)

    def _slice(self, first: int, last: int) -> IntensitySeries:
        """Slots `first` to `last - 1`, labels included."""
        return replace(
            self,
            start=self.start + first * self._step,
            values=self.values[first:last],
            provenance=None if self.provenance is None else self.provenance[first:last],
            provenance_detail=(
                None if self.provenance_detail is None else self.provenance_detail[first:last]
            ),
        )

    def labelled(self, label: str, detail: str | None = None) -> IntensitySeries:
        """The same series with every slot labelled `label`."""
        count = len(self)
        return replace(
            self,
            provenance=(label,) * count,
            provenance_detail=None if detail is None else (detail,) * count,
        )

    def labels(self, default: str) -> tuple[str, ...]:
        """Per-slot provenance, `default` for every slot when the series carries none."""
        return self.provenance if self.provenance is not None else (default,) * len(self)

    def value_at(self, t: datetime) -> float:
        """Value of the slot containing `t`; ValueError outside the series."""
        index = self._index_floor(t)
        if not 0 <= index < len(self):
            raise ValueError(f"{as_utc(t).isoformat()} is outside [{self.start}, {self.end})")
        return float(self.values[index])

    def mean(self) -> float:
        """Plain mean over all slots (slots have equal length, so it is also time-weighted)."""
        if len(self) == 0:
            raise ValueError("mean of an empty series")
        return float(self.values.mean())

    def resample(self, step_minutes: int) -> IntensitySeries:
        """Series on another step: mean when coarsening, repeat when refining."""
        if step_minutes not in ALLOWED_STEPS:
            raise ValueError(f"step_minutes must be one of {ALLOWED_STEPS}, not {step_minutes}")
        if step_minutes == self.step_minutes or len(self) == 0:
            return replace(self, step_minutes=step_minutes)
        if step_minutes < self.step_minutes:
            factor = self.step_minutes // step_minutes
            return replace(
                self,
                step_minutes=step_minutes,
                values=np.repeat(self.values, factor),
                provenance=_repeat(self.provenance, factor),
                provenance_detail=_repeat(self.provenance_detail, factor),
            )
        # Coarse slots sit on the clock grid (e.g. whole hours); edge slots that the data
        # only partly covers take the mean of the part that is there.
        new_start = floor_to_step(self.start, step_minutes)
        factor = step_minutes // self.step_minutes
        offset = (self.start - new_start) // self._step
        buckets = (np.arange(len(self)) + offset) // factor
        sums = np.bincount(buckets, weights=self.values)
        counts = np.bincount(buckets)
        provenance, detail = self._coarse_labels(buckets, len(counts))
        return replace(
            self,
            start=new_start,
            step_minutes=step_minutes,
            values=sums / counts,
            provenance=provenance,
            provenance_detail=detail,
        )

    def _coarse_labels(
        self, buckets: np.ndarray, count: int
    ) -> tuple[tuple[str, ...] | None, tuple[str | None, ...] | None]:
        """Per coarse slot, the least trustworthy label of its fine slots (and its detail)."""
        if self.provenance is None:
            return None, None
        chosen: list[int | None] = [None] * count
        for index, bucket in enumerate(buckets.tolist()):
            best = chosen[bucket]
            if best is None or (
                _PROVENANCE_RANK[self.provenance[index]] > _PROVENANCE_RANK[self.provenance[best]]
            ):
                chosen[bucket] = index
        picks = [index for index in chosen if index is not None]
        labels = tuple(self.provenance[index] for index in picks)
        if self.provenance_detail is None:
            return labels, None
        return labels, tuple(self.provenance_detail[index] for index in picks)


def _repeat(labels: tuple | None, factor: int) -> tuple | None:
    if labels is None:
        return None
    return tuple(label for label in labels for _ in range(factor))


def infer_step_minutes(times: Sequence[datetime]) -> int:
    """Most common spacing between sorted, distinct times, which must be an allowed step."""
    ordered = sorted({as_utc(t) for t in times})
    if len(ordered) < 2:
        raise ValueError("need at least two distinct times to infer the step")
    gaps = Counter(b - a for a, b in zip(ordered, ordered[1:], strict=False))
    most_common = gaps.most_common(1)[0][0]
    minutes = most_common.total_seconds() / 60
    if minutes not in ALLOWED_STEPS:
        raise ValueError(f"time step of {minutes:g} minutes is not one of {ALLOWED_STEPS}")
    return int(minutes)


def _grid_series(
    points: Sequence[tuple[datetime, float]],
    step_minutes: int | None,
    describe: Callable[[int], str],
    meta: dict[str, Any],
    labels: Sequence[str] | None = None,
    details: Sequence[str | None] | None = None,
) -> IntensitySeries:
    """Place points on a regular grid, forward-filling gaps; `describe(i)` names point i.

    With `labels` (one provenance label per point, optional `details` likewise), the series
    carries them per slot and labels forward-filled slots `filled`.
    """
    if not points:
        raise ValueError("no data points")
    times = [as_utc(t) for t, _ in points]
    if step_minutes is None:
        step_minutes = infer_step_minutes(times) if len(set(times)) > 1 else 60
    step = timedelta(minutes=step_minutes)
    order = sorted(range(len(points)), key=lambda i: times[i])
    start = times[order[0]]
    slots = (times[order[-1]] - start) // step + 1
    values = np.full(slots, np.nan)
    slot_labels: list[str] = ["filled"] * slots
    slot_details: list[str | None] = [None] * slots
    for i in order:
        offset = times[i] - start
        if offset % step:
            raise ValueError(
                f"{describe(i)}: {times[i].isoformat()} is not on the {step_minutes}-minute grid "
                f"starting at {start.isoformat()}"
            )
        value = float(points[i][1])
        if not math.isfinite(value):
            raise ValueError(f"{describe(i)}: value {points[i][1]!r} is not a finite number")
        # A repeated time keeps the value seen last, as a later revision would.
        values[offset // step] = value
        if labels is not None:
            slot_labels[offset // step] = labels[i]
            slot_details[offset // step] = details[i] if details is not None else None
    # Forward-fill: each missing slot takes the last value before it.
    filled = np.where(np.isnan(values), 0, np.arange(slots))
    np.maximum.accumulate(filled, out=filled)
    if labels is not None:
        meta = {**meta, "provenance": tuple(slot_labels)}
        if details is not None:
            meta["provenance_detail"] = tuple(slot_details)
    return IntensitySeries(start=start, step_minutes=step_minutes, values=values[filled], **meta)


def series_from_points(
    points: Sequence[tuple[datetime, float]],
    step_minutes: int | None = None,
    *,
    labels: Sequence[str] | None = None,
    details: Sequence[str | None] | None = None,
    **meta: Any,
) -> IntensitySeries:
    """Build a series from (time, value) pairs: infers the step, forward-fills gaps.

    `labels` gives each point's provenance (see `IntensitySeries.provenance`); gaps that
    are forward-filled are then labelled `filled`.
    """
    if labels is not None and len(labels) != len(points):
        raise ValueError(f"{len(labels)} labels for {len(points)} points")
    if details is not None and len(details) != len(points):
        raise ValueError(f"{len(details)} details for {len(points)} points")
    return _grid_series(points, step_minutes, lambda i: f"point {i}", meta, labels, details)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 / `YYYY-MM-DD HH:MM:SS` / Unix-seconds time; naive means UTC."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        pass
    return as_utc(datetime.fromisoformat(text))


def read_trace_csv(path: str | Path, column: Literal["lca", "direct"] = "lca") -> IntensitySeries:
    """Read a trace export (Electricity Maps, WattTime, GB CI, `time,value`) into a series.

    See `scheduler.carbon.trace_reader.read_trace` for the formats, the repairs it makes
    (gaps, duplicates, unsorted rows, resolution changes) and their report.
    """
    from scheduler.carbon.trace_reader import read_trace

    return read_trace(path, column).series
