"""Electricity Maps v3 client against recorded responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from carbon_fakes import FakeApi, json_reply, recorded

from scheduler.carbon.providers import (
    ProviderAuthError,
    ProviderDataError,
    ProviderUnavailable,
    make_provider,
)

NOW = datetime(2024, 1, 15, 0, 10, tzinfo=UTC)
LATEST = "/v3/carbon-intensity/latest"
HISTORY = "/v3/carbon-intensity/history"
FORECAST = "/v3/carbon-intensity/forecast"
PAST_RANGE = "/v3/carbon-intensity/past-range"


def provider(api: FakeApi, sleeps: list[float], token: str | None = "secret-token"):
    return make_provider(
        "electricitymaps",
        token=token,
        clock=lambda: NOW,
        transport=api.transport,
        sleep=sleeps.append,
    )


def test_current_sends_token_and_zone(api: FakeApi, sleeps: list[float]) -> None:
    api.on(LATEST, json_reply("electricitymaps_latest.json"))
    assert provider(api, sleeps).current("DE") == (datetime(2024, 1, 15, tzinfo=UTC), 302.0)
    request = api.requests[0]
    assert request.headers["auth-token"] == "secret-token"
    assert request.url.params["zone"] == "DE"
    assert str(request.url).startswith("https://api.electricitymap.org/v3/")


def test_recent_history_fills_a_null_reading(api: FakeApi, sleeps: list[float]) -> None:
    api.on(HISTORY, json_reply("electricitymaps_history.json"))
    series = provider(api, sleeps).history("DE", NOW - timedelta(hours=6), NOW)
    assert series.start == datetime(2024, 1, 14, 18, tzinfo=UTC)
    # 20:00 is null in the response: it carries 19:00's value forward.
    assert list(series.values) == [310, 305, 305, 298, 290, 285]
    assert series.source == "electricitymaps" and series.signal_type == "average"


def test_older_history_uses_past_range(api: FakeApi, sleeps: list[float]) -> None:
    api.on(PAST_RANGE, json_reply("electricitymaps_past_range.json"))
    start = datetime(2023, 12, 1, tzinfo=UTC)
    series = provider(api, sleeps).history("DE", start, start + timedelta(hours=3))
    assert list(series.values) == [400, 410, 405]
    assert api.requests[0].url.params["start"] == "2023-12-01T00:00:00+00:00"
    assert api.requests[0].url.params["end"] == "2023-12-01T03:00:00+00:00"


def test_forecast_is_cut_to_the_horizon(api: FakeApi, sleeps: list[float]) -> None:
    api.on(FORECAST, json_reply("electricitymaps_forecast.json"))
    series = provider(api, sleeps).forecast("DE", hours=5)
    assert series.start == datetime(2024, 1, 15, tzinfo=UTC) and series.step_minutes == 60
    assert list(series.values) == [326, 320, 311, 300, 290]


def test_missing_token_fails_at_construction() -> None:
    with pytest.raises(ProviderAuthError, match="GREENWINDOW_CARBON_TOKEN"):
        make_provider("electricitymaps", token=None)


def test_rejected_token(api: FakeApi, sleeps: list[float]) -> None:
    api.on(LATEST, json_reply("electricitymaps_401.json", status=401))
    with pytest.raises(ProviderAuthError) as caught:
        provider(api, sleeps).current("DE")
    assert str(caught.value) == (
        "electricitymaps: token rejected (HTTP 401); check GREENWINDOW_CARBON_TOKEN"
    )
    assert len(api.requests) == 1


def test_rate_limit_then_success(api: FakeApi, sleeps: list[float]) -> None:
    api.on(
        FORECAST,
        httpx.Response(429, headers={"Retry-After": "2"}),
        json_reply("electricitymaps_forecast.json"),
    )
    assert len(provider(api, sleeps).forecast("DE", hours=3)) == 3
    assert sleeps == [2.0]


def test_server_error_then_success(api: FakeApi, sleeps: list[float]) -> None:
    api.on(LATEST, httpx.Response(500), json_reply("electricitymaps_latest.json"))
    assert provider(api, sleeps).current("DE")[1] == 302
    assert len(sleeps) == 1


def test_timeout_everywhere_is_unavailable(api: FakeApi, sleeps: list[float]) -> None:
    api.on(LATEST, httpx.ReadTimeout("no answer"))
    with pytest.raises(ProviderUnavailable, match="electricitymaps.*timed out"):
        provider(api, sleeps).current("DE")


@pytest.mark.parametrize(
    "body",
    [
        {"zone": "DE", "datetime": "2024-01-15T00:00:00Z"},  # no carbonIntensity
        {"zone": "DE", "carbonIntensity": "high", "datetime": "2024-01-15T00:00:00Z"},
        {"zone": "DE", "carbonIntensity": 302, "datetime": "yesterday"},
        {"zone": "DE", "carbonIntensity": None, "datetime": "2024-01-15T00:00:00Z"},
        [1, 2, 3],
    ],
)
def test_malformed_latest(api: FakeApi, sleeps: list[float], body: object) -> None:
    api.on(LATEST, httpx.Response(200, json=body))
    with pytest.raises(ProviderDataError, match="electricitymaps"):
        provider(api, sleeps).current("DE")


def test_malformed_forecast(api: FakeApi, sleeps: list[float]) -> None:
    body = recorded("electricitymaps_forecast.json")
    api.on(FORECAST, httpx.Response(200, json={"zone": "DE", "prediction": body["forecast"]}))
    with pytest.raises(ProviderDataError, match="'forecast'"):
        provider(api, sleeps).forecast("DE")
    api.on(FORECAST, httpx.Response(200, content=b'{"zone": "DE", "forecast": ['))
    with pytest.raises(ProviderDataError, match="not JSON"):
        provider(api, sleeps).forecast("DE")


def test_stale_forecast_is_rejected(api: FakeApi, sleeps: list[float]) -> None:
    api.on(FORECAST, json_reply("electricitymaps_forecast.json"))
    late = make_provider(
        "electricitymaps",
        token="t",
        clock=lambda: NOW + timedelta(days=3),
        transport=api.transport,
        sleep=sleeps.append,
    )
    with pytest.raises(ProviderDataError, match="before now"):
        late.forecast("DE")
