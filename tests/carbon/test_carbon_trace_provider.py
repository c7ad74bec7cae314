"""The trace provider: replaying a recorded year onto today's calendar."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from scheduler.carbon.providers import (
    CarbonProvider,
    ProviderError,
    default_trace_path,
    make_provider,
)
from scheduler.carbon.series import IntensitySeries, read_trace_csv


@pytest.fixture(scope="module")
def spain() -> IntensitySeries:
    return read_trace_csv(default_trace_path())


def at(moment: datetime):
    return make_provider("trace", clock=lambda: moment)


def in_2022(month: int, day: int, hour: int) -> datetime:
    return datetime(2022, month, day, hour, tzinfo=UTC)


def test_default_is_the_bundled_spanish_trace(spain: IntensitySeries) -> None:
    assert default_trace_path().name == "ES_2022_hourly.csv"
    assert spain.source == "trace:ES" and len(spain) == 8760


def test_current_replays_the_same_date_and_hour(spain: IntensitySeries) -> None:
    now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    moment, value = at(now).current("ES")
    assert moment == datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert value == spain.value_at(in_2022(11, 23, 9))


def test_forecast_crosses_the_year_end(spain: IntensitySeries) -> None:
    forecast = at(datetime(2026, 12, 31, 22, 5, tzinfo=UTC)).forecast("ES", hours=4)
    assert forecast.start == datetime(2026, 12, 31, 22, tzinfo=UTC)
    expected = [
        spain.value_at(in_2022(12, 31, 22)),
        spain.value_at(in_2022(12, 31, 23)),
        spain.value_at(in_2022(1, 1, 0)),
        spain.value_at(in_2022(1, 1, 1)),
    ]
    assert list(forecast.values) == expected
    assert forecast.source == "trace:ES"


def test_leap_day_replays_february_28(spain: IntensitySeries) -> None:
    forecast = at(datetime(2028, 2, 28, 23, tzinfo=UTC)).forecast("ES", hours=26)
    values = forecast.values
    assert values[0] == spain.value_at(in_2022(2, 28, 23))
    feb_28 = spain.window(in_2022(2, 28, 0), in_2022(3, 1, 0)).values
    assert np.array_equal(values[1:25], feb_28)  # 29 Feb 2028 00:00-23:00
    assert values[25] == spain.value_at(in_2022(3, 1, 0))


def test_history_stops_at_the_present(spain: IntensitySeries) -> None:
    now = datetime(2026, 6, 10, 12, 40, tzinfo=UTC)
    history = at(now).history("ES", now - timedelta(days=2), now + timedelta(days=2))
    assert history.start == datetime(2026, 6, 8, 12, tzinfo=UTC)
    assert history.end == datetime(2026, 6, 10, 13, tzinfo=UTC)
    assert np.array_equal(
        history.values, spain.window(in_2022(6, 8, 12), in_2022(6, 10, 13)).values
    )


def test_clock_is_injectable() -> None:
    ticks = iter([datetime(2026, 1, 1, 3, tzinfo=UTC), datetime(2026, 7, 1, 14, tzinfo=UTC)])
    source = make_provider("trace", clock=lambda: next(ticks))
    winter, summer = source.current("ES"), source.current("ES")
    assert winter[0].month == 1 and summer[0].month == 7
    assert winter[1] != summer[1]


def test_bundled_trace_is_spain_only() -> None:
    with pytest.raises(ProviderError, match="holds zone ES, not DE"):
        at(datetime(2026, 1, 1, tzinfo=UTC)).current("DE")


def test_directory_of_traces_is_picked_by_zone(tmp_path: Path) -> None:
    shutil.copy(default_trace_path(), tmp_path / "ES_2022_hourly.csv")
    (tmp_path / "FR_2023_hourly.csv").write_text(
        "Time,Carbon Intensity\n2023-01-01 00:00:00,50\n2023-01-01 01:00:00,60\n"
    )
    source = make_provider(
        "trace", trace_path=str(tmp_path), clock=lambda: datetime(2026, 1, 1, 1, tzinfo=UTC)
    )
    assert source.current("ES")[1] == pytest.approx(181.54)
    assert source.forecast("FR", hours=1).source == "trace:FR"
    with pytest.raises(ProviderError, match="no trace for zone 'DE'"):
        source.current("DE")


def test_short_trace_file_loops(tmp_path: Path) -> None:
    path = tmp_path / "lab.csv"
    path.write_text(
        "time,value\n2024-05-01T00:00Z,10\n2024-05-01T01:00Z,20\n2024-05-01T02:00Z,30\n"
    )
    source = make_provider(
        "trace", trace_path=str(path), clock=lambda: datetime(2024, 5, 1, 2, tzinfo=UTC)
    )
    # An explicit file answers for any zone; a three-hour trace repeats every three hours.
    assert list(source.forecast("anywhere", hours=5).values) == [30, 10, 20, 30, 10]


def test_unreadable_trace_is_a_provider_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,value\nnever,1\n")
    with pytest.raises(ProviderError, match=r"bad\.csv:2"):
        make_provider("trace", trace_path=str(path)).current("ES")


def test_every_provider_satisfies_the_interface() -> None:
    providers = [
        make_provider("trace"),
        make_provider("electricitymaps", token="t"),
        make_provider("watttime", username="u", password="p"),
        make_provider("ukci"),
    ]
    for provider in providers:
        assert isinstance(provider, CarbonProvider)
    assert [p.name for p in providers] == ["trace", "electricitymaps", "watttime", "ukci"]
    assert [p.signal_type for p in providers] == ["average", "average", "marginal", "average"]
    with pytest.raises(ProviderError, match="unknown carbon provider"):
        make_provider("carbonapi")


def test_replayed_values_are_labelled_replayed_and_gaps_filled(tmp_path: Path) -> None:
    path = tmp_path / "lab.csv"
    # 02:00 is missing from the hourly recording: the reader fills it, and replay keeps that
    # label.
    path.write_text(
        "time,value\n2024-05-01T00:00Z,10\n2024-05-01T01:00Z,20\n2024-05-01T03:00Z,40\n"
        "2024-05-01T04:00Z,50\n"
    )
    source = make_provider(
        "trace", trace_path=str(path), clock=lambda: datetime(2024, 5, 1, 0, tzinfo=UTC)
    )
    forecast = source.forecast("anywhere", hours=5)
    assert list(forecast.values) == [10, 20, 20, 40, 50]
    assert forecast.provenance == ("replayed", "replayed", "filled", "replayed", "replayed")
    history = source.history(
        "anywhere", datetime(2024, 4, 30, 23, tzinfo=UTC), datetime(2024, 5, 1, 1, tzinfo=UTC)
    )
    assert history.provenance == ("replayed", "replayed")
