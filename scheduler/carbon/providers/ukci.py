"""GB Carbon Intensity API (NESO): national or regional intensity in half-hour slots, no key.

The API has no plans: every endpoint is open. Its values are labelled: a half hour with a
measured `actual` is `observed`; one that only has a `forecast` (the future, recent half
hours not yet settled, and every regional value) is `forecast`. `/intensity` answers the
last completed half hour, which may be up to 30 minutes old: `current` returns that half
hour's own start, not the clock's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from scheduler.carbon.providers.base import Clock, ProviderDataError, ProviderError, utc_now
from scheduler.carbon.providers.http import HttpClient, Sleep
from scheduler.carbon.providers.parsing import as_list, field, number, timestamp, to_series
from scheduler.carbon.series import IntensitySeries, as_utc, floor_to_step

BASE_URL = "https://api.carbonintensity.org.uk"
NAME = "ukci"
STEP_MINUTES = 30
# Ranges longer than this are split into several requests: the API caps a range at 14
# days, and a chunk one day shorter keeps clear of that limit.
RANGE_CHUNK = timedelta(days=13)
# The documented region ids: 1-14 are the DNO regions, 15-17 England, Scotland, Wales.
REGION_IDS = range(1, 18)
_OUTWARD_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")


@dataclass(frozen=True)
class Area:
    """Where to read: all of GB, a region id (1-17), or an outward postcode."""

    kind: str  # "national" | "regionid" | "postcode"
    key: str = ""

    @property
    def suffix(self) -> str:
        """Path suffix that selects the area on the regional endpoints."""
        return f"/{self.kind}/{self.key}"


def parse_zone(zone: str) -> Area:
    """Map a zone string to an area: "GB", "13" / "region:13", "RG10" / "postcode:RG10"."""
    text = zone.strip().upper()
    if text in ("GB", "NATIONAL", ""):
        return Area("national")
    kind, _, key = text.rpartition(":")
    if kind in ("REGION", "REGIONID") or (not kind and key.isdigit()):
        if key.isdigit() and int(key) in REGION_IDS:
            return Area("regionid", str(int(key)))
    elif kind == "POSTCODE" or (not kind and _OUTWARD_POSTCODE.match(key)):
        if _OUTWARD_POSTCODE.match(key):
            return Area("postcode", key)
    raise ProviderError(
        f"{NAME}: zone {zone!r} is not GB, a region id 1-17 (e.g. 13 or region:13) "
        "or an outward postcode (e.g. RG10 or postcode:RG10)"
    )


def _minute(moment: datetime) -> str:
    """The API's time format: UTC, minute precision (it rejects seconds)."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%MZ")


def periods(payload: Any, region_id: int | None = None) -> list[tuple[datetime, Any]]:
    """(period start, intensity object) pairs from any of the API's envelope shapes."""
    data = field(NAME, payload, "data")
    if isinstance(data, dict):
        # One region over a range: {"data": {"regionid": .., "data": [periods]}}
        entries = as_list(NAME, field(NAME, data, "data"), "regional data")
    else:
        entries = as_list(NAME, data, "data")
        if entries and isinstance(entries[0], dict) and "regions" in entries[0]:
            # All regions over a range: pick the asked one out of each period.
            if region_id is None:
                raise ProviderDataError(f"{NAME}: all-regions response needs a region id")
            entries = [
                {
                    "from": field(NAME, entry, "from"),
                    "intensity": _region_intensity(entry, region_id),
                }
                for entry in entries
            ]
        elif entries and isinstance(entries[0], dict) and "regionid" in entries[0]:
            # One region, now: {"data": [{"regionid": .., "data": [periods]}]}
            entries = as_list(NAME, field(NAME, entries[0], "data"), "regional data")
    return [
        (timestamp(NAME, field(NAME, entry, "from")), field(NAME, entry, "intensity"))
        for entry in entries
    ]


def _region_intensity(entry: Any, region_id: int) -> Any:
    for region in as_list(NAME, field(NAME, entry, "regions"), "regions"):
        if field(NAME, region, "regionid") == region_id:
            return field(NAME, region, "intensity")
    raise ProviderDataError(f"{NAME}: region {region_id} missing from a period")


def _value(intensity: Any, prefer_actual: bool) -> tuple[float | None, str]:
    """Measured value (`observed`) when asked for and present, else the forecast one."""
    actual = number(NAME, intensity.get("actual")) if isinstance(intensity, dict) else None
    if prefer_actual and actual is not None:
        return actual, "observed"
    return number(NAME, field(NAME, intensity, "forecast")), "forecast"


class UkciProvider:
    """Client of the national `/intensity/...` and regional `/regional/...` endpoints."""

    name = NAME
    signal_type = "average"

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        base_url: str | None = None,
    ) -> None:
        self._clock = clock or utc_now
        self._http = HttpClient(NAME, base_url or BASE_URL, transport=transport, sleep=sleep)

    def _series(self, payload: Any, prefer_actual: bool) -> IntensitySeries:
        points: list[tuple[datetime, float | None]] = []
        labels: list[str] = []
        for start, intensity in periods(payload):
            value, label = _value(intensity, prefer_actual)
            points.append((start, value))
            labels.append(label)
        return to_series(
            NAME, points, STEP_MINUTES, labels=labels, signal_type="average", source=NAME
        )

    def latest(self, zone: str) -> IntensitySeries:
        """The last half hour the API reports (measured where it has it), labelled."""
        area = parse_zone(zone)
        path = "/intensity" if area.kind == "national" else f"/regional{area.suffix}"
        series = self._series(self._http.get_json(path), prefer_actual=True)
        # The answer's own period, which may end before the clock's current half hour.
        return series.window(series.start, series.start + timedelta(minutes=STEP_MINUTES))

    def current(self, zone: str) -> tuple[datetime, float]:
        """Start and intensity of the last half hour reported (up to 30 minutes old)."""
        series = self.latest(zone)
        return series.start, float(series.values[0])

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        """Half-hours overlapping `[start, end)`: measured nationally, forecast regionally."""
        area = parse_zone(zone)
        start, end = as_utc(start), as_utc(end)
        points: list[tuple[datetime, float | None]] = []
        labels: list[str] = []
        chunk_start = floor_to_step(start, STEP_MINUTES)
        while chunk_start < end:
            chunk_end = min(end, chunk_start + RANGE_CHUNK)
            span = f"{_minute(chunk_start)}/{_minute(chunk_end)}"
            if area.kind == "national":
                payload = self._http.get_json(f"/intensity/{span}")
            else:
                payload = self._http.get_json(f"/regional/intensity/{span}{area.suffix}")
            series = self._series(payload, prefer_actual=True)
            points += list(zip(series.times(), series.values.tolist(), strict=True))
            labels += series.labels("observed")
            chunk_start = chunk_end
        if not points:
            raise ValueError("history needs start < end")
        merged = to_series(
            NAME, points, STEP_MINUTES, labels=labels, signal_type="average", source=NAME
        )
        return merged.window(start, end)

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        """Forecast half-hours from the current one, up to `hours` (at most 48) ahead."""
        area = parse_zone(zone)
        now = floor_to_step(self._clock(), STEP_MINUTES)
        reach = "fw24h" if hours <= 24 else "fw48h"
        if area.kind == "national":
            payload = self._http.get_json(f"/intensity/{_minute(now)}/{reach}")
        else:
            payload = self._http.get_json(
                f"/regional/intensity/{_minute(now)}/{reach}{area.suffix}"
            )
        series = self._series(payload, prefer_actual=False)
        ahead = series.window(now, now + timedelta(hours=hours))
        if len(ahead) == 0:
            raise ProviderDataError(f"{NAME}: forecast for {zone} does not reach now")
        return ahead
