"""Time-of-use electricity tariffs per zone, evaluated in the zone's local time.

A schedule has an IANA time zone, a default price per kWh and windows
`{days, start "HH:MM", end "HH:MM", price}`. A window whose end is not after its start
wraps midnight: it begins on each listed day and ends the next morning (`22:00`-`06:00`
on `fri` covers Friday 22:00 to Saturday 06:00); equal start and end mean 24 hours.
`24:00` is accepted as an end. The first window (in list order) that covers a moment sets
its price; no window means the default price. A slot is priced at its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.planning.types import to_utc

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS: list[Day] = ["mon", "tue", "wed", "thu", "fri"]
WEEKEND: list[Day] = ["sat", "sun"]


def _minutes(text: str) -> int:
    """Minutes after midnight of an `HH:MM` time (`24:00` allowed)."""
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"time {text!r} is not HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > 24 * 60:
        raise ValueError(f"time {text!r} is out of range")
    return value


class TariffWindow(BaseModel):
    """A price that applies on some days between two local clock times."""

    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: str = Field(examples=["22:00"])
    end: str = Field(examples=["06:00"])
    price: float = Field(ge=0, allow_inf_nan=False)

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        _minutes(value)
        return value

    def covers(self, weekday: int, minute: int) -> bool:
        """Whether the window covers local weekday (0 = Monday) and minute of day."""
        start, end = _minutes(self.start) % (24 * 60), _minutes(self.end)
        today = DAYS[weekday] in self.days
        if start < end:
            return today and start <= minute < end
        # Wraps midnight: the part after midnight belongs to the previous day's window.
        yesterday = DAYS[(weekday - 1) % 7] in self.days
        return (today and minute >= start) or (yesterday and minute < end)


class TariffSchedule(BaseModel):
    """A zone's time-of-use tariff: time zone, default price and priced windows."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(examples=["Europe/Madrid"])
    currency: str = "EUR"
    default_price: float = Field(ge=0, allow_inf_nan=False)
    windows: list[TariffWindow] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {value!r}") from error
        return value

    def price_at(self, moment: datetime) -> float:
        """Price per kWh in force at `moment` (naive means UTC)."""
        local = to_utc(moment).astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        for window in self.windows:
            if window.covers(local.weekday(), minute):
                return window.price
        return self.default_price


def prices_for_slots(schedule: TariffSchedule, slot_starts: Sequence[datetime]) -> np.ndarray:
    """Price per kWh for each slot, read at the slot's start in the zone's local time."""
    zone = ZoneInfo(schedule.timezone)
    # Local (weekday, minute) pairs repeat every week, so each is resolved once.
    cache: dict[tuple[int, int], float] = {}
    prices = np.empty(len(slot_starts), dtype=np.float64)
    for index, moment in enumerate(slot_starts):
        local = to_utc(moment).astimezone(zone)
        key = (local.weekday(), local.hour * 60 + local.minute)
        price = cache.get(key)
        if price is None:
            price = schedule.default_price
            for window in schedule.windows:
                if window.covers(*key):
                    price = window.price
                    break
            cache[key] = price
        prices[index] = price
    return prices


def spain_2_0td_example() -> TariffSchedule:
    """An example for zone ES shaped like Spain's 2.0TD periods; the prices are illustrative.

    Valle (cheapest): 00-08 on weekdays and all weekend; punta (dearest): 10-14 and 18-22 on
    weekdays; llano: the rest. National holidays (also valle) are not modelled.
    """
    return TariffSchedule(
        timezone="Europe/Madrid",
        currency="EUR",
        default_price=0.16,  # llano
        windows=[
            TariffWindow(days=list(WEEKEND), start="00:00", end="00:00", price=0.10),
            TariffWindow(days=list(WEEKDAYS), start="00:00", end="08:00", price=0.10),
            TariffWindow(days=list(WEEKDAYS), start="10:00", end="14:00", price=0.24),
            TariffWindow(days=list(WEEKDAYS), start="18:00", end="22:00", price=0.24),
        ],
    )


DEFAULT_TARIFFS: dict[str, TariffSchedule] = {"ES": spain_2_0td_example()}
