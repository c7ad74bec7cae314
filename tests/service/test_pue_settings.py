"""PUE settings: per zone, default 1.0, bad values named."""

from __future__ import annotations

import pytest

from scheduler.settings import SettingsError, load_settings


def test_pue_defaults_to_one_and_is_set_per_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().pue("ES") == 1.0
    monkeypatch.setenv("GREENWINDOW_PUE_BY_ZONE", '{"ES": 1.2}')
    monkeypatch.setenv("GREENWINDOW_DEFAULT_PUE", "1.1")
    settings = load_settings()
    assert settings.pue("ES") == 1.2 and settings.pue("DE") == 1.1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GREENWINDOW_PUE_BY_ZONE", '{"ES": 0.5}'),
        ("GREENWINDOW_PUE_BY_ZONE", "not json"),
        ("GREENWINDOW_DEFAULT_PUE", "0.9"),
        ("GREENWINDOW_RESTATEMENT_DAYS", "-1"),
    ],
)
def test_bad_pue_or_restatement_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()
