"""Per-slot pricing for carbon accounting: the best signal per slot, and its label under every
fallback (stored observation, provider-estimated value, forecast, history forecaster, flat
value, marginal-only provider). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.carbon import service as carbon
from scheduler.carbon.models import IntensityPoint
from scheduler.carbon.providers.base import ProviderUnavailable
from scheduler.carbon.series import IntensitySeries
from scheduler.db.session import make_engine, make_session_factory, session_scope

T = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # a month's last hour, in a non-leap year


class SilentProvider:
    """A remote provider that is down: accounting must work from what is stored."""

    name = "electricitymaps"
    signal_type = "average"

    def __init__(self, series: IntensitySeries | None = None) -> None:
        self.series = series

    def current(self, zone: str) -> tuple[datetime, float]:
        raise ProviderUnavailable("down")

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        if self.series is None:
            raise ProviderUnavailable("down")
        return self.series

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        if self.series is None:
            raise ProviderUnavailable("down")
        return self.series


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def add(
    session: Session,
    kind: str,
    start: datetime,
    count: int,
    value: float,
    *,
    made: datetime,
    step: int = 15,
    provenance: str | None = None,
    signal: str = "average",
    source: str = "electricitymaps",
) -> None:
    for i in range(count):
        session.add(
            IntensityPoint(
                zone="DE",
                kind=kind,
                source=source,
                signal_type=signal,
                generated_at=made,
                time=start + timedelta(minutes=step * i),
                step_minutes=step,
                g_per_kwh=value,
                provenance=provenance,
            )
        )
    session.flush()


def labels(pricing: carbon.SlotPricing) -> list[tuple[str, float, str]]:
    return [
        (slot.start.strftime("%H:%M"), slot.g_per_kwh, slot.provenance)
        for _, slot in sorted(pricing.slots.items())
    ]


def price(session: Session, provider: SilentProvider, minutes: int = 60) -> carbon.SlotPricing:
    return carbon.price_slots(
        session,
        provider,
        "DE",
        start=T,
        end=T + timedelta(minutes=minutes),
        now=T + timedelta(hours=3),
    )


def test_observed_then_provider_estimated_then_forecast_made_before_the_slot(
    session: Session,
) -> None:
    add(session, "history", T, 2, 100.0, made=T + timedelta(minutes=40))
    add(
        session,
        "history",
        T + timedelta(minutes=30),
        1,
        150.0,
        made=T + timedelta(minutes=50),
        provenance="estimated",
    )
    add(session, "forecast", T - timedelta(hours=1), 8, 400.0, made=T - timedelta(hours=1))
    add(session, "forecast", T, 4, 900.0, made=T + timedelta(minutes=46))  # made too late
    pricing = price(session, SilentProvider())
    assert labels(pricing) == [
        ("23:00", 100.0, "observed"),
        ("23:15", 100.0, "observed"),
        ("23:30", 150.0, "estimated"),
        ("23:45", 400.0, "forecast"),
    ]
    assert {slot.basis for slot in pricing.slots.values()} == {"lifecycle"}


def test_a_forecast_stored_as_history_stays_a_forecast(session: Session) -> None:
    # UK Carbon Intensity's "actual" field holds the forecast until the actual is known.
    add(session, "history", T, 4, 210.0, made=T, provenance="forecast", source="ukci")
    pricing = price(session, SilentProvider())
    assert {s.provenance for s in pricing.slots.values()} == {"forecast"}
    assert {s.basis for s in pricing.slots.values()} == {"direct"}


def test_nothing_stored_and_provider_down_is_filled_and_says_why(session: Session) -> None:
    pricing = price(session, SilentProvider())
    assert [s.provenance for s in pricing.slots.values()] == ["filled"]
    assert [s.g_per_kwh for s in pricing.slots.values()] == [carbon.FALLBACK_G_PER_KWH]
    assert any("no forecast fetched yet" in note for note in pricing.notes)


def test_stored_history_before_the_window_gives_a_labelled_seasonal_forecast(
    session: Session,
) -> None:
    add(session, "history", T - timedelta(days=2), 48, 180.0, made=T, step=60)
    pricing = price(session, SilentProvider())
    (slot,) = pricing.slots.values()
    assert slot.provenance == "forecast"
    assert slot.source.startswith("seasonal forecast")
    assert slot.g_per_kwh == pytest.approx(180.0)


def test_marginal_values_never_price_a_charge(session: Session) -> None:
    add(session, "history", T, 4, 700.0, made=T, signal="marginal", source="watttime")
    pricing = price(session, SilentProvider())
    assert {s.provenance for s in pricing.slots.values()} == {"filled"}
    assert {s.signal_type for s in pricing.slots.values()} == {"average"}


def test_refresh_stores_the_providers_own_labels_and_basis(session: Session) -> None:
    series = IntensitySeries(
        start=T - timedelta(hours=1),
        step_minutes=60,
        values=np.array([100.0, 120.0]),
        source="electricitymaps",
    )
    # The provider marks its second slot as its own estimate (Electricity Maps' isEstimated).
    object.__setattr__(series, "provenance", ("observed", "estimated"))
    assert carbon.refresh_zone(session, SilentProvider(series), "DE", now=T + timedelta(hours=1))
    stored = session.scalars(
        select(IntensityPoint).where(IntensityPoint.kind == "history").order_by(IntensityPoint.time)
    ).all()
    assert [(p.provenance, p.basis) for p in stored] == [
        ("observed", "lifecycle"),
        ("estimated", "lifecycle"),
    ]


def test_a_stored_trace_replay_is_labelled_replayed_and_never_restated_as_observed(
    session: Session,
) -> None:
    series = IntensitySeries(
        start=T - timedelta(hours=1),
        step_minutes=60,
        values=np.array([100.0, 120.0]),
        source="trace:DE",
    )
    assert carbon.refresh_zone(session, SilentProvider(series), "DE", now=T + timedelta(hours=1))
    stored = session.scalars(select(IntensityPoint)).all()
    assert {p.provenance for p in stored} == {"replayed"}
    pricing = price(session, SilentProvider())
    assert {s.provenance for s in pricing.slots.values()} == {"replayed"}
