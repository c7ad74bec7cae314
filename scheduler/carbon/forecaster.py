"""A carbon-intensity forecaster built only from past values of the same signal.

It is the fallback when no provider forecast is available (provider down, no cached
forecast, or a trace without one). Method, for a forecast issued at `start` from the
history slots that end at or before `start`:

1. **Seasonal profile.** With at least one week of history, the mean of each slot of the
   week (UTC) over the last `PROFILE_WEEKS` weeks; with at least one day, the mean of each
   slot of the day over the last `PROFILE_DAYS` days. Grids follow the daily solar cycle
   and the weekday/weekend cycle of demand, which is what these profiles capture.
2. **Recent day.** The value one day before the target slot (for lead times beyond a day,
   the most recent day repeated). It tracks the current weather regime better than a
   multi-week mean, but it ages: it is blended with the profile with weight
   `RECENT_DAY_WEIGHT * exp(-lead / RECENT_DAY_DECAY_HOURS)`.
3. **Persistence of the current anomaly.** The gap between the last observed value and what
   steps 1-2 would have said for that slot is added back, decaying with
   `exp(-lead / ANOMALY_DECAY_HOURS)`, so the first hours follow the present level.

With less than a day of history the forecast is the last value (persistence); with none
it is an error. Values are clipped at zero. The function is pure: same inputs, same output.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np

from scheduler.carbon.series import IntensitySeries, as_utc

# Chosen on the four bundled 2022 traces (ES, US-CAL-CISO, NO, BR), 48 h horizons: shorter
# profiles and a slowly fading recent day beat long averages, since weather regimes last days.
PROFILE_WEEKS = 2
PROFILE_DAYS = 7
RECENT_DAY_WEIGHT = 0.8
RECENT_DAY_DECAY_HOURS = 96.0
ANOMALY_DECAY_HOURS = 12.0

_MINUTES_PER_DAY = 24 * 60
_MINUTES_PER_WEEK = 7 * _MINUTES_PER_DAY


def _slot_numbers(start: datetime, step_minutes: int, count: int) -> np.ndarray:
    """Slots since the Unix epoch, so that `% slots_per_period` is a slot-of-day/week key."""
    first = int(start.timestamp()) // 60 // step_minutes
    return first + np.arange(count)


def _profile(
    values: np.ndarray, slots: np.ndarray, period_slots: int, cycles: int
) -> dict[int, float] | None:
    """Mean value per slot of the period over the last `cycles` periods of data."""
    if len(values) < period_slots:
        return None
    keep = slice(max(0, len(values) - cycles * period_slots), None)
    keys = slots[keep] % period_slots
    sums = np.bincount(keys, weights=values[keep], minlength=period_slots)
    counts = np.bincount(keys, minlength=period_slots)
    return {int(k): float(sums[k] / counts[k]) for k in np.nonzero(counts)[0]}


def seasonal_forecast(history: IntensitySeries, start: datetime, hours: float) -> IntensitySeries:
    """Forecast `hours` from `start` using only the history that ends at or before `start`."""
    if hours <= 0:
        raise ValueError("hours must be positive")
    step = history.step_minutes
    # Forecast slots share the history's grid, so that "a day before" is a whole slot count.
    slot = timedelta(minutes=step)
    start = history.start + ((as_utc(start) - history.start) // slot) * slot
    past = history.window(history.start, start)
    if len(past) and past.end > start:
        past = past.window(past.start, past.end - slot)
    if len(past) == 0:
        raise ValueError(f"no history before {start.isoformat()} to forecast from")
    count = math.ceil(hours * 60 / step)
    observed = past.values
    last_value = float(observed[-1])
    past_slots = _slot_numbers(past.start, step, len(past))
    target_slots = _slot_numbers(start, step, count)
    # Lead time counts from the last observation, so a forecast issued long after the
    # history ends leans on the profile rather than on stale recent values.
    lead_hours = (target_slots - past_slots[-1]) * step / 60

    slots_per_day = _MINUTES_PER_DAY // step
    profile = _profile(observed, past_slots, _MINUTES_PER_WEEK // step, PROFILE_WEEKS)
    period = _MINUTES_PER_WEEK // step
    if profile is None:
        profile = _profile(observed, past_slots, slots_per_day, PROFILE_DAYS)
        period = slots_per_day
    if profile is None:
        return _result(history, start, np.full(count, last_value))

    def baseline(slots: np.ndarray, leads: np.ndarray) -> np.ndarray:
        seasonal = np.array([profile[int(s % period)] for s in slots])
        # Days back to the most recent observed copy of each target slot of the day.
        days_back = np.maximum(1, np.ceil((slots - past_slots[-1]) / slots_per_day)).astype(int)
        recent_index = slots - days_back * slots_per_day - past_slots[0]
        recent = observed[np.clip(recent_index, 0, len(observed) - 1)]
        weight = RECENT_DAY_WEIGHT * np.exp(-leads / RECENT_DAY_DECAY_HOURS)
        return weight * recent + (1 - weight) * seasonal

    anomaly = last_value - float(baseline(past_slots[-1:], np.zeros(1))[0])
    forecast = baseline(target_slots, lead_hours)
    forecast = forecast + anomaly * np.exp(-lead_hours / ANOMALY_DECAY_HOURS)
    return _result(history, start, np.clip(forecast, 0.0, None))


def _result(history: IntensitySeries, start: datetime, values: np.ndarray) -> IntensitySeries:
    return IntensitySeries(
        start=start,
        step_minutes=history.step_minutes,
        values=values,
        signal_type=history.signal_type,
        source="forecaster",
    )
