"""WattTime v3 client against recorded responses: login, re-login, units, errors."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.carbon_fakes import FakeApi, json_reply, recorded

from scheduler.carbon.providers import (
    ProviderAuthError,
    ProviderDataError,
    ProviderPlanLimit,
    ProviderUnavailable,
    make_provider,
)
from scheduler.carbon.providers.watttime import LBS_PER_MWH_TO_G_PER_KWH

NOW = datetime(2024, 1, 15, 0, 7, tzinfo=UTC)


def provider(api: FakeApi, sleeps: list[float], signal_type: str | None = None, plan: str = "free"):
    return make_provider(
        "watttime",
        username="ada",
        password="pw",
        plan=plan,
        clock=lambda: NOW,
        transport=api.transport,
        sleep=sleeps.append,
        signal_type=signal_type,
    )


def test_conversion_factor() -> None:
    assert 1000 * LBS_PER_MWH_TO_G_PER_KWH == pytest.approx(453.59237)


def test_login_then_forecast_in_grams(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/forecast", json_reply("watttime_forecast.json"))
    source = provider(api, sleeps)
    series = source.forecast("CAISO_NORTH", hours=1)
    assert source.signal_type == "marginal" and series.signal_type == "marginal"
    assert series.step_minutes == 5
    # The slot holding 00:07 is 00:05; the first value there is 1010 lbs/MWh.
    assert series.start == datetime(2024, 1, 15, 0, 5, tzinfo=UTC)
    assert len(series) == 12
    assert series.values[0] == pytest.approx(1010 * 0.45359237)
    login, forecast = api.requests
    expected = "Basic " + base64.b64encode(b"ada:pw").decode()
    assert login.headers["Authorization"] == expected
    assert forecast.headers["Authorization"] == "Bearer eyJhbGciOiJIUzI1NiJ9.fixture-token-1"
    assert forecast.url.params["signal_type"] == "co2_moer"
    assert forecast.url.params["region"] == "CAISO_NORTH"
    assert forecast.url.params["horizon_hours"] == "1"


def test_token_is_reused(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/forecast", json_reply("watttime_forecast.json"))
    source = provider(api, sleeps)
    source.forecast("CAISO_NORTH", 1)
    source.forecast("CAISO_NORTH", 1)
    assert api.paths() == ["/login", "/v3/forecast", "/v3/forecast"]


def test_expired_token_logs_in_again_once(api: FakeApi, sleeps: list[float]) -> None:
    api.on(
        "/login",
        httpx.Response(200, json={"token": "first"}),
        httpx.Response(200, json={"token": "second"}),
    )
    api.on("/v3/forecast", httpx.Response(401), json_reply("watttime_forecast.json"))
    assert len(provider(api, sleeps).forecast("CAISO_NORTH", 1)) == 12
    assert api.paths() == ["/login", "/v3/forecast", "/login", "/v3/forecast"]
    assert api.requests[-1].headers["Authorization"] == "Bearer second"
    assert sleeps == []


def test_still_rejected_after_relogin(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/forecast", httpx.Response(401))
    with pytest.raises(ProviderAuthError, match="after a fresh login"):
        provider(api, sleeps).forecast("CAISO_NORTH", 1)
    assert api.paths().count("/login") == 2


def test_bad_credentials(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", httpx.Response(401))
    with pytest.raises(ProviderAuthError, match="login rejected.*GREENWINDOW_CARBON_PASSWORD"):
        provider(api, sleeps).forecast("CAISO_NORTH", 1)
    with pytest.raises(ProviderAuthError, match="GREENWINDOW_CARBON_USERNAME"):
        make_provider("watttime", username="ada")


def test_unlicensed_region_is_a_plan_limit(api: FakeApi, sleeps: list[float]) -> None:
    # An account set up as paid that lacks the region: WattTime's real 403 body.
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/forecast", json_reply("watttime_403.json", status=403))
    with pytest.raises(ProviderPlanLimit) as caught:
        provider(api, sleeps, plan="paid").forecast("PJM_NJ", 1)
    message = str(caught.value)
    assert caught.value.endpoint == "/v3/forecast" and caught.value.status_code == 403
    assert "plan limit: /v3/forecast for region PJM_NJ / co2_moer" in message
    assert "Invalid scope" in message and "free access to CAISO_NORTH" in message
    assert "token rejected" not in message and "GREENWINDOW_CARBON_PASSWORD" not in message


@pytest.mark.parametrize("call", ["forecast", "history", "current"])
def test_free_plan_outside_caiso_north_sends_nothing(
    api: FakeApi, sleeps: list[float], call: str
) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    source = provider(api, sleeps, plan="free")
    with pytest.raises(ProviderPlanLimit, match="free plan reads CAISO_NORTH only"):
        if call == "forecast":
            source.forecast("PJM_NJ", 24)
        elif call == "history":
            source.history("PJM_NJ", NOW - timedelta(hours=2), NOW)
        else:
            source.current("PJM_NJ")
    assert api.requests == []


def test_free_plan_has_no_average_signal() -> None:
    with pytest.raises(ProviderPlanLimit, match="free plan serves co2_moer"):
        make_provider("watttime", username="ada", password="pw", signal_type="average")


def test_average_forecast_never_asks_for_a_co2_aoer_forecast(
    api: FakeApi, sleeps: list[float]
) -> None:
    def two_days(request: httpx.Request) -> httpx.Response:
        start = datetime.fromisoformat(request.url.params["start"])
        first = max(start, NOW - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        points = [
            {
                "point_time": (first + timedelta(minutes=5 * i)).isoformat(),
                "value": 800 + 200 * ((first + timedelta(minutes=5 * i)).hour >= 12),
            }
            for i in range(int((NOW - first) / timedelta(minutes=5)))
        ]
        meta = {"units": "lbs_co2_per_mwh", "data_point_period_seconds": 300}
        return httpx.Response(200, json={"data": points, "meta": meta})

    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/historical", two_days)
    api.on("/v3/forecast", httpx.Response(400, json={"error": "co2_aoer has no forecast"}))
    series = provider(api, sleeps, signal_type="average", plan="paid").forecast("CAISO_NORTH", 24)
    assert "/v3/forecast" not in api.paths()
    assert all(r.url.params["signal_type"] == "co2_aoer" for r in api.requests[1:])
    assert series.signal_type == "average" and series.source == "forecaster:watttime"
    assert series.provenance == ("forecast",) * len(series)
    assert len(series) == 24 * 12 and series.start == datetime(2024, 1, 15, 0, 5, tzinfo=UTC)


def test_labels_of_history_and_forecast(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/historical", json_reply("watttime_historical.json"))
    api.on("/v3/forecast", json_reply("watttime_forecast.json"))
    source = provider(api, sleeps)
    start = datetime(2024, 1, 14, 23, tzinfo=UTC)
    history = source.history("CAISO_NORTH", start, start + timedelta(hours=1))
    assert history.provenance is not None
    assert history.provenance[3] == "filled" and history.provenance.count("observed") == 11
    assert set(source.forecast("CAISO_NORTH", 1).provenance or ()) == {"forecast"}


def test_average_history_with_a_null_point(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/historical", json_reply("watttime_historical.json"))
    source = provider(api, sleeps, signal_type="average", plan="paid")
    start = datetime(2024, 1, 14, 23, tzinfo=UTC)
    series = source.history("CAISO_NORTH", start, start + timedelta(hours=1))
    assert series.signal_type == "average" and len(series) == 12
    assert series.values[3] == pytest.approx(910 * 0.45359237)  # 23:15 null, filled
    params = api.requests[-1].url.params
    assert params["signal_type"] == "co2_aoer"
    assert params["start"] == "2024-01-14T23:00:00+00:00"


def test_long_history_is_split_into_requests(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/historical", json_reply("watttime_historical.json"))
    start = datetime(2023, 11, 1, tzinfo=UTC)
    provider(api, sleeps).history("CAISO_NORTH", start, start + timedelta(days=75))
    spans = [
        (request.url.params["start"], request.url.params["end"])
        for request in api.requests
        if request.url.path == "/v3/historical"
    ]
    assert len(spans) == 3
    assert spans[0][1] == spans[1][0] and spans[-1][1] == "2024-01-15T00:00:00+00:00"


def test_current_is_the_latest_historical_point(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/historical", json_reply("watttime_historical.json"))
    moment, value = provider(api, sleeps).current("CAISO_NORTH")
    assert moment == datetime(2024, 1, 14, 23, 55, tzinfo=UTC)
    assert value == pytest.approx(955 * 0.45359237)


def test_outage_then_recovery(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", httpx.ConnectError("down"), json_reply("watttime_login.json"))
    api.on("/v3/forecast", httpx.Response(503), json_reply("watttime_forecast.json"))
    assert len(provider(api, sleeps).forecast("CAISO_NORTH", 1)) == 12
    assert len(sleeps) == 2
    api.on("/v3/forecast", httpx.Response(503))
    with pytest.raises(ProviderUnavailable):
        provider(api, sleeps).forecast("CAISO_NORTH", 1)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body: body.pop("data"),
        lambda body: body["data"][0].pop("point_time"),
        lambda body: body["data"][0].update(value="lots"),
        lambda body: body["meta"].update(units="g_co2_per_kwh"),
        lambda body: body.update(data={"point_time": "x"}),
    ],
)
def test_malformed_forecast(
    api: FakeApi, sleeps: list[float], mutate: Callable[[dict[str, Any]], object]
) -> None:
    body = recorded("watttime_forecast.json")
    mutate(body)
    api.on("/login", json_reply("watttime_login.json"))
    api.on("/v3/forecast", httpx.Response(200, json=body))
    with pytest.raises(ProviderDataError, match="watttime"):
        provider(api, sleeps).forecast("CAISO_NORTH", 1)


def test_login_without_token(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/login", httpx.Response(200, json={"message": "ok"}))
    with pytest.raises(ProviderDataError, match="'token'"):
        provider(api, sleeps).forecast("CAISO_NORTH", 1)
