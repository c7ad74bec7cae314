"""Electricity Maps v3 client against recorded responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from support.carbon_fakes import FakeApi, json_reply, recorded

from scheduler.carbon.providers import (
    ProviderAuthError,
    ProviderDataError,
    ProviderError,
    ProviderPlanLimit,
    ProviderUnavailable,
    make_provider,
)

NOW = datetime(2024, 1, 15, 0, 10, tzinfo=UTC)
LATEST = "/v3/carbon-intensity/latest"
HISTORY = "/v3/carbon-intensity/history"
FORECAST = "/v3/carbon-intensity/forecast"
PAST_RANGE = "/v3/carbon-intensity/past-range"


def provider(
    api: FakeApi, sleeps: list[float], token: str | None = "secret-token", plan: str = "paid"
):
    return make_provider(
        "electricitymaps",
        token=token,
        plan=plan,
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
    # /latest is on every plan: a 401 there is a bad token.
    api.on(LATEST, json_reply("electricitymaps_401.json", status=401))
    with pytest.raises(ProviderAuthError) as caught:
        provider(api, sleeps).current("DE")
    assert not isinstance(caught.value, ProviderPlanLimit)
    assert str(caught.value) == (
        "electricitymaps: token rejected on /carbon-intensity/latest "
        "(HTTP 401: Invalid auth-token); check GREENWINDOW_CARBON_TOKEN"
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
        plan="paid",
        clock=lambda: NOW + timedelta(days=3),
        transport=api.transport,
        sleep=sleeps.append,
    )
    with pytest.raises(ProviderDataError, match="before now"):
        late.forecast("DE")


# -- plans, request parameters, labels and zones ---------------------------------------


def day_of_history(request: httpx.Request) -> httpx.Response:
    """A free token's /history: the 24 hours before NOW, a daily cycle, one estimate."""
    first = datetime(2024, 1, 14, 0, tzinfo=UTC)
    items = [
        {
            "zone": "DE",
            "carbonIntensity": 300 + 50 * ((hour % 24) >= 12),
            "datetime": (first + timedelta(hours=hour)).isoformat().replace("+00:00", "Z"),
            "isEstimated": hour == 23,
            "estimationMethod": "TIME_SLICER_AVERAGE" if hour == 23 else None,
        }
        for hour in range(24)
    ]
    return httpx.Response(200, json={"zone": "DE", "history": items})


def free_token_api(api: FakeApi) -> FakeApi:
    """What a free token gets: /latest and /history; every other path the real 401 body."""
    refused = json_reply("electricitymaps_401.json", status=401)
    return (
        api.on(LATEST, json_reply("electricitymaps_latest.json"))
        .on(HISTORY, day_of_history)
        .on(FORECAST, refused)
        .on(PAST_RANGE, refused)
    )


def test_history_from_a_day_before_the_callers_clock_uses_history(
    api: FakeApi, sleeps: list[float]
) -> None:
    # The service computes "now - 1 day" a moment before the provider reads its clock.
    api.on(HISTORY, json_reply("electricitymaps_history.json"))
    source = provider(api, sleeps)
    series = source.history("DE", NOW - timedelta(days=1, microseconds=5), NOW)
    assert api.paths() == [HISTORY]
    series = source.history("DE", NOW - timedelta(days=1, minutes=30), NOW)
    assert api.paths() == [HISTORY]  # the answer is reused for a few minutes
    assert series.values[0] == 310


def test_free_plan_refresh_makes_no_paid_call(api: FakeApi, sleeps: list[float]) -> None:
    free_token_api(api)
    source = provider(api, sleeps, plan="free")
    forecast = source.forecast("DE", hours=72)
    history = source.history("DE", NOW - timedelta(days=1), NOW)
    assert set(api.paths()) == {HISTORY}
    assert len(forecast) == 72 and forecast.start == datetime(2024, 1, 15, tzinfo=UTC)
    assert forecast.provenance == ("forecast",) * 72
    assert forecast.source == "forecaster:electricitymaps"
    # The daily cycle of the observed day is what the forecaster carries forward.
    assert forecast.values[14] > forecast.values[4]
    assert history.provenance is not None and history.provenance[-1] == "estimated"
    assert history.provenance_detail is not None
    assert history.provenance_detail[-1] == "TIME_SLICER_AVERAGE"
    for request in api.requests:
        assert request.url.params["disableCallerLookup"] == "true"


def test_free_plan_refuses_old_history_without_a_request(api: FakeApi, sleeps: list[float]) -> None:
    free_token_api(api)
    with pytest.raises(ProviderPlanLimit) as caught:
        provider(api, sleeps, plan="free").history(
            "DE", NOW - timedelta(days=5), NOW - timedelta(days=4)
        )
    assert caught.value.endpoint == "carbon-intensity/past-range"
    assert "free plan" in str(caught.value) and "GREENWINDOW_CARBON_TOKEN" not in str(caught.value)
    assert api.requests == []


def test_paid_endpoint_refused_is_a_plan_limit_not_a_bad_token(
    api: FakeApi, sleeps: list[float]
) -> None:
    # A free token configured as paid: the API answers 401 "Invalid auth-token".
    free_token_api(api)
    with pytest.raises(ProviderPlanLimit) as caught:
        provider(api, sleeps, plan="paid").forecast("DE", hours=24)
    message = str(caught.value)
    assert caught.value.endpoint == "carbon-intensity/forecast"
    assert "plan limit" in message and "/carbon-intensity/forecast" in message
    assert "Invalid auth-token" in message and "token rejected" not in message
    assert "GREENWINDOW_CARBON_PLAN=free" in message


@pytest.mark.parametrize(
    ("hours", "sent"), [(3, "6"), (6, "6"), (12, "24"), (48, "48"), (72, "72"), (100, "72")]
)
def test_forecast_asks_for_the_horizon_it_needs(
    api: FakeApi, sleeps: list[float], hours: float, sent: str
) -> None:
    api.on(FORECAST, json_reply("electricitymaps_forecast.json"))
    provider(api, sleeps).forecast("DE", hours=hours)
    assert api.requests[0].url.params["horizonHours"] == sent
    assert api.requests[0].url.params["disableCallerLookup"] == "true"


def test_paid_forecast_is_labelled_forecast(api: FakeApi, sleeps: list[float]) -> None:
    api.on(FORECAST, json_reply("electricitymaps_forecast.json"))
    series = provider(api, sleeps).forecast("DE", hours=4)
    assert series.provenance == ("forecast",) * 4 and series.source == "electricitymaps"


def test_estimates_are_kept_as_provenance(api: FakeApi, sleeps: list[float]) -> None:
    api.on(LATEST, json_reply("electricitymaps_latest.json"))
    api.on(HISTORY, json_reply("electricitymaps_history.json"))
    source = provider(api, sleeps)
    latest = source.latest("DE")
    assert latest.provenance == ("estimated",)
    assert latest.provenance_detail == ("TIME_SLICER_AVERAGE",)
    history = source.history("DE", NOW - timedelta(hours=6), NOW)
    # 20:00 was null (forward-filled), 23:00 is the service's own estimate.
    assert history.provenance == (
        "observed",
        "observed",
        "filled",
        "observed",
        "observed",
        "estimated",
    )
    assert history.provenance_detail == (None,) * 5 + ("TIME_SLICER_AVERAGE",)
    # The labels survive resampling: the hour holding the estimate stays estimated.
    assert history.resample(15).provenance[-4:] == ("estimated",) * 4


def test_another_zones_answer_is_refused(api: FakeApi, sleeps: list[float]) -> None:
    api.on(LATEST, json_reply("electricitymaps_latest_wrong_zone.json"))
    with pytest.raises(ProviderDataError, match="zone DE but the answer is for zone FR"):
        provider(api, sleeps).current("DE")
    assert api.requests[0].url.params["disableCallerLookup"] == "true"
    assert api.requests[0].url.params["shouldUseFallbackCallerLookup"] == "false"


def test_a_point_of_another_zone_is_refused(api: FakeApi, sleeps: list[float]) -> None:
    body = recorded("electricitymaps_history.json")
    body["history"][2]["zone"] = "FR"
    api.on(HISTORY, httpx.Response(200, json=body))
    with pytest.raises(ProviderDataError, match="point of zone FR"):
        provider(api, sleeps).history("DE", NOW - timedelta(hours=6), NOW)


def test_past_range_is_fetched_in_nine_day_chunks(api: FakeApi, sleeps: list[float]) -> None:
    api.on(PAST_RANGE, json_reply("electricitymaps_past_range.json"))
    start = datetime(2023, 12, 1, tzinfo=UTC)
    provider(api, sleeps).history("DE", start, start + timedelta(days=20))
    spans = [(request.url.params["start"], request.url.params["end"]) for request in api.requests]
    assert spans == [
        ("2023-12-01T00:00:00+00:00", "2023-12-10T00:00:00+00:00"),
        ("2023-12-10T00:00:00+00:00", "2023-12-19T00:00:00+00:00"),
        ("2023-12-19T00:00:00+00:00", "2023-12-21T00:00:00+00:00"),
    ]


def test_base_url_setting_is_used(api: FakeApi, sleeps: list[float]) -> None:
    api_at = FakeApi().on(
        "/mirror/v3/carbon-intensity/latest", json_reply("electricitymaps_latest.json")
    )
    source = make_provider(
        "electricitymaps",
        token="t",
        base_url="http://mirror.internal/mirror/v3/",
        clock=lambda: NOW,
        transport=api_at.transport,
        sleep=sleeps.append,
    )
    assert source.current("DE")[1] == 302
    assert str(api_at.requests[0].url).startswith("http://mirror.internal/mirror/v3/")


def test_unknown_plan_is_refused() -> None:
    with pytest.raises(ProviderError, match="plan"):
        make_provider("electricitymaps", token="t", plan="gold")


def test_free_plan_forecaster_learns_from_every_refresh(api: FakeApi, sleeps: list[float]) -> None:
    clock = {"now": NOW}

    def last_day(request: httpx.Request) -> httpx.Response:
        last = clock["now"].replace(minute=0) - timedelta(hours=1)
        items = [
            {
                "zone": "DE",
                "carbonIntensity": 300,
                "datetime": (last - timedelta(hours=h)).isoformat(),
                "isEstimated": False,
            }
            for h in range(24)
        ]
        return httpx.Response(200, json={"zone": "DE", "history": items})

    api.on(HISTORY, last_day)
    source = make_provider(
        "electricitymaps",
        token="t",
        clock=lambda: clock["now"],
        transport=api.transport,
        sleep=sleeps.append,
    )
    source.forecast("DE", hours=6)
    clock["now"] += timedelta(days=1)
    source.forecast("DE", hours=6)
    kept = source._observed["DE"]  # the hours the own forecaster learns from
    assert len(kept) == 48 and kept.provenance == ("observed",) * 48
    # After a gap the old hours are dropped rather than bridged by a long forward-fill.
    clock["now"] += timedelta(days=3)
    source.forecast("DE", hours=6)
    assert len(source._observed["DE"]) == 24
    assert api.paths() == [HISTORY] * 3
