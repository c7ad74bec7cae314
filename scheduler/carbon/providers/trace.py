"""Replay a recorded carbon-intensity trace onto the current calendar (needs no network)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import numpy as np

from scheduler.carbon.providers.base import Clock, ProviderDataError, ProviderError, utc_now
from scheduler.carbon.series import IntensitySeries, as_utc, floor_to_step, read_trace_csv

DEFAULT_ZONE = "ES"
DEFAULT_TRACE_NAME = "ES_2022_hourly.csv"


def default_trace_path() -> Path:
    """Path of the bundled Electricity Maps trace for zone ES (2022, hourly)."""
    return Path(str(resources.files("scheduler.carbon") / "data" / DEFAULT_TRACE_NAME))


def _trace_for_zone(directory: Path, zone: str) -> Path:
    """The `<ZONE>_*.csv` (or `<ZONE>.csv`) file in a directory of traces."""
    matches = sorted(directory.glob(f"{zone}_*.csv")) + sorted(directory.glob(f"{zone}.csv"))
    if not matches:
        raise ProviderError(f"trace: no trace for zone {zone!r} in {directory}")
    return matches[0]


class TraceProvider:
    """Serves a trace as if it were live: today's slot takes the trace's same date and time.

    A trace that covers a whole calendar year is mapped by month, day and time of day, so
    the seasons line up; 29 February, when the trace year has none, replays 28 February.
    A shorter trace is looped end to end. `trace_path` may name a CSV file (served for any
    zone asked), or a directory of `<ZONE>_*.csv` files; the default is the bundled ES trace.
    """

    name = "trace"

    def __init__(self, trace_path: str | Path | None = None, *, clock: Clock | None = None):
        self._path = Path(trace_path) if trace_path else default_trace_path()
        self._explicit = bool(trace_path) and not self._path.is_dir()
        self._clock = clock or utc_now
        self._cache: dict[Path, IntensitySeries] = {}
        self.signal_type = "average"

    def _trace(self, zone: str) -> IntensitySeries:
        path = _trace_for_zone(self._path, zone) if self._path.is_dir() else self._path
        if path not in self._cache:
            try:
                self._cache[path] = read_trace_csv(path)
            except (OSError, ValueError) as exc:
                raise ProviderDataError(f"trace: cannot read {path}: {exc}") from None
        trace = self._cache[path]
        trace_zone = trace.source.removeprefix("trace:")
        # An explicitly chosen file serves whatever zone it is asked for; the bundled
        # default is Spain's grid only, so other zones must not silently get its values.
        if not self._explicit and trace_zone.upper() != zone.upper():
            raise ProviderError(
                f"trace: {path.name} holds zone {trace_zone}, not {zone}; "
                "set GREENWINDOW_CARBON_TRACE_PATH to a trace for that zone"
            )
        self.signal_type = trace.signal_type
        return trace

    def _replay(self, trace: IntensitySeries, start: datetime, slots: int) -> IntensitySeries:
        """`slots` trace values for the slots from `start` (on the trace's step grid)."""
        step = timedelta(minutes=trace.step_minutes)
        year = trace.start.year
        covers_year = trace.start <= datetime(year, 1, 1, tzinfo=UTC) and trace.end >= datetime(
            year + 1, 1, 1, tzinfo=UTC
        )
        indices = np.empty(slots, dtype=np.int64)
        for i in range(slots):
            moment = start + i * step
            if not covers_year:
                indices[i] = ((moment - trace.start) // step) % len(trace)
            elif (moment.month, moment.day) == (2, 29) and not _is_leap(year):
                indices[i] = (moment.replace(year=year, day=28) - trace.start) // step
            else:
                indices[i] = (moment.replace(year=year) - trace.start) // step
        # A replayed slot is a recorded value moved onto today's calendar; a slot the trace
        # itself had to forward-fill stays `filled`.
        recorded = trace.labels("observed")
        provenance = tuple(
            "filled" if recorded[index] == "filled" else "replayed" for index in indices.tolist()
        )
        return IntensitySeries(
            start=start,
            step_minutes=trace.step_minutes,
            values=trace.values[indices],
            signal_type=trace.signal_type,
            source=trace.source,
            provenance=provenance,
        )

    def current(self, zone: str) -> tuple[datetime, float]:
        """The replayed slot holding the clock's present time and its value."""
        trace = self._trace(zone)
        now = floor_to_step(self._clock(), trace.step_minutes)
        return now, float(self._replay(trace, now, 1).values[0])

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        """Replayed values for the slots overlapping `[start, end)`, up to the present slot."""
        trace = self._trace(zone)
        first = floor_to_step(start, trace.step_minutes)
        # The past only: slots that have started by now, like a live provider's history.
        now_slot_end = floor_to_step(self._clock(), trace.step_minutes) + timedelta(
            minutes=trace.step_minutes
        )
        end = min(as_utc(end), now_slot_end)
        slots = max(0, math.ceil((end - first) / timedelta(minutes=trace.step_minutes)))
        return self._replay(trace, first, slots)

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        """The trace's own values ahead of now (a perfect forecast of the replayed signal)."""
        trace = self._trace(zone)
        now = floor_to_step(self._clock(), trace.step_minutes)
        return self._replay(trace, now, math.ceil(hours * 60 / trace.step_minutes))


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
