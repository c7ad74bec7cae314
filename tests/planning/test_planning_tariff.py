"""Time-of-use tariffs: local time with DST, windows across midnight, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from scheduler.planning.tariff import (
    DEFAULT_TARIFFS,
    TariffSchedule,
    TariffWindow,
    prices_for_slots,
    spain_2_0td_example,
)


def hourly(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=h) for h in range(count)]


def test_off_peak_window_follows_local_time_across_the_spring_dst_change() -> None:
    # Off-peak 01:00-07:00 Madrid time. Madrid is UTC+1 before 2026-03-29 and UTC+2 after.
    schedule = TariffSchedule(
        timezone="Europe/Madrid",
        default_price=0.2,
        windows=[TariffWindow(start="01:00", end="07:00", price=0.1)],
    )
    before = prices_for_slots(schedule, hourly(datetime(2026, 3, 27, tzinfo=UTC), 24))
    after = prices_for_slots(schedule, hourly(datetime(2026, 3, 30, tzinfo=UTC), 24))
    assert np.flatnonzero(before == 0.1).tolist() == [0, 1, 2, 3, 4, 5]  # 00-06 UTC
    assert np.flatnonzero(after == 0.1).tolist() == [0, 1, 2, 3, 4, 23]  # 23-05 UTC


def test_the_autumn_change_day_has_one_more_cheap_hour_in_utc() -> None:
    # 2026-10-25: clocks go back 03:00 -> 02:00 in Madrid, so 01:00-07:00 local lasts 7 h.
    schedule = TariffSchedule(
        timezone="Europe/Madrid",
        default_price=0.2,
        windows=[TariffWindow(start="01:00", end="07:00", price=0.1)],
    )
    day = prices_for_slots(schedule, hourly(datetime(2026, 10, 24, 22, tzinfo=UTC), 24))
    assert int((day == 0.1).sum()) == 7


def test_window_wrapping_midnight_belongs_to_its_start_day() -> None:
    # Friday night only: Fri 22:00 to Sat 06:00 local (UTC here).
    schedule = TariffSchedule(
        timezone="UTC",
        default_price=0.3,
        windows=[TariffWindow(days=["fri"], start="22:00", end="06:00", price=0.05)],
    )
    thursday = datetime(2026, 1, 8, tzinfo=UTC)
    prices = prices_for_slots(schedule, hourly(thursday, 72))
    cheap = [thursday + timedelta(hours=int(h)) for h in np.flatnonzero(prices == 0.05)]
    assert cheap[0] == datetime(2026, 1, 9, 22, tzinfo=UTC)
    assert cheap[-1] == datetime(2026, 1, 10, 5, tzinfo=UTC)
    assert len(cheap) == 8  # Thursday night is not included


def test_first_matching_window_wins_and_24_00_is_an_end() -> None:
    schedule = TariffSchedule(
        timezone="UTC",
        default_price=0.3,
        windows=[
            TariffWindow(start="12:00", end="24:00", price=0.2),
            TariffWindow(start="00:00", end="00:00", price=0.1),
        ],
    )
    prices = prices_for_slots(schedule, hourly(datetime(2026, 1, 5, tzinfo=UTC), 24))
    assert prices[:12].tolist() == [0.1] * 12
    assert prices[12:].tolist() == [0.2] * 12
    assert schedule.price_at(datetime(2026, 1, 5, 13, 30)) == 0.2  # naive means UTC


def test_spain_example_is_cheapest_at_night_and_weekends_dearest_at_peak() -> None:
    schedule = DEFAULT_TARIFFS["ES"]
    assert schedule == spain_2_0td_example()
    monday = datetime(2026, 1, 12, tzinfo=UTC)  # Madrid is UTC+1 in January
    week = prices_for_slots(schedule, hourly(monday, 24 * 7))
    weekday_night = [week[h] for h in range(23, 24 * 5, 24)]
    assert set(weekday_night) == {min(week)}
    assert week[10 - 1] == max(week)  # 10:00 local on Monday is punta
    assert week[19 - 1] == max(week)
    assert week[9 - 1] not in (min(week), max(week))  # 09:00 local is llano
    saturday = week[24 * 5 - 1 : 24 * 6 - 1]  # Saturday 00-24 local
    assert set(saturday) == {min(week)}


def test_invalid_schedules_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TariffSchedule(timezone="Mars/Olympus", default_price=0.1)
    with pytest.raises(ValidationError):
        TariffWindow(start="25:00", end="06:00", price=0.1)
    with pytest.raises(ValidationError):
        TariffWindow(start="7:5", end="08:00", price=0.1)
    with pytest.raises(ValidationError):
        TariffWindow(days=["someday"], start="01:00", end="02:00", price=0.1)
    with pytest.raises(ValidationError):
        TariffWindow(start="01:00", end="02:00", price=-1)


def test_schedule_round_trips_through_json() -> None:
    schedule = spain_2_0td_example()
    again = TariffSchedule.model_validate_json(schedule.model_dump_json())
    assert again == schedule
