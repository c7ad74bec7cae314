"""The history-only forecaster, checked against naive baselines on a real trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from scheduler.carbon.forecaster import seasonal_forecast
from scheduler.carbon.series import IntensitySeries, read_trace_csv

BUNDLED = Path(__file__).resolve().parents[2] / "scheduler/carbon/data/ES_2022_hourly.csv"
T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def spain() -> IntensitySeries:
    return read_trace_csv(BUNDLED)


def mape(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - actual) / actual))


def test_beats_naive_forecasts_on_a_real_trace(spain: IntensitySeries) -> None:
    horizon = 48
    ours, yesterday, last_value = [], [], []
    # Forecasts issued every 13 h (so the issue hour moves round the clock) for six weeks
    # of spring and six of autumn, each from the full history before the issue time.
    origins = [*range(24 * 90, 24 * 132, 13), *range(24 * 270, 24 * 312, 13)]
    for origin in origins:
        issued = spain.start + timedelta(hours=origin)
        actual = spain.values[origin : origin + horizon]
        forecast = seasonal_forecast(spain, issued, horizon)
        assert forecast.start == issued and len(forecast) == horizon
        ours.append(mape(forecast.values, actual))
        same_as_yesterday = np.resize(spain.values[origin - 24 : origin], horizon)
        yesterday.append(mape(same_as_yesterday, actual))
        last_value.append(mape(np.full(horizon, spain.values[origin - 1]), actual))
    assert np.mean(ours) < 0.95 * np.mean(yesterday)
    assert np.mean(ours) < 0.95 * np.mean(last_value)


def test_uses_only_history_before_start(spain: IntensitySeries) -> None:
    issued = datetime(2022, 6, 10, 7, tzinfo=UTC)
    full = seasonal_forecast(spain, issued, 24)
    truncated = seasonal_forecast(spain.window(spain.start, issued), issued, 24)
    # Scrambling the future must not change anything either.
    future_index = (issued - spain.start) // timedelta(hours=1)
    scrambled_values = spain.values.copy()
    scrambled_values[future_index:] = 1.0
    scrambled = IntensitySeries(start=spain.start, step_minutes=60, values=scrambled_values)
    assert np.array_equal(full.values, truncated.values)
    assert np.array_equal(full.values, seasonal_forecast(scrambled, issued, 24).values)


def test_result_metadata_and_grid(spain: IntensitySeries) -> None:
    forecast = seasonal_forecast(spain, datetime(2022, 6, 10, 7, 40, tzinfo=UTC), 2.5)
    assert forecast.source == "forecaster"
    assert forecast.signal_type == spain.signal_type
    # Starts at the slot holding the issue time, covers at least the requested hours.
    assert forecast.start == datetime(2022, 6, 10, 7, tzinfo=UTC)
    assert len(forecast) == 3
    assert np.all(forecast.values >= 0)


def test_short_history_falls_back_to_the_daily_profile() -> None:
    # Three days of a pure daily cycle: the forecast must repeat that cycle.
    day = 100 + 50 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    history = IntensitySeries(start=T0, step_minutes=60, values=np.tile(day, 3))
    forecast = seasonal_forecast(history, history.end, 48)
    assert np.allclose(forecast.values, np.tile(day, 2))


def test_under_a_day_of_history_repeats_the_last_value() -> None:
    history = IntensitySeries(start=T0, step_minutes=30, values=[100, 120, 140])
    forecast = seasonal_forecast(history, history.end + timedelta(hours=1), 3)
    assert forecast.step_minutes == 30
    assert forecast.start == history.end + timedelta(hours=1)
    assert list(forecast.values) == [140] * 6


def test_no_history_before_start_is_an_error() -> None:
    history = IntensitySeries(start=T0, step_minutes=60, values=[100, 120])
    with pytest.raises(ValueError, match="no history"):
        seasonal_forecast(history, T0, 24)
    with pytest.raises(ValueError, match="positive"):
        seasonal_forecast(history, T0 + timedelta(hours=2), 0)


def test_follows_a_level_shift_in_the_first_hours() -> None:
    # Two flat weeks at 200, then the last six hours at 100: the near term should sit
    # near the new level while the far term drifts back towards the profile.
    values = np.full(24 * 14, 200.0)
    values[-6:] = 100.0
    history = IntensitySeries(start=T0, step_minutes=60, values=values)
    forecast = seasonal_forecast(history, history.end, 48)
    assert forecast.values[0] < 130
    assert forecast.values[0] < forecast.values[-1]


def test_stale_history_leans_on_the_profile() -> None:
    # Two weeks of a daily cycle, then a last day shifted up by 100: issued right away the
    # forecast keeps much of the shift; issued a week later it is mostly back to the cycle.
    day = 100 + 50 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    values = np.tile(day, 15)
    values[-24:] += 100
    history = IntensitySeries(start=T0, step_minutes=60, values=values)
    fresh = seasonal_forecast(history, history.end, 24).values
    stale = seasonal_forecast(history, history.end + timedelta(days=7), 24).values
    assert np.mean(fresh - day) > 60
    assert np.mean(stale - day) < 30
