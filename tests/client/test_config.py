"""Where the client finds its server and key: options > environment > config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli_driver import Cli

from scheduler.client.config import (
    DEFAULT_SERVER,
    ClientConfigError,
    default_config_path,
    resolve_config,
)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "client.toml"
    path.write_text(
        'server = "http://from-file:8000/"\napi_key = "file-key"\nteam = "alpha"\nzone = "DE"\n'
    )
    return path


def test_file_alone(config_file: Path) -> None:
    config = resolve_config(env={"GREENWINDOW_CLIENT_CONFIG": str(config_file)})
    assert config.server == "http://from-file:8000"
    assert (config.api_key, config.team, config.zone) == ("file-key", "alpha", "DE")


def test_environment_beats_file(config_file: Path) -> None:
    env = {
        "GREENWINDOW_CLIENT_CONFIG": str(config_file),
        "GREENWINDOW_SERVER": "http://from-env",
        "GREENWINDOW_API_KEY": "env-key",
    }
    config = resolve_config(env=env)
    assert (config.server, config.api_key, config.team) == ("http://from-env", "env-key", "alpha")


def test_options_beat_environment(config_file: Path) -> None:
    env = {
        "GREENWINDOW_CLIENT_CONFIG": str(config_file),
        "GREENWINDOW_SERVER": "http://from-env",
        "GREENWINDOW_API_KEY": "env-key",
    }
    config = resolve_config(server="http://from-option", api_key="option-key", env=env)
    assert (config.server, config.api_key) == ("http://from-option", "option-key")


def test_defaults_without_anything(tmp_path: Path) -> None:
    config = resolve_config(env={"GREENWINDOW_CLIENT_CONFIG": str(tmp_path / "none.toml")})
    assert config.server == DEFAULT_SERVER and config.api_key is None


def test_default_path_follows_xdg(tmp_path: Path) -> None:
    assert default_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "greenwindow" / "client.toml"
    )
    assert default_config_path({}).parts[-3:] == (".config", "greenwindow", "client.toml")


def test_client_table_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    path.write_text('[client]\nserver = "http://tabled"\nkey = "k2"\n')
    config = resolve_config(env={"GREENWINDOW_CLIENT_CONFIG": str(path)})
    assert (config.server, config.api_key) == ("http://tabled", "k2")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    path.write_text("server = \n")
    with pytest.raises(ClientConfigError, match=str(path)):
        resolve_config(env={"GREENWINDOW_CLIENT_CONFIG": str(path)})


def test_key_is_not_in_the_repr() -> None:
    config = resolve_config(api_key="secret-key-123", env={"GREENWINDOW_CLIENT_CONFIG": "/x"})
    assert "secret-key-123" not in repr(config)


def test_cli_uses_the_file_and_the_key_option_wins(cli: Cli, tmp_path: Path, team_key: str) -> None:
    path = tmp_path / "client.toml"
    path.write_text(f'server = "http://testserver"\napi_key = "{team_key}"\n')
    env = {"GREENWINDOW_CLIENT_CONFIG": str(path)}
    assert cli("jobs", env=env).exit_code == 0

    overridden = cli("jobs", "--key", "wrong-key", env=env)
    assert overridden.exit_code == 1
    assert overridden.stderr.strip() == "error: 401 invalid or revoked API key"
