"""The shared HTTP helper: retry policy, Retry-After, error mapping."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest
from support.carbon_fakes import FakeApi

from scheduler.carbon.providers import (
    ProviderAuthError,
    ProviderDataError,
    ProviderError,
    ProviderUnavailable,
)
from scheduler.carbon.providers.http import HttpClient, RetryPolicy, retry_after_seconds


def client(api: FakeApi, sleeps: list[float], **options: object) -> HttpClient:
    return HttpClient(
        "demo",
        "https://api.example.test/v1/",
        transport=api.transport,
        sleep=sleeps.append,
        rng=random.Random(7),
        **options,  # type: ignore[arg-type]
    )


def test_server_error_then_success(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/v1/thing", httpx.Response(500), httpx.Response(503), httpx.Response(200, json=[1]))
    assert client(api, sleeps).get_json("thing") == [1]
    assert len(api.requests) == 3
    # Exponential: the second pause draws from a range twice as high as the first.
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_429_honours_retry_after(api: FakeApi, sleeps: list[float]) -> None:
    api.on(
        "/v1/thing",
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(200, json={"ok": True}),
    )
    assert client(api, sleeps).get_json("thing") == {"ok": True}
    assert sleeps == [7.0]


def test_retry_after_is_capped(api: FakeApi, sleeps: list[float]) -> None:
    api.on(
        "/v1/thing",
        httpx.Response(429, headers={"Retry-After": "3600"}),
        httpx.Response(200, json={}),
    )
    client(api, sleeps, retry=RetryPolicy(max_delay_s=12.0)).get_json("thing")
    assert sleeps == [12.0]


def test_gives_up_after_the_last_attempt(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/v1/thing", httpx.Response(502))
    with pytest.raises(ProviderUnavailable, match=r"demo: thing unavailable after 3 attempts"):
        client(api, sleeps, retry=RetryPolicy(attempts=3)).get_json("thing")
    assert len(api.requests) == 3 and len(sleeps) == 2


def test_timeouts_and_connect_errors_are_retried(api: FakeApi, sleeps: list[float]) -> None:
    api.on(
        "/v1/thing",
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=5),
    )
    assert client(api, sleeps).get_json("thing") == 5
    api.on("/v1/thing", httpx.ConnectTimeout("slow"))
    with pytest.raises(ProviderUnavailable, match="timed out"):
        client(api, sleeps).get_json("thing")


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_not_retried(api: FakeApi, sleeps: list[float], status: int) -> None:
    api.on("/v1/thing", httpx.Response(status, text="bad zone"))
    with pytest.raises(ProviderError, match=rf"HTTP {status}.*bad zone") as caught:
        client(api, sleeps).get_json("thing")
    assert caught.value.status_code == status
    assert len(api.requests) == 1 and sleeps == []


def test_401_names_the_setting_to_check(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/v1/thing", httpx.Response(401))
    with pytest.raises(ProviderAuthError) as caught:
        client(api, sleeps, auth_hint="check GREENWINDOW_CARBON_TOKEN").get_json("thing")
    assert str(caught.value) == "demo: token rejected (HTTP 401); check GREENWINDOW_CARBON_TOKEN"
    assert len(api.requests) == 1


def test_body_that_is_not_json(api: FakeApi, sleeps: list[float]) -> None:
    api.on("/v1/thing", httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(ProviderDataError, match="not JSON"):
        client(api, sleeps).get_json("thing")


def test_retry_after_forms() -> None:
    now = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("30") == 30
    assert retry_after_seconds("Mon, 15 Jan 2024 12:00:45 GMT", now) == 45
    assert retry_after_seconds("Mon, 15 Jan 2024 11:00:00 GMT", now) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delay = policy.backoff(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling
