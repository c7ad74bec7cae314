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
    # "provider" | "stored_forecast" | "forecaster" | "constant" | "history" | "replayed"
    origin: str
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
    default = "observed" if kind == "history" else "forecast"
    if (series.source or "").startswith("trace:"):
        default = "replayed"  # a recording of another year, whatever the kind of batch
    labels = slot_provenance(series, default=default)
    basis = emission_factor_basis(series)
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
            provenance=label,
            basis=basis,
        )
        for t, v, label in zip(series.times(), series.values, labels, strict=True)
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
            # A trace replayed onto today is a recording of another year, not an observation.
            return Signal(series, "replayed", f"bundled trace {series.source} replayed", now)
        except ProviderError:
            pass
    hours = max((end - start).total_seconds() / 3600.0 + 2, 1.0)
    return planning_signal(session, provider, zone, now=start - timedelta(hours=1), hours=hours)


# -- per-slot pricing for carbon accounting ------------------------------------------------

PROVENANCES = ("observed", "forecast", "estimated", "replayed", "filled")
BASES = ("lifecycle", "direct")
# What each provider's numbers include when it does not say: Electricity Maps (and the bundled
# trace, its LCA column) give life-cycle factors; UK Carbon Intensity and WattTime give direct.
_BASIS_BY_SOURCE = (
    ("electricitymaps", "lifecycle"),
    # Trace files are read from their life-cycle (LCA) column where they have one.
    ("trace:", "lifecycle"),
    ("ukci", "direct"),
    ("watttime", "direct"),
)
# Slot labels in order of preference when several stored values cover the same slot.
_RANK = {"observed": 0, "estimated": 1, "replayed": 2, "forecast": 3, "filled": 4}


def slot_provenance(series: IntensitySeries, *, default: str) -> list[str]:
    """One label per slot: the series' own (when the provider set them), else `default`."""
    labels = getattr(series, "provenance", None)
    if labels is None or len(labels) != len(series):
        return [default] * len(series)
    return [label if label in PROVENANCES else default for label in labels]


def basis_of_source(source: str) -> str | None:
    """The emission-factor basis a source publishes, when known."""
    lowered = source.lower()
    return next((basis for key, basis in _BASIS_BY_SOURCE if key in lowered), None)


def emission_factor_basis(series: IntensitySeries) -> str | None:
    """lifecycle or direct: the series' own statement, else what its source is known to give."""
    stated = getattr(series, "basis", None) or getattr(series, "emission_factor_basis", None)
    return stated if stated in BASES else basis_of_source(series.source or "")


@dataclass(frozen=True)
class PricedSlot:
    """The intensity one accounting slot was priced with, and where that value came from."""

    start: datetime
    step_minutes: int
    g_per_kwh: float
    provenance: str
    source: str
    signal_type: str
    basis: str | None
    # When the value was produced: the forecast batch's time, or when the observation was fetched.
    made_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "g_per_kwh": self.g_per_kwh,
            "provenance": self.provenance,
            "source": self.source,
            "signal_type": self.signal_type,
            "basis": self.basis,
            "made_at": self.made_at.isoformat().replace("+00:00", "Z") if self.made_at else None,
        }


@dataclass(frozen=True)
class SlotPricing:
    """Per-slot intensity over an accounting window."""

    zone: str
    step_minutes: int
    slots: dict[datetime, PricedSlot]
    notes: tuple[str, ...]

    def at(self, moment: datetime) -> PricedSlot:
        """The slot holding `moment` (the nearest one outside the window)."""
        key = floor_to_step(moment, self.step_minutes)
        found = self.slots.get(key)
        if found is not None:
            return found
        ordered = sorted(self.slots)
        return self.slots[ordered[0] if key < ordered[0] else ordered[-1]]


def _covers(point: IntensityPoint, moment: datetime) -> bool:
    return point.time <= moment < point.time + timedelta(minutes=point.step_minutes)


def _label(point: IntensityPoint) -> str:
    if point.provenance in PROVENANCES:
        return point.provenance
    return "observed" if point.kind == "history" else "forecast"


def _from_point(point: IntensityPoint, slot: datetime, step: int) -> PricedSlot:
    return PricedSlot(
        start=slot,
        step_minutes=step,
        g_per_kwh=point.g_per_kwh,
        provenance=_label(point),
        source=point.source,
        signal_type=point.signal_type,
        basis=point.basis if point.basis in BASES else basis_of_source(point.source),
        made_at=point.generated_at,
    )


def _stored_points(
    session: Session, zone: str, kinds: tuple[str, ...], start: datetime, end: datetime
) -> dict[str, list[IntensityPoint]]:
    """The zone's stored average points of each of `kinds` over [start, end), in time order,
    in one read."""
    # Points starting up to an hour early can still cover the window's first slot.
    points: dict[str, list[IntensityPoint]] = {kind: [] for kind in kinds}
    for point in session.scalars(
        select(IntensityPoint)
        .where(
            IntensityPoint.zone == zone,
            IntensityPoint.kind.in_(kinds),
            IntensityPoint.signal_type == "average",
            IntensityPoint.time >= start - timedelta(hours=1),
            IntensityPoint.time < end,
        )
        .order_by(IntensityPoint.time)
    ):
        points[point.kind].append(point)
    return points


def price_slots(
    session: Session,
    provider: CarbonProvider,
    zone: str,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
) -> SlotPricing:
    """Price each slot of [start, end) with the best average intensity known for that slot.

    Per slot: the stored observation; else the newest stored forecast made before the slot
    began; else the bundled trace replayed onto that date; else the planner's fallback (a
    forecast from stored history, or a flat high value). Every slot says which it got. Budgets
    are charged on average (location-based) intensity, so marginal signals are never used here.
    """
    end = max(end, start + timedelta(seconds=1))
    stored = _stored_points(session, zone, ("history", "forecast"), start, end)
    history, forecasts = stored["history"], stored["forecast"]
    steps = {p.step_minutes for p in history + forecasts}
    step = min(steps) if steps else 60
    grid: list[datetime] = []
    cursor = floor_to_step(start, step)
    while cursor < end:
        grid.append(cursor)
        cursor += timedelta(minutes=step)
    slots: dict[datetime, PricedSlot] = {}
    for slot in grid:
        observed = [p for p in history if _covers(p, slot)]
        if observed:
            best = min(observed, key=lambda p: (_RANK[_label(p)], -p.generated_at.timestamp()))
            slots[slot] = _from_point(best, slot, step)
            continue
        made_before = [p for p in forecasts if _covers(p, slot) and p.generated_at <= slot]
        if made_before:
            slots[slot] = _from_point(max(made_before, key=lambda p: p.generated_at), slot, step)
    notes: list[str] = []
    missing = [slot for slot in grid if slot not in slots]
    if missing and provider.name == "trace":
        _fill_from_trace(provider, zone, missing, step, slots, notes)
        missing = [slot for slot in grid if slot not in slots]
    if missing:
        _fill_from_fallback(session, provider, zone, missing, step, slots, notes)
    return SlotPricing(zone, step, slots, tuple(notes))


def _fill_from_trace(
    provider: CarbonProvider,
    zone: str,
    missing: list[datetime],
    step: int,
    slots: dict[datetime, PricedSlot],
    notes: list[str],
) -> None:
    try:
        series = provider.history(zone, missing[0], missing[-1] + timedelta(minutes=step))
    except ProviderError as exc:
        notes.append(f"trace unreadable: {exc}")
        return
    labels = slot_provenance(series, default="replayed")
    basis = emission_factor_basis(series)
    for slot in missing:
        if len(series) == 0 or not series.start <= slot < series.end:
            continue
        index = int((slot - series.start) / timedelta(minutes=series.step_minutes))
        slots[slot] = PricedSlot(
            slot,
            step,
            float(series.values[index]),
            labels[index],
            series.source,
            series.signal_type,
            basis,
            None,
        )
    notes.append(f"bundled trace {series.source} replayed onto these dates")


def _fill_from_fallback(
    session: Session,
    provider: CarbonProvider,
    zone: str,
    missing: list[datetime],
    step: int,
    slots: dict[datetime, PricedSlot],
    notes: list[str],
) -> None:
    first = missing[0]
    hours = max((missing[-1] - first).total_seconds() / 3600.0 + 2, 1.0)
    signal = planning_signal(session, provider, zone, now=first - timedelta(hours=1), hours=hours)
    series = signal.series
    if series.signal_type != "average":
        signal = _constant(first, hours, "the provider gives no average intensity for the zone")
        series = signal.series
    label = {"forecaster": "forecast", "constant": "filled"}.get(signal.origin, "forecast")
    if signal.origin == "provider":
        label = "replayed"
    source = series.source or signal.origin
    if signal.origin == "forecaster":
        source = f"seasonal forecast from stored {series.source or 'history'}"
    basis = emission_factor_basis(series) if signal.origin != "constant" else None
    for slot in missing:
        if slot < series.start:
            value = float(series.values[0])
        elif slot >= series.end:
            value = float(series.values[-1])
        else:
            value = series.value_at(slot)
        slots[slot] = PricedSlot(
            slot, step, value, label, source, "average", basis, signal.generated_at
        )
    notes.append(signal.reason)
