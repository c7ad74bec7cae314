"""Electricity Maps API v3: average (life-cycle) carbon intensity per zone, hourly.

What a token may call depends on its plan (see docs/carbon-providers.md):

- free: `carbon-intensity/latest` and `carbon-intensity/history` (the last 24 h) only.
  Forecasts come from greenwindow's own forecaster, fed with the hours this provider has
  observed, and are labelled as such (source `forecaster:electricitymaps`).
- paid: also `carbon-intensity/past-range` (older history) and `carbon-intensity/forecast`
  (with `horizonHours` 6, 24, 48 or 72).

A 401/403 on an endpoint outside the free tier is reported as a plan limit naming the
endpoint, never as a bad token: the API answers `{"error":"Invalid auth-token"}` both for
a wrong token and for a valid free token asking for a paid endpoint.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from scheduler.carbon.forecaster import seasonal_forecast
from scheduler.carbon.providers.base import (
    PLANS,
    Clock,
    ProviderAuthError,
    ProviderDataError,
    ProviderError,
    ProviderPlanLimit,
    utc_now,
)
from scheduler.carbon.providers.http import HttpClient, Sleep
from scheduler.carbon.providers.parsing import as_list, field, number, timestamp, to_series
from scheduler.carbon.series import IntensitySeries, as_utc, floor_to_step, series_from_points

BASE_URL = "https://api.electricitymap.org/v3/"
NAME = "electricitymaps"
LATEST = "carbon-intensity/latest"
HISTORY = "carbon-intensity/history"
PAST_RANGE = "carbon-intensity/past-range"
FORECAST = "carbon-intensity/forecast"
FREE_ENDPOINTS = frozenset({LATEST, HISTORY})
# /history covers the last 24 h. A caller's "now - 24 h" comes from its own clock, read a
# moment before ours, so a start up to this much older still counts as recent.
HISTORY_SPAN = timedelta(hours=24)
HISTORY_SLACK = timedelta(hours=1)
# /past-range takes at most 10 days (240 hourly points) per request; stay below the limit.
PAST_RANGE_CHUNK = timedelta(days=9)
# The forecast horizons the API accepts; the default (none sent) is 24 h.
HORIZONS_HOURS = (6, 24, 48, 72)
# Without a zone match the API would answer for the caller's IP location: switch that off.
# The v3 documentation names the switch `disableCallerLookup`; older pages name it
# `shouldUseFallbackCallerLookup`. The API ignores the one it does not know.
NO_CALLER_LOOKUP = {"disableCallerLookup": "true", "shouldUseFallbackCallerLookup": "false"}
# A refresh asks for the forecast and then the history: one /history answer serves both.
HISTORY_REUSE = timedelta(minutes=5)
# The own forecaster (free plan) learns from the hours observed while the service runs.
KEEP_OBSERVED = timedelta(days=14)
MAX_OBSERVED_ZONES = 64
TOKEN_HINT = "check GREENWINDOW_CARBON_TOKEN"


def horizon_for(hours: float) -> int:
    """The smallest accepted `horizonHours` that covers `hours` (72 at most)."""
    return next((h for h in HORIZONS_HOURS if h >= hours), HORIZONS_HOURS[-1])


class ElectricityMapsProvider:
    """Client of `carbon-intensity/latest`, `/history`, `/past-range` and `/forecast`."""

    name = NAME
    signal_type = "average"

    def __init__(
        self,
        token: str | None,
        *,
        plan: str = "free",
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        base_url: str | None = None,
    ) -> None:
        if not token:
            raise ProviderAuthError(f"{NAME}: no API token; set GREENWINDOW_CARBON_TOKEN")
        if plan not in PLANS:
            raise ProviderError(f"{NAME}: plan must be one of {PLANS}, not {plan!r}")
        self.plan = plan
        self._clock = clock or utc_now
        self._http = HttpClient(
            NAME,
            base_url or BASE_URL,
            transport=transport,
            headers={"auth-token": token},
            sleep=sleep,
        )
        self._lock = threading.Lock()
        self._recent: dict[str, tuple[datetime, IntensitySeries]] = {}
        self._observed: dict[str, IntensitySeries] = {}

    # -- requests ----------------------------------------------------------------------

    def _get(self, endpoint: str, zone: str, **params: Any) -> Any:
        """GET an endpoint for a zone, with the IP fallback off and the answer's zone checked."""
        try:
            payload = self._http.get_json(
                endpoint, params={"zone": zone, **NO_CALLER_LOOKUP, **params}
            )
        except ProviderAuthError as exc:
            raise self._refusal(endpoint, exc) from None
        answered = payload.get("zone") if isinstance(payload, dict) else None
        if answered is not None and str(answered).upper() != zone.upper():
            raise ProviderDataError(
                f"{NAME}: asked {endpoint} for zone {zone} but the answer is for zone "
                f"{answered}; refusing another place's data"
            )
        return payload

    def _refusal(self, endpoint: str, exc: ProviderAuthError) -> ProviderError:
        status, body = exc.status_code, exc.detail or ""
        if endpoint in FREE_ENDPOINTS and status == 401:
            return ProviderAuthError(
                f"{NAME}: token rejected on /{endpoint} (HTTP 401: {body}); {TOKEN_HINT}",
                status_code=status,
                detail=body,
            )
        if endpoint in FREE_ENDPOINTS:
            what = f"/{endpoint} is refused for this zone (HTTP {status}: {body})"
            advice = "the plan may not include this zone"
        else:
            what = f"/{endpoint} is not in this token's plan (HTTP {status}: {body})"
            advice = "it needs a paid plan; with a free token set GREENWINDOW_CARBON_PLAN=free"
        return ProviderPlanLimit(
            f"{NAME}: plan limit: {what}; {advice}",
            endpoint=endpoint,
            status_code=status,
            detail=body,
        )

    def _plan_allows(self, endpoint: str, why: str) -> None:
        if self.plan == "free" and endpoint not in FREE_ENDPOINTS:
            raise ProviderPlanLimit(
                f"{NAME}: plan limit: {why} needs /{endpoint}, which the free plan lacks "
                "(free: /carbon-intensity/latest and /history, the last 24 h); "
                "set GREENWINDOW_CARBON_PLAN=paid if the token has it",
                endpoint=endpoint,
            )

    # -- parsing -----------------------------------------------------------------------

    def _series(self, items: Any, what: str, zone: str) -> IntensitySeries:
        """Hourly series from response items, labelled observed / estimated / forecast."""
        points: list[tuple[datetime, float | None]] = []
        labels: list[str] = []
        details: list[str | None] = []
        for item in as_list(NAME, items, what):
            item_zone = item.get("zone") if isinstance(item, dict) else None
            if item_zone is not None and str(item_zone).upper() != zone.upper():
                raise ProviderDataError(
                    f"{NAME}: {what} for zone {zone} holds a point of zone {item_zone}"
                )
            points.append(
                (
                    timestamp(NAME, field(NAME, item, "datetime")),
                    number(NAME, field(NAME, item, "carbonIntensity")),
                )
            )
            if what == "forecast":
                labels.append("forecast")
                details.append(None)
            elif item.get("isEstimated"):
                labels.append("estimated")
                method = item.get("estimationMethod")
                details.append(str(method) if method else None)
            else:
                labels.append("observed")
                details.append(None)
        return to_series(
            NAME, points, 60, labels=labels, details=details, signal_type="average", source=NAME
        )

    # -- the provider interface --------------------------------------------------------

    def latest(self, zone: str) -> IntensitySeries:
        """The latest hour as a one-slot series, labelled observed or estimated."""
        payload = self._get(LATEST, zone)
        value = number(NAME, field(NAME, payload, "carbonIntensity"))
        if value is None:
            raise ProviderDataError(f"{NAME}: no current intensity for zone {zone}")
        return self._series([payload], "latest", zone)

    def current(self, zone: str) -> tuple[datetime, float]:
        """The latest hour and its intensity."""
        series = self.latest(zone)
        return series.start, float(series.values[0])

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        """Hourly intensity overlapping `[start, end)`: /history when recent, else /past-range."""
        start, end = as_utc(start), as_utc(end)
        if start >= end:
            raise ValueError("history needs start < end")
        if start >= self._clock() - HISTORY_SPAN - HISTORY_SLACK:
            return self._recent_history(zone).window(start, end)
        self._plan_allows(PAST_RANGE, f"history from {start.isoformat()}")
        points: list[IntensitySeries] = []
        chunk_start = floor_to_step(start, 60)
        while chunk_start < end:
            chunk_end = min(end, chunk_start + PAST_RANGE_CHUNK)
            payload = self._get(
                PAST_RANGE, zone, start=chunk_start.isoformat(), end=chunk_end.isoformat()
            )
            points.append(self._series(field(NAME, payload, "data"), "past-range data", zone))
            chunk_start = chunk_end
        return _merge(points).window(start, end)

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        """Hourly forecast from the current hour, up to `hours` ahead (72 at most).

        On the free plan it is the own forecaster's, from the hours observed so far.
        """
        now = floor_to_step(self._clock(), 60)
        if self.plan == "paid":
            payload = self._get(FORECAST, zone, horizonHours=horizon_for(hours))
            series = self._series(field(NAME, payload, "forecast"), "forecast", zone)
        else:
            recent = self._recent_history(zone)
            with self._lock:
                observed = self._observed.get(zone, recent)
            try:
                series = seasonal_forecast(observed, now, hours)
            except ValueError as exc:
                raise ProviderDataError(f"{NAME}: cannot forecast {zone}: {exc}") from None
            series = replace(series.labelled("forecast"), source=f"forecaster:{NAME}")
        ahead = series.window(now, now + timedelta(hours=hours))
        if len(ahead) == 0:
            raise ProviderDataError(
                f"{NAME}: forecast for {zone} ends at {series.end.isoformat()}, before now"
            )
        return ahead

    # -- the observed hours kept for the own forecaster ----------------------------------

    def _recent_history(self, zone: str) -> IntensitySeries:
        """The /history answer (last 24 h), fetched at most once per HISTORY_REUSE."""
        now = self._clock()
        with self._lock:
            cached = self._recent.get(zone)
        if cached is not None and timedelta(0) <= now - cached[0] < HISTORY_REUSE:
            return cached[1]
        payload = self._get(HISTORY, zone)
        series = self._series(field(NAME, payload, "history"), "history", zone)
        with self._lock:
            self._recent[zone] = (now, series)
            self._remember(zone, series, now)
        return series

    def _remember(self, zone: str, series: IntensitySeries, now: datetime) -> None:
        """Merge fresh observations into the zone's kept hours (caller holds the lock)."""
        kept = self._observed.get(zone)
        # After a gap the old hours would be bridged by a long forward-fill: start afresh.
        parts = [kept, series] if kept is not None and kept.end >= series.start else [series]
        merged = _merge(parts)
        self._observed.pop(zone, None)  # re-inserted last: the most recently used zone
        self._observed[zone] = merged.window(as_utc(now) - KEEP_OBSERVED, merged.end)
        while len(self._observed) > MAX_OBSERVED_ZONES:
            stale = next(iter(self._observed))
            self._observed.pop(stale)
            self._recent.pop(stale, None)


def _merge(parts: list[IntensitySeries]) -> IntensitySeries:
    """One series from several on the same step; later parts win where they overlap."""
    slots: dict[datetime, tuple[float, str, str | None]] = {}
    for part in parts:
        details = part.provenance_detail or (None,) * len(part)
        for moment, value, label, detail in zip(
            part.times(), part.values.tolist(), part.labels("observed"), details, strict=True
        ):
            slots[moment] = (value, label, detail)
    ordered = sorted(slots.items())
    return series_from_points(
        [(moment, value) for moment, (value, _, _) in ordered],
        parts[0].step_minutes,
        labels=[label for _, (_, label, _) in ordered],
        details=[detail for _, (_, _, detail) in ordered],
        signal_type=parts[0].signal_type,
        source=parts[0].source,
    )
