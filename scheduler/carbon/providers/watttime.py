"""WattTime API v3: marginal (co2_moer) or average (co2_aoer) intensity, 5-minute slots.

- `co2_aoer` (average) is historical only, for accounting: it is never sent to
  `/v3/forecast`. Its forecast comes from greenwindow's own forecaster, fed with the last
  two weeks of `/v3/historical`, labelled as such (source `forecaster:watttime`).
- A free account reads `co2_moer` for CAISO_NORTH only. On the free plan other regions
  are refused here, before any request, as a plan limit; the service then falls back to
  its stored history and own forecaster. A 403 "Invalid scope" from the API is reported
  as a plan limit naming the endpoint, region and signal.
"""

from __future__ import annotations

import math
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
from scheduler.carbon.series import ALLOWED_STEPS, IntensitySeries, as_utc, floor_to_step

BASE_URL = "https://api.watttime.org"
NAME = "watttime"
SIGNALS = {"marginal": "co2_moer", "average": "co2_aoer"}
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
LBS_UNITS = "lbs_co2_per_mwh"
# /v3/historical answers at most 32 days per request.
HISTORICAL_CHUNK = timedelta(days=30)
MAX_HORIZON_HOURS = 72
# The only region a free account may read, and the only signal it gets there.
FREE_REGION = "CAISO_NORTH"
FREE_SIGNAL = "co2_moer"
HISTORICAL = "/v3/historical"
FORECAST = "/v3/forecast"
# History the own forecaster of the average signal learns from (one request).
FORECASTER_HISTORY = timedelta(days=14)
CREDENTIALS_HINT = "check GREENWINDOW_CARBON_USERNAME and GREENWINDOW_CARBON_PASSWORD"


class WattTimeProvider:
    """Client of `/login`, `/v3/forecast` and `/v3/historical`; the zone is a WattTime region."""

    name = NAME

    def __init__(
        self,
        username: str | None,
        password: str | None,
        *,
        signal_type: str = "marginal",
        plan: str = "free",
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        base_url: str | None = None,
    ) -> None:
        if not username or not password:
            raise ProviderAuthError(
                f"{NAME}: needs GREENWINDOW_CARBON_USERNAME and GREENWINDOW_CARBON_PASSWORD"
            )
        if signal_type not in SIGNALS:
            raise ValueError(f"signal_type must be one of {sorted(SIGNALS)}, not {signal_type!r}")
        if plan not in PLANS:
            raise ProviderError(f"{NAME}: plan must be one of {PLANS}, not {plan!r}")
        if plan == "free" and SIGNALS[signal_type] != FREE_SIGNAL:
            raise ProviderPlanLimit(
                f"{NAME}: plan limit: the free plan serves {FREE_SIGNAL} (marginal) only, "
                f"not {SIGNALS[signal_type]}; set GREENWINDOW_CARBON_PLAN=paid if the account "
                "has it",
                endpoint=HISTORICAL,
            )
        self.plan = plan
        self.signal_type = signal_type
        self._signal = SIGNALS[signal_type]
        self._credentials = (username, password)
        self._clock = clock or utc_now
        self._token: str | None = None
        # Maintenance ticks may share one provider across threads; log in one at a time.
        self._login_lock = threading.Lock()
        self._http = HttpClient(NAME, base_url or BASE_URL, transport=transport, sleep=sleep)

    def share_login(self, other: WattTimeProvider) -> None:
        """Use the bearer token `other` already holds (same account), saving a login."""
        self._token = other._token

    def _login(self, stale: str | None = None) -> str:
        with self._login_lock:
            if self._token is not None and self._token != stale:
                return self._token  # another thread logged in meanwhile
            return self._fresh_login()

    def _fresh_login(self) -> str:
        try:
            payload = self._http.get_json("/login", auth=self._credentials)
        except ProviderAuthError as exc:
            raise ProviderAuthError(
                f"{NAME}: login rejected (HTTP {exc.status_code}); {CREDENTIALS_HINT}",
                status_code=exc.status_code,
            ) from None
        token = field(NAME, payload, "token")
        if not isinstance(token, str) or not token:
            raise ProviderDataError(f"{NAME}: login answered without a token")
        self._token = token
        return token

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """GET with the bearer token, logging in first and once more if it has expired."""
        token = self._token or self._login()
        for attempt in (1, 2):
            try:
                return self._http.get_json(
                    path, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except ProviderAuthError as exc:
                # Tokens last about half an hour: a 401 usually means "log in again".
                if exc.status_code == 401 and attempt == 1:
                    token = self._login(stale=token)
                    continue
                if exc.status_code == 403:
                    raise ProviderPlanLimit(
                        f"{NAME}: plan limit: {path} for region {params.get('region')} / "
                        f"{params.get('signal_type')} is not in this account's plan (HTTP 403: "
                        f"{exc.detail}); free accounts may read {FREE_REGION} only",
                        endpoint=path,
                        status_code=403,
                        detail=exc.detail,
                    ) from None
                raise ProviderAuthError(
                    f"{NAME}: token rejected (HTTP {exc.status_code}) after a fresh login; "
                    f"{CREDENTIALS_HINT}",
                    status_code=exc.status_code,
                ) from None
        raise ProviderError(f"{NAME}: unreachable")  # the loop always returns or raises

    def _plan_allows(self, path: str, zone: str) -> None:
        """Refuse, without a request, what the free plan cannot read."""
        if self.plan == "free" and zone.upper() != FREE_REGION:
            raise ProviderPlanLimit(
                f"{NAME}: plan limit: {path} for region {zone} needs a paid plan; the free "
                f"plan reads {FREE_REGION} only (no request sent)",
                endpoint=path,
            )

    def _series(self, payload: Any, label: str) -> IntensitySeries:
        data = as_list(NAME, field(NAME, payload, "data"), "data")
        meta = payload.get("meta") or {}
        if not isinstance(meta, dict):
            raise ProviderDataError(f"{NAME}: meta is not an object")
        units = meta.get("units", LBS_UNITS)
        if units != LBS_UNITS:
            raise ProviderDataError(f"{NAME}: unexpected units {units!r} (expected {LBS_UNITS})")
        # The API names the period `data_point_period_seconds`; one SDK spells it differently.
        period = meta.get("data_point_period_seconds", meta.get("data_point_periods_second"))
        step = None
        if isinstance(period, int | float) and period / 60 in ALLOWED_STEPS:
            step = int(period // 60)
        points = []
        for item in data:
            value = number(NAME, field(NAME, item, "value"))
            points.append(
                (
                    timestamp(NAME, field(NAME, item, "point_time")),
                    None if value is None else value * LBS_PER_MWH_TO_G_PER_KWH,
                )
            )
        return to_series(
            NAME,
            points,
            step,
            labels=[label] * len(points),
            signal_type=self.signal_type,
            source=NAME,
        )

    def current(self, zone: str) -> tuple[datetime, float]:
        """The latest observed slot of the last hour and its intensity."""
        now = self._clock()
        series = self.history(zone, now - timedelta(hours=1), now)
        if len(series) == 0:
            raise ProviderDataError(f"{NAME}: no data for {zone} in the last hour")
        return series.times()[-1], float(series.values[-1])

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        """Observed intensity overlapping `[start, end)`, fetched in 30-day requests."""
        start, end = as_utc(start), as_utc(end)
        self._plan_allows(HISTORICAL, zone)
        chunks: list[IntensitySeries] = []
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + HISTORICAL_CHUNK)
            params = {
                "region": zone,
                "signal_type": self._signal,
                "start": chunk_start.isoformat(),
                "end": chunk_end.isoformat(),
            }
            chunks.append(self._series(self._get(HISTORICAL, params), "observed"))
            chunk_start = chunk_end
        if not chunks:
            raise ValueError("history needs start < end")
        points = [
            (t, v) for chunk in chunks for t, v in zip(chunk.times(), chunk.values, strict=True)
        ]
        labels = [label for chunk in chunks for label in chunk.labels("observed")]
        merged = to_series(
            NAME,
            points,
            chunks[0].step_minutes,
            labels=labels,
            signal_type=self.signal_type,
            source=NAME,
        )
        return merged.window(start, end)

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        """The latest forecast from the current slot, up to `hours` (at most 72) ahead.

        Marginal: WattTime's own `/v3/forecast`. Average: there is no `co2_aoer` forecast,
        so it is the own forecaster's, from the last two weeks of history.
        """
        if self._signal != FREE_SIGNAL:
            series = self._own_forecast(zone, hours)
        else:
            self._plan_allows(FORECAST, zone)
            params = {
                "region": zone,
                "signal_type": self._signal,
                "horizon_hours": min(MAX_HORIZON_HOURS, math.ceil(hours)),
            }
            series = self._series(self._get(FORECAST, params), "forecast")
        now = floor_to_step(self._clock(), series.step_minutes)
        ahead = series.window(now, now + timedelta(hours=hours))
        if len(ahead) == 0:
            raise ProviderDataError(f"{NAME}: forecast for {zone} ends before now")
        return ahead

    def _own_forecast(self, zone: str, hours: float) -> IntensitySeries:
        now = self._clock()
        observed = self.history(zone, now - FORECASTER_HISTORY, now)
        try:
            series = seasonal_forecast(observed, now, min(hours, MAX_HORIZON_HOURS))
        except ValueError as exc:
            raise ProviderDataError(f"{NAME}: cannot forecast {zone}: {exc}") from None
        return replace(series.labelled("forecast"), source=f"forecaster:{NAME}")
