"""The carbon signal as the service uses it: refresh, store, and serve with fallbacks.

Planning never waits on a remote provider. The refresh tick fetches each zone's forecast
and recent history into the database; planning then reads, in order:

1. the provider itself when it is local (the bundled or configured trace: no network);
2. the newest stored forecast that still covers the next hour;
3. a forecast built from stored history (`seasonal_forecast`);
4. a flat, deliberately high intensity, so estimates stay conservative.

Each answer says which of these it used and why, so users can see a degraded signal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from scheduler.carbon.forecaster import seasonal_forecast
from scheduler.carbon.models import IntensityPoint, ZoneSignalStatus
from scheduler.carbon.providers.base import CarbonProvider, ProviderError
from scheduler.carbon.series import IntensitySeries, floor_to_step

log = logging.getLogger("greenwindow.carbon")

FALLBACK_G_PER_KWH = 500.0
HISTORY_DAYS = 14
KEEP_FORECAST_BATCHES_HOURS = 48


@dataclass(frozen=True)
class Signal:
    """Intensity for a window, and how it was obtained."""

    series: IntensitySeries
    origin: str  # "provider" | "stored_forecast" | "forecaster" | "constant" | "history"
    reason: str
    generated_at: datetime | None

    @property
    def estimated(self) -> bool:
        """True unless every value is an observation."""
        return self.origin != "history"


def _constant(start: datetime, hours: float, reason: str) -> Signal:
    count = max(int(np.ceil(hours)), 1)
    series = IntensitySeries(
        start=floor_to_step(start, 60),
        step_minutes=60,
        values=np.full(count + 1, FALLBACK_G_PER_KWH),
        source="constant",
    )
    return Signal(series, "constant", reason, None)


def _store(session: Session, zone: str, kind: str, series: IntensitySeries, now: datetime) -> None:
    session.add_all(
        IntensityPoint(
            zone=zone,
            kind=kind,
            source=series.source,
            signal_type=series.signal_type,
            generated_at=now,
            time=t,
            step_minutes=series.step_minutes,
            g_per_kwh=float(v),
        )
        for t, v in zip(series.times(), series.values, strict=True)
    )


def refresh_zone(
    session: Session, provider: CarbonProvider, zone: str, *, now: datetime, hours: float = 72
) -> bool:
    """Fetch and store the zone's forecast and the last day of history; False on failure."""
    status = session.get(ZoneSignalStatus, zone) or ZoneSignalStatus(zone=zone)
    session.add(status)
    status.provider = provider.name
    status.last_attempt_at = now
    try:
        forecast = provider.forecast(zone, hours)
        history = provider.history(zone, now - timedelta(days=1), now)
    except ProviderError as exc:
        status.last_error = str(exc)
        log.warning("carbon refresh for %s failed: %s", zone, exc)
        return False
    _store(session, zone, "forecast", forecast, now)
    # History is stored once per slot: replace the overlap with the fresh values.
    session.execute(
        delete(IntensityPoint).where(
            IntensityPoint.zone == zone,
            IntensityPoint.kind == "history",
            IntensityPoint.time >= history.start,
        )
    )
    _store(session, zone, "history", history, now)
    session.execute(
        delete(IntensityPoint).where(
            IntensityPoint.zone == zone,
            (
                (IntensityPoint.kind == "forecast")
                & (IntensityPoint.generated_at < now - timedelta(hours=KEEP_FORECAST_BATCHES_HOURS))
            )
            | (
                (IntensityPoint.kind == "history")
                & (IntensityPoint.time < now - timedelta(days=HISTORY_DAYS))
            ),
        )
    )
    status.last_success_at = now
    status.last_error = None
    return True


def _series_of(points: list[IntensityPoint]) -> IntensitySeries | None:
    if not points:
        return None
    step = points[0].step_minutes
    start = points[0].time
    count = int((points[-1].time - start) / timedelta(minutes=step)) + 1
    values = np.full(count, np.nan)
    for point in points:
        values[int((point.time - start) / timedelta(minutes=step))] = point.g_per_kwh
    # Forward-fill gaps so the series is dense, as IntensitySeries requires.
    for i in range(1, count):
        if np.isnan(values[i]):
            values[i] = values[i - 1]
    return IntensitySeries(
        start=start,
        step_minutes=step,
        values=values,
        signal_type=points[0].signal_type,
        source=points[0].source,
    )


def stored_forecast(session: Session, zone: str) -> tuple[IntensitySeries, datetime] | None:
    """The newest stored forecast batch for the zone, with its generation time."""
    newest = session.scalar(
        select(func.max(IntensityPoint.generated_at)).where(
            IntensityPoint.zone == zone, IntensityPoint.kind == "forecast"
        )
    )
    if newest is None:
        return None
    points = list(
        session.scalars(
            select(IntensityPoint)
            .where(
                IntensityPoint.zone == zone,
                IntensityPoint.kind == "forecast",
                IntensityPoint.generated_at == newest,
            )
            .order_by(IntensityPoint.time)
        )
    )
    series = _series_of(points)
    return (series, newest) if series is not None else None


def stored_history(
    session: Session, zone: str, start: datetime, end: datetime
) -> IntensitySeries | None:
    """Observed intensity stored for the zone between start and end."""
    points = list(
        session.scalars(
            select(IntensityPoint)
            .where(
                IntensityPoint.zone == zone,
                IntensityPoint.kind == "history",
                IntensityPoint.time >= start,
                IntensityPoint.time < end,
            )
            .order_by(IntensityPoint.time)
        )
    )
    return _series_of(points)


def _failure_note(session: Session, zone: str) -> str:
    status = session.get(ZoneSignalStatus, zone)
    if status is None or status.last_attempt_at is None:
        return "no forecast fetched yet"
    if status.last_error:
        return f"provider {status.provider} failed: {status.last_error}"
    return "stored forecast no longer covers now"


def planning_signal(
    session: Session, provider: CarbonProvider, zone: str, *, now: datetime, hours: float
) -> Signal:
    """Intensity from now for `hours`, from the best source available (see module doc)."""
    if provider.name == "trace":
        try:
            series = provider.forecast(zone, hours)
            return Signal(series, "provider", f"bundled trace {series.source}", now)
        except ProviderError as exc:
            return _constant(
                now, hours, f"trace unreadable ({exc}); flat {FALLBACK_G_PER_KWH:g} g/kWh"
            )
    stored = stored_forecast(session, zone)
    if stored is not None:
        series, generated_at = stored
        if series.end >= now + timedelta(hours=1) and series.start <= now:
            note = "" if generated_at >= now - timedelta(hours=2) else " (stale)"
            return Signal(
                series, "stored_forecast", f"{provider.name} forecast{note}", generated_at
            )
    history = stored_history(session, zone, now - timedelta(days=HISTORY_DAYS), now)
    reason = _failure_note(session, zone)
    if history is not None and len(history) >= 24 * 60 // history.step_minutes:
        series = seasonal_forecast(history, now, hours)
        return Signal(series, "forecaster", f"forecast from stored history ({reason})", now)
    return _constant(now, hours, f"{reason}; flat {FALLBACK_G_PER_KWH:g} g/kWh assumed")


def accounting_signal(
    session: Session,
    provider: CarbonProvider,
    zone: str,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
) -> Signal:
    """Intensity over a past window for carbon accounting: observations where stored,
    else the signal the planner would have used (flagged as estimated)."""
    history = stored_history(session, zone, start - timedelta(hours=1), end)
    if history is not None and history.start <= start and history.end >= end:
        return Signal(history, "history", f"{history.source} observed", now)
    if provider.name == "trace":
        try:
            series = provider.history(zone, start - timedelta(hours=1), end + timedelta(hours=1))
            # A replayed trace is a recorded observation of that calendar slot.
            return Signal(series, "history", f"bundled trace {series.source}", now)
        except ProviderError:
            pass
    hours = max((end - start).total_seconds() / 3600.0 + 2, 1.0)
    return planning_signal(session, provider, zone, now=start - timedelta(hours=1), hours=hours)
