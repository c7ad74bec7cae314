"""Electricity Maps API v3: average (life-cycle) carbon intensity per zone, hourly."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from scheduler.carbon.providers.base import (
    Clock,
    ProviderAuthError,
    ProviderDataError,
    utc_now,
)
from scheduler.carbon.providers.http import HttpClient, Sleep
from scheduler.carbon.providers.parsing import as_list, field, number, timestamp, to_series
from scheduler.carbon.series import IntensitySeries, as_utc, floor_to_step

BASE_URL = "https://api.electricitymap.org/v3/"
NAME = "electricitymaps"
# The free tier's /history covers the last 24 h; older data needs /past-range, which
# takes a bounded range per request (10 days is within the documented hourly limit).
HISTORY_SPAN = timedelta(hours=24)
PAST_RANGE_CHUNK = timedelta(days=10)


class ElectricityMapsProvider:
    """Client of `carbon-intensity/latest`, `/history`, `/past-range` and `/forecast`."""

    name = NAME
    signal_type = "average"

    def __init__(
        self,
        token: str | None,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        base_url: str = BASE_URL,
    ) -> None:
        if not token:
            raise ProviderAuthError(f"{NAME}: no API token; set GREENWINDOW_CARBON_TOKEN")
        self._clock = clock or utc_now
        self._http = HttpClient(
            NAME,
            base_url,
            transport=transport,
            headers={"auth-token": token},
            sleep=sleep,
            auth_hint="check GREENWINDOW_CARBON_TOKEN",
        )

    def _points(self, items: Any, what: str) -> list[tuple[datetime, float | None]]:
        return [
            (
                timestamp(NAME, field(NAME, item, "datetime")),
                number(NAME, field(NAME, item, "carbonIntensity")),
            )
            for item in as_list(NAME, items, what)
        ]

    def _series(self, points: list[tuple[datetime, float | None]]) -> IntensitySeries:
        return to_series(NAME, points, 60, signal_type="average", source=NAME)

    def current(self, zone: str) -> tuple[datetime, float]:
        """The latest hour and its intensity."""
        payload = self._http.get_json("carbon-intensity/latest", params={"zone": zone})
        [(moment, value)] = self._points([payload], "latest")
        if value is None:
            raise ProviderDataError(f"{NAME}: no current intensity for zone {zone}")
        return moment, value

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        """Hourly intensity overlapping `[start, end)`: /history when recent, else /past-range."""
        start, end = as_utc(start), as_utc(end)
        if start >= self._clock() - HISTORY_SPAN:
            payload = self._http.get_json("carbon-intensity/history", params={"zone": zone})
            points = self._points(field(NAME, payload, "history"), "history")
        else:
            points = []
            chunk_start = floor_to_step(start, 60)
            while chunk_start < end:
                chunk_end = min(end, chunk_start + PAST_RANGE_CHUNK)
                payload = self._http.get_json(
                    "carbon-intensity/past-range",
                    params={
                        "zone": zone,
                        "start": chunk_start.isoformat(),
                        "end": chunk_end.isoformat(),
                    },
                )
                points += self._points(field(NAME, payload, "data"), "past-range data")
                chunk_start = chunk_end
        return self._series(points).window(start, end)

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        """Hourly forecast from the current hour, up to `hours` ahead (as far as offered)."""
        payload = self._http.get_json("carbon-intensity/forecast", params={"zone": zone})
        series = self._series(self._points(field(NAME, payload, "forecast"), "forecast"))
        now = floor_to_step(self._clock(), 60)
        ahead = series.window(now, now + timedelta(hours=hours))
        if len(ahead) == 0:
            raise ProviderDataError(
                f"{NAME}: forecast for {zone} ends at {series.end.isoformat()}, before now"
            )
        return ahead
