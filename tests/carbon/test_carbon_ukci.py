"""GB Carbon Intensity API client: envelope shapes, zones, recorded responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from support.carbon_fakes import FakeApi, json_reply, recorded

from scheduler.carbon.providers import ProviderDataError, ProviderError, make_provider
from scheduler.carbon.providers.ukci import Area, parse_zone, periods

NOW = datetime(2024, 1, 15, 0, 12, tzinfo=UTC)
LONDON = [266.0, 250.0, 240.0, 235.0]


def provider(api: FakeApi, sleeps: list[float]):
    return make_provider("ukci", clock=lambda: NOW, transport=api.transport, sleep=sleeps.append)


def values(pairs: list[tuple[datetime, object]]) -> list[tuple[datetime, float]]:
    return [(start, intensity["forecast"]) for start, intensity in pairs]  # type: ignore[index]


def test_regional_shapes_normalise_to_the_same_periods() -> None:
    one_region = values(periods(recorded("ukci_regional_range_regionid.json")))
    all_regions = values(periods(recorded("ukci_regional_all_range.json"), region_id=13))
    now_only = values(periods(recorded("ukci_regional_now_regionid.json")))
    assert [value for _, value in one_region] == LONDON
    assert one_region == all_regions
    assert now_only == one_region[:1]
    assert one_region[1][0] == datetime(2024, 1, 15, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "area"),
    [
        ("GB", Area("national")),
        ("gb", Area("national")),
        ("13", Area("regionid", "13")),
        ("region:7", Area("regionid", "7")),
        ("RG10", Area("postcode", "RG10")),
        ("postcode:sw1", Area("postcode", "SW1")),
    ],
)
def test_zone_forms(zone: str, area: Area) -> None:
    assert parse_zone(zone) == area


@pytest.mark.parametrize("zone", ["DE", "99", "region:x", "postcode:RG10 1AA"])
def test_unknown_zones(zone: str) -> None:
    with pytest.raises(ProviderError, match="not GB"):
        parse_zone(zone)


def test_national_forecast(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity/2024-01-15T00:00Z/fw48h", json_reply("ukci_national_fw48h.json"))
    series = provider(api, sleeps).forecast("GB", hours=48)
    assert series.step_minutes == 30 and len(series) == 96
    assert series.start == datetime(2024, 1, 15, tzinfo=UTC)
    # The first period has an actual (153) but a forecast asks for forecasts.
    assert series.values[0] == 150 and series.values[47] == 150 + 58
    assert series.source == "ukci" and series.signal_type == "average"


def test_short_forecast_uses_fw24h(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity/2024-01-15T00:00Z/fw24h", json_reply("ukci_national_fw48h.json"))
    assert len(provider(api, sleeps).forecast("GB", hours=3)) == 6


def test_regional_forecast_by_region_and_postcode(api: FakeApi, sleeps: list[float]) -> None:
    api.on(
        "/regional/intensity/2024-01-15T00:00Z/fw48h/regionid/13",
        json_reply("ukci_regional_range_regionid.json"),
    )
    api.on(
        "/regional/intensity/2024-01-15T00:00Z/fw48h/postcode/RG10",
        json_reply("ukci_regional_range_regionid.json"),
    )
    source = provider(api, sleeps)
    assert list(source.forecast("13").values) == LONDON
    assert list(source.forecast("RG10").values) == LONDON


def test_current_prefers_the_measured_value(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity", json_reply("ukci_national_now.json"))
    api.on("/regional/regionid/13", json_reply("ukci_regional_now_regionid.json"))
    source = provider(api, sleeps)
    assert source.current("GB") == (datetime(2024, 1, 15, tzinfo=UTC), 172.0)
    assert source.current("region:13") == (datetime(2024, 1, 15, tzinfo=UTC), 266.0)


def test_history_tolerates_null_actuals(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity/2024-01-15T00:00Z/2024-01-15T02:00Z", json_reply("ukci_national_fw48h.json"))
    start = datetime(2024, 1, 15, tzinfo=UTC)
    series = provider(api, sleeps).history("GB", start, start + timedelta(hours=2))
    # The first half hour has an actual (153); later ones only forecasts.
    assert list(series.values) == [153, 151, 152, 153]


def test_long_history_is_split_into_13_day_requests(api: FakeApi, sleeps: list[float]) -> None:
    # The API caps a range at 14 days; chunks stay a day below that limit.
    api.on(
        "/regional/intensity/2024-01-01T00:00Z/2024-01-14T00:00Z/regionid/13",
        json_reply("ukci_regional_range_regionid.json"),
    )
    api.on(
        "/regional/intensity/2024-01-14T00:00Z/2024-01-15T02:00Z/regionid/13",
        json_reply("ukci_regional_range_regionid.json"),
    )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    series = provider(api, sleeps).history("13", start, start + timedelta(days=14, hours=2))
    assert len(api.requests) == 2
    assert list(series.values) == LONDON
    # Regional values are forecasts only: labelled so.
    assert series.provenance == ("forecast",) * 4


@pytest.mark.parametrize("zone", ["18", "region:18", "0"])
def test_only_documented_region_ids(zone: str) -> None:
    with pytest.raises(ProviderError, match="region id 1-17"):
        parse_zone(zone)
    assert parse_zone("17") == Area("regionid", "17")


def test_forecast_filled_history_is_labelled_forecast(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity/2024-01-15T00:00Z/2024-01-15T02:00Z", json_reply("ukci_national_fw48h.json"))
    start = datetime(2024, 1, 15, tzinfo=UTC)
    series = provider(api, sleeps).history("GB", start, start + timedelta(hours=2))
    assert series.provenance == ("observed", "forecast", "forecast", "forecast")


def test_intensity_is_the_last_completed_half_hour(api: FakeApi, sleeps: list[float]) -> None:
    # At 00:42 the API still reports 00:00-00:30 (the last completed half hour); greenwindow
    # keeps that period's start rather than relabelling it as the clock's half hour.
    api.on("/intensity", json_reply("ukci_national_now.json"))
    late = make_provider(
        "ukci",
        clock=lambda: datetime(2024, 1, 15, 0, 42, tzinfo=UTC),
        transport=api.transport,
        sleep=sleeps.append,
    )
    latest = late.latest("GB")
    assert late.current("GB") == (datetime(2024, 1, 15, tzinfo=UTC), 172.0)
    assert latest.provenance == ("observed",) and latest.end == datetime(
        2024, 1, 15, 0, 30, tzinfo=UTC
    )


def test_latest_without_an_actual_is_a_forecast(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/regional/regionid/13", json_reply("ukci_regional_now_regionid.json"))
    assert provider(api, sleeps).latest("13").provenance == ("forecast",)


def test_forecast_is_labelled_forecast(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity/2024-01-15T00:00Z/fw24h", json_reply("ukci_national_fw48h.json"))
    series = provider(api, sleeps).forecast("GB", hours=3)
    assert series.provenance == ("forecast",) * 6


def test_server_error_then_success(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity", httpx.Response(502), json_reply("ukci_national_now.json"))
    assert provider(api, sleeps).current("GB")[1] == 172
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"from": "2024-01-15T00:00Z", "to": "2024-01-15T00:30Z"}]},
        {"data": [{"from": "2024-01-15T00:00Z", "intensity": {"actual": None}}]},
        {"data": {"regionid": 13}},
        {"error": {"code": "400 Bad Request", "message": "Please enter a valid date"}},
    ],
)
def test_malformed(api: FakeApi, sleeps: list[float], body: object) -> None:
    api.on("/intensity", httpx.Response(200, json=body))
    with pytest.raises(ProviderDataError, match="ukci"):
        provider(api, sleeps).current("GB")


def test_refusal_quotes_the_apis_own_message(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/intensity", json_reply("ukci_400.json", status=400))
    with pytest.raises(ProviderError) as caught:
        provider(api, sleeps).current("GB")
    assert str(caught.value) == (
        "ukci: /intensity was refused (HTTP 400): Please enter a valid date"
    )
    assert sleeps == []  # a 400 is not retried
