"""Read carbon-intensity traces as real exports come, onto a regular slot grid.

`read_trace(path)` accepts:

- CSV: Electricity Maps exports (`Datetime (UTC)` and a `(LCA)` / `(Life cycle)` or
  `(direct)` intensity column), WattTime MOER CSVs (`timestamp,MOER,...` or
  `point_time,value`, lbs/MWh converted to g/kWh), GB Carbon Intensity CSVs
  (`from,to,forecast,actual`: the actual value, else the forecast), and plain
  `time,value` files with or without a header;
- JSON: Electricity Maps (`history` / `forecast` / `data` lists of
  `{datetime, carbonIntensity}`), WattTime v3 (`data` of `{point_time, value}` with
  `meta.units`), GB Carbon Intensity (`data` of `{from, to, intensity: {forecast, actual}}`,
  national or regional).

Timestamps may carry an offset, be UTC, or be naive local time of a zone named in the time
column's header (`Datetime (Europe/Madrid)`) or passed as `timezone`; in the repeated hour
when clocks go back, the first occurrence is summer time and the second winter time.

Rows may be unsorted, repeat a time (the last row in the file wins: a later revision),
leave gaps (forward-filled) and change resolution partway (e.g. 30 to 15 minutes). Every
reading stands for the time until the next reading, at most its own resolution (the
shorter spacing to its neighbours), and the grid's value for a slot is the time-weighted
mean of the readings that cover it. The grid step defaults to the coarsest resolution
that covers at least a tenth of the file's time, so no slot is finer than the data.
A file is refused only when it cannot be used, with the line (or JSON item) and the reason.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from scheduler.carbon.series import ALLOWED_STEPS, IntensitySeries, floor_to_step

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
# A trace longer than this many slots (about 19 years of 5-minute slots) is refused rather
# than allocated: a stray timestamp decades away must not exhaust memory.
MAX_SLOTS = 2_000_000
# A resolution is the grid's candidate once its readings cover this share of the file's time.
_STEP_SHARE = 0.1
_MISSING = {"", "nan", "null", "none", "na", "n/a", "-"}
_LCA_MARKERS = ("(lca)", "(life cycle)", "(lifecycle)")
_ZONE_IN_HEADER = re.compile(r"\(([A-Za-z]+(?:/[A-Za-z0-9_+\-]+)+)\)")


@dataclass
class TraceReport:
    """What reading a trace took: counts of the repairs it made, for warnings."""

    rows: int = 0
    missing: int = 0
    duplicates: int = 0
    reordered: int = 0
    filled: int = 0
    resampled: int = 0
    resolutions: list[int] = field(default_factory=list)
    step_minutes: int = 0

    def warnings(self) -> list[str]:
        """One sentence per kind of repair made; empty for a clean, regular file."""
        notes = []
        if len(self.resolutions) > 1:
            steps = " and ".join(f"{r}" for r in self.resolutions)
            notes.append(f"resolution changes within the file ({steps} minutes)")
        if self.duplicates:
            notes.append(f"{self.duplicates} duplicate rows (the last of each time kept)")
        if self.reordered:
            notes.append(f"{self.reordered} rows out of time order (sorted)")
        if self.missing:
            notes.append(f"{self.missing} rows without a value")
        if self.filled:
            notes.append(f"{self.filled} slots filled from the value before them (gaps)")
        if self.resampled:
            notes.append(
                f"{self.resampled} slots resampled to {self.step_minutes} minutes "
                "(time-weighted mean)"
            )
        return notes


@dataclass
class TraceRead:
    """A trace on a regular grid and the report of how it was read."""

    series: IntensitySeries
    report: TraceReport


@dataclass
class _Reading:
    time: datetime
    value: float | None
    where: str


@dataclass
class _Layout:
    """Which CSV columns hold what, and how to convert the values."""

    time: int
    value: int
    fallback: int | None = None
    zone: int | None = None
    factor: float = 1.0
    signal_type: str = "average"
    timezone: tzinfo | None = None


class TraceError(ValueError):
    """An unusable trace file; the message names the file, the line and the reason."""


def read_trace(
    path: str | Path,
    column: Literal["lca", "direct"] = "lca",
    *,
    step_minutes: int | None = None,
    timezone: str | None = None,
) -> TraceRead:
    """Read a trace export (CSV or JSON) onto a regular grid; see the module docstring."""
    if column not in ("lca", "direct"):
        raise ValueError(f"column must be 'lca' or 'direct', not {column!r}")
    if step_minutes is not None and step_minutes not in ALLOWED_STEPS:
        raise ValueError(f"step_minutes must be one of {ALLOWED_STEPS}, not {step_minutes}")
    path = Path(path)
    zone_info = _zone(timezone, f"{path}: timezone") if timezone else None
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip()[:1] in ("{", "["):
        readings, zone, signal_type = _json_readings(path, text, zone_info)
    else:
        readings, zone, signal_type = _csv_readings(path, text, column, zone_info)
    zone = zone or path.stem.split("_")[0]
    source = f"trace:{zone}"
    return _to_grid(path, readings, step_minutes, signal_type, source)


# -- CSV ------------------------------------------------------------------------------


def _zone(name: str, where: str) -> tzinfo:
    if name.strip().lower() == "utc":
        return UTC
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise TraceError(f"{where}: unknown time zone {name!r}") from None


def _parse_time(text: str) -> datetime:
    """An ISO-8601 time (naive stays naive) or Unix seconds (UTC)."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return datetime.fromisoformat(text)


def _looks_like_header(row: list[str]) -> bool:
    try:
        _parse_time(row[0])
        return False
    except (ValueError, IndexError):
        return True


def _layout(header: list[str], column: str, where: str) -> _Layout:
    names = [name.strip().lower() for name in header]
    time_index = next(
        (
            i
            for i, name in enumerate(names)
            if name in ("from", "timestamp", "point_time") or "time" in name or "date" in name
        ),
        0,
    )
    timezone = None
    zone_match = _ZONE_IN_HEADER.search(header[time_index])
    if zone_match:
        timezone = _zone(zone_match.group(1), where)
    elif "(utc)" in names[time_index]:
        timezone = UTC
    zone_index = next((i for i, name in enumerate(names) if name in ("zone id", "zone")), None)
    if zone_index is None:
        zone_index = next((i for i, name in enumerate(names) if name in ("ba", "region")), None)
    if any("intensity" in name and "(" in name for name in names):
        # Electricity Maps: one column per accounting basis.
        markers = _LCA_MARKERS if column == "lca" else ("(direct)",)
        value = next(
            (i for i, n in enumerate(names) if "intensity" in n and n.endswith(markers)), None
        )
        if value is None:
            raise TraceError(f"{where}: no carbon-intensity ({column}) column in the header")
        return _Layout(time_index, value, zone=zone_index, timezone=timezone)
    if "actual" in names:
        # GB Carbon Intensity: the measured value, else the forecast made for that slot.
        fallback = names.index("forecast") if "forecast" in names else None
        return _Layout(time_index, names.index("actual"), fallback, zone_index, timezone=timezone)
    moer = next((i for i, name in enumerate(names) if "moer" in name), None)
    if moer is None and names[time_index] == "point_time" and "value" in names:
        moer = names.index("value")
    if moer is not None:
        # WattTime: marginal, in lbs/MWh unless the header says g/kWh.
        grams = "g/kwh" in names[moer] or "g_co2_per_kwh" in names[moer]
        factor = 1.0 if grams else LBS_PER_MWH_TO_G_PER_KWH
        return _Layout(time_index, moer, None, zone_index, factor, "marginal", timezone)
    value = next(
        (
            i
            for i, name in enumerate(names)
            if i != time_index and any(k in name for k in ("intensity", "carbon", "value"))
        ),
        1 if time_index == 0 else 0,
    )
    return _Layout(time_index, value, zone=zone_index, timezone=timezone)


def _csv_readings(
    path: Path, text: str, column: str, zone_info: tzinfo | None
) -> tuple[list[_Reading], str, str]:
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), 1) if row]
    if not rows:
        raise TraceError(f"{path}: empty file")
    first_number, first_row = rows[0]
    if _looks_like_header(first_row):
        layout = _layout(first_row, column, f"{path}:{first_number}")
        rows = rows[1:]
    else:
        layout = _Layout(0, 1)
    local = zone_info or layout.timezone
    localiser = _Localiser(local)
    readings = []
    zone = ""
    for number, row in rows:
        where = f"{path}:{number}"
        try:
            stamp = row[layout.time]
            raw = row[layout.value].strip()
        except IndexError:
            raise TraceError(f"{where}: the row has no time or value column: {row}") from None
        if raw.lower() in _MISSING and layout.fallback is not None and len(row) > layout.fallback:
            raw = row[layout.fallback].strip()
        moment = localiser.utc(stamp, where)
        value = _value(raw, where, layout.factor)
        if layout.zone is not None and not zone and len(row) > layout.zone:
            zone = row[layout.zone].strip()
        readings.append(_Reading(moment, value, where))
    return readings, zone, layout.signal_type


class _Localiser:
    """Turn time stamps into UTC; naive ones are local time of `zone` (UTC when none)."""

    def __init__(self, zone: tzinfo | None) -> None:
        self.zone = zone
        self.seen: set[datetime] = set()

    def utc(self, stamp: str, where: str) -> datetime:
        try:
            moment = _parse_time(stamp)
        except ValueError:
            raise TraceError(f"{where}: cannot read a time from {stamp!r}") from None
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
        if self.zone is None or self.zone is UTC:
            return moment.replace(tzinfo=UTC)
        first = moment.replace(tzinfo=self.zone, fold=0)
        second = moment.replace(tzinfo=self.zone, fold=1)
        if first.utcoffset() != second.utcoffset():
            back = first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None)
            if back != moment:
                raise TraceError(
                    f"{where}: {stamp.strip()} does not exist in {self.zone} "
                    "(the clocks skip that hour)"
                )
            # The hour the clocks go back comes twice: summer time first, then winter time.
            chosen = second if moment in self.seen else first
            self.seen.add(moment)
            return chosen.astimezone(UTC)
        return first.astimezone(UTC)


def _value(raw: Any, where: str, factor: float) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _MISSING):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: value {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{where}: value {raw!r} is not a finite number")
    if value < 0:
        raise TraceError(f"{where}: negative intensity {raw!r}")
    return value * factor


# -- JSON -----------------------------------------------------------------------------


def _json_readings(
    path: Path, text: str, zone_info: tzinfo | None
) -> tuple[list[_Reading], str, str]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    localiser = _Localiser(zone_info)
    if isinstance(document, list):
        document = {"data": document}
    if not isinstance(document, dict):
        raise TraceError(f"{path}: expected a JSON object")
    key = next((k for k in ("history", "forecast", "data") if k in document), None)
    if key is None:
        raise TraceError(f"{path}: no 'data', 'history' or 'forecast' list in the JSON")
    items = document[key]
    zone = str(document.get("zone") or "")
    meta = document["meta"] if isinstance(document.get("meta"), dict) else {}
    if isinstance(items, dict) and isinstance(items.get("data"), list):
        # GB Carbon Intensity, one region: {"data": {"regionid": ..., "data": [...]}}.
        zone = str(items.get("shortname") or items.get("regionid") or zone)
        items = items["data"]
    if not isinstance(items, list):
        raise TraceError(f"{path}: '{key}' is not a list")
    if items and isinstance(items[0], dict) and isinstance(items[0].get("data"), list):
        # GB Carbon Intensity by region over a range: one region per item; the first is read.
        zone = str(items[0].get("shortname") or items[0].get("regionid") or zone)
        items = items[0]["data"]
    factor, signal_type = 1.0, "average"
    if items and isinstance(items[0], dict) and "point_time" in items[0]:
        units = str(meta.get("units") or "lbs_co2_per_mwh").lower()
        if "lbs" in units:
            factor = LBS_PER_MWH_TO_G_PER_KWH
        elif "kwh" not in units:
            raise TraceError(f"{path}: meta.units {units!r} is neither lbs/MWh nor g/kWh")
        signal_type = "marginal" if "moer" in str(meta.get("signal_type", "moer")) else "average"
        zone = zone or str(meta.get("region") or "")
    elif items and isinstance(items[0], dict) and "intensity" in items[0]:
        zone = zone or "GB"
    readings = []
    for index, item in enumerate(items):
        where = f"{path}: {key}[{index}]"
        if not isinstance(item, dict):
            raise TraceError(f"{where}: expected an object, got {item!r}")
        stamp = item.get("datetime") or item.get("point_time") or item.get("from")
        if not isinstance(stamp, str):
            raise TraceError(f"{where}: no 'datetime', 'point_time' or 'from' time")
        regions = item.get("regions")
        if "intensity" not in item and isinstance(regions, list) and regions:
            # GB Carbon Intensity, all regions per slot: the first region is read.
            if isinstance(regions[0], dict):
                zone = zone or str(regions[0].get("shortname") or "")
                item = regions[0]
        if "intensity" in item and isinstance(item["intensity"], dict):
            measured = item["intensity"].get("actual")
            raw = measured if measured is not None else item["intensity"].get("forecast")
        elif "carbonIntensity" in item:
            raw = item["carbonIntensity"]
        elif "value" in item:
            raw = item["value"]
        else:
            raise TraceError(f"{where}: no 'carbonIntensity', 'value' or 'intensity'")
        readings.append(_Reading(localiser.utc(stamp, where), _value(raw, where, factor), where))
    return readings, zone, signal_type


# -- onto the grid --------------------------------------------------------------------


def _snap(minutes: float) -> int:
    """The largest allowed step at or below a spacing (the smallest for shorter spacings)."""
    fitting = [step for step in ALLOWED_STEPS if step <= minutes + 1e-9]
    return max(fitting) if fitting else min(ALLOWED_STEPS)


def _to_grid(
    path: Path,
    readings: list[_Reading],
    step_minutes: int | None,
    signal_type: str,
    source: str,
) -> TraceRead:
    report = TraceReport(rows=len(readings))
    if not any(r.value is not None for r in readings):
        raise TraceError(f"{path}: no readable data rows")
    latest = None
    for reading in readings:
        if latest is not None and reading.time < latest:
            report.reordered += 1
        latest = reading.time if latest is None else max(latest, reading.time)
    # One reading per time: the last row of the file wins, as a later revision would.
    by_time: dict[datetime, _Reading] = {}
    for reading in readings:
        if reading.time in by_time:
            report.duplicates += 1
            if reading.value is None:
                continue
        by_time[reading.time] = reading
    ordered = [by_time[t] for t in sorted(by_time)]
    report.missing = sum(1 for r in ordered if r.value is None)
    seconds = np.array([(r.time - ordered[0].time).total_seconds() for r in ordered]) / 60.0
    spacing = np.diff(seconds)
    if ordered and len(ordered) > 1:
        before = np.concatenate(([np.inf], spacing))
        after = np.concatenate((spacing, [np.inf]))
        resolution = np.minimum(before, after)
    else:
        resolution = np.array([float(step_minutes or 60)])
    snapped = np.array([_snap(r) for r in resolution])
    report.resolutions = sorted({int(s) for s in snapped})
    if step_minutes is None:
        total = float(resolution.sum())
        step_minutes = max(
            s for s in report.resolutions if resolution[snapped == s].sum() >= _STEP_SHARE * total
        )
    report.step_minutes = step_minutes
    step = timedelta(minutes=step_minutes)
    start = floor_to_step(ordered[0].time, step_minutes)
    ends = seconds + np.minimum(np.concatenate((spacing, [np.inf])), resolution)
    last_end = ordered[0].time + timedelta(minutes=float(ends[-1]))
    n_slots = math.ceil((last_end - start) / step - 1e-9)
    if n_slots > MAX_SLOTS:
        raise TraceError(
            f"{ordered[-1].where}: {ordered[-1].time.isoformat()} lies {n_slots} slots after "
            f"the first reading (at most {MAX_SLOTS})"
        )
    offset = (ordered[0].time - start).total_seconds() / 60.0
    sums = np.zeros(n_slots)
    weights = np.zeros(n_slots)
    counts = np.zeros(n_slots, dtype=np.int64)
    exact = np.zeros(n_slots, dtype=bool)
    for index, reading in enumerate(ordered):
        if reading.value is None:
            continue
        lo, hi = seconds[index] + offset, ends[index] + offset
        first, last = int(lo // step_minutes), math.ceil(hi / step_minutes - 1e-9)
        for slot in range(first, min(last, n_slots)):
            slot_lo = slot * step_minutes
            overlap = min(hi, slot_lo + step_minutes) - max(lo, slot_lo)
            if overlap <= 1e-9:
                continue
            sums[slot] += reading.value * overlap
            weights[slot] += overlap
            counts[slot] += 1
            if abs(lo - slot_lo) < 1e-9 and abs(hi - slot_lo - step_minutes) < 1e-9:
                exact[slot] = True
    covered = weights > 0
    values = np.where(covered, sums / np.where(covered, weights, 1.0), np.nan)
    report.filled = int((~covered).sum())
    report.resampled = int((covered & ~((counts == 1) & exact)).sum())
    # Gaps take the value before them (the first slots, if empty, the first value).
    fill_from = np.where(covered, np.arange(n_slots), 0)
    np.maximum.accumulate(fill_from, out=fill_from)
    first_covered = int(np.flatnonzero(covered)[0])
    fill_from[:first_covered] = first_covered
    series = IntensitySeries(
        start=start,
        step_minutes=step_minutes,
        values=values[fill_from],
        signal_type=signal_type,
        source=source,
        provenance=tuple("observed" if c else "filled" for c in covered),
    )
    return TraceRead(series, report)
