"""GREENWINDOW_CARBON_PLAN and GREENWINDOW_CARBON_BASE_URL: defaults, validation, wiring."""

from __future__ import annotations

import pytest

from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.factory import plan_for
from scheduler.carbon.providers.watttime import WattTimeProvider
from scheduler.scheduling.service import Scheduling
from scheduler.settings import SettingsError, load_settings


def test_defaults_are_the_free_plan_and_the_providers_own_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GREENWINDOW_CARBON_PLAN", raising=False)
    monkeypatch.delenv("GREENWINDOW_CARBON_BASE_URL", raising=False)
    settings = load_settings()
    assert settings.carbon_plan == "free" and settings.carbon_base_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GREENWINDOW_CARBON_PLAN", "gold"),
        ("GREENWINDOW_CARBON_PLAN", "electricitymaps=gold"),
        ("GREENWINDOW_CARBON_PLAN", "carbonapi=paid"),
        ("GREENWINDOW_CARBON_BASE_URL", "ftp://mirror"),
        ("GREENWINDOW_CARBON_BASE_URL", "127.0.0.1:8080"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_plan_and_base_url_reach_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENWINDOW_CARBON_PLAN", "Paid")
    monkeypatch.setenv("GREENWINDOW_CARBON_BASE_URL", "http://127.0.0.1:9/em/v3/")
    monkeypatch.setenv("GREENWINDOW_CARBON_PROVIDER", "electricitymaps")
    monkeypatch.setenv("GREENWINDOW_CARBON_TOKEN", "t")
    provider = Scheduling(load_settings(), clock=lambda: None).provider  # type: ignore[arg-type]
    assert isinstance(provider, ElectricityMapsProvider) and provider.plan == "paid"
    assert str(provider._http._client.base_url) == "http://127.0.0.1:9/em/v3/"


def test_free_watttime_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENWINDOW_CARBON_PROVIDER", "watttime")
    monkeypatch.setenv("GREENWINDOW_CARBON_USERNAME", "ada")
    monkeypatch.setenv("GREENWINDOW_CARBON_PASSWORD", "pw")
    monkeypatch.delenv("GREENWINDOW_CARBON_PLAN", raising=False)
    provider = Scheduling(load_settings(), clock=lambda: None).provider  # type: ignore[arg-type]
    assert isinstance(provider, WattTimeProvider) and provider.plan == "free"


def test_plan_per_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENWINDOW_CARBON_PLAN", " ElectricityMaps=paid , watttime=free")
    monkeypatch.setenv("GREENWINDOW_CARBON_PROVIDER", "electricitymaps")
    monkeypatch.setenv("GREENWINDOW_CARBON_TOKEN", "t")
    settings = load_settings()
    assert settings.carbon_plan == "electricitymaps=paid,watttime=free"
    assert plan_for(settings.carbon_plan, "watttime") == "free"
    assert plan_for(settings.carbon_plan, "ukci") == "free"
    provider = Scheduling(settings, clock=lambda: None).provider  # type: ignore[arg-type]
    assert isinstance(provider, ElectricityMapsProvider) and provider.plan == "paid"
