"""Settings: defaults, URL normalisation and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.settings import SettingsError, load_settings


def test_defaults_put_sqlite_under_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GREENWINDOW_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("GREENWINDOW_DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'd' / 'greenwindow.db'}"
    assert settings.artifact_dir == tmp_path / "d" / "artifacts"
    assert settings.zone == "ES" and settings.carbon_provider == "trace"


def test_plain_postgres_url_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENWINDOW_DATABASE_URL", "postgresql://u@db:5432/gw")
    assert load_settings().database_url == "postgresql+psycopg://u@db:5432/gw"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GREENWINDOW_DATABASE_URL", "mysql://x"),
        ("GREENWINDOW_LEASE_SECONDS", "soon"),
        ("GREENWINDOW_ZONE", "  "),
        ("GREENWINDOW_CARBON_PROVIDER", "astrology"),
    ],
)
def test_invalid_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_secrets_do_not_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENWINDOW_ADMIN_TOKEN", "super-secret-admin")
    assert "super-secret-admin" not in repr(load_settings())
