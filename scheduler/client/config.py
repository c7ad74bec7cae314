"""Where the client finds its server and key: options, then environment, then a TOML file."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.client.errors import ClientError

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "GREENWINDOW_SERVER"
KEY_ENV = "GREENWINDOW_API_KEY"
TEAM_ENV = "GREENWINDOW_TEAM"
ZONE_ENV = "GREENWINDOW_ZONE"
CONFIG_ENV = "GREENWINDOW_CLIENT_CONFIG"


class ClientConfigError(ClientError):
    """The client configuration file cannot be read; the message names the file."""


@dataclass(frozen=True)
class ClientConfig:
    """The resolved connection settings of one client command."""

    server: str
    api_key: str | None
    team: str | None = None
    zone: str | None = None

    def __repr__(self) -> str:
        # The key never appears in logs or tracebacks.
        shown = "set" if self.api_key else "unset"
        return f"ClientConfig(server={self.server!r}, api_key={shown}, team={self.team!r})"


def default_config_path(env: Mapping[str, str]) -> Path:
    """$GREENWINDOW_CLIENT_CONFIG, else ~/.config/greenwindow/client.toml (XDG aware)."""
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "greenwindow" / "client.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings (empty when it does not exist)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClientConfigError(f"cannot read client config {path}: {exc}") from None
    # A [client] table is accepted too, for files shared with other tools.
    section = data.get("client", data)
    if not isinstance(section, dict):
        raise ClientConfigError(f"cannot read client config {path}: [client] must be a table")
    return section


def _first(*values: object) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def resolve_config(
    *,
    server: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Options win over the environment, which wins over the config file."""
    env = os.environ if env is None else env
    file = read_config_file(default_config_path(env))
    return ClientConfig(
        server=(_first(server, env.get(SERVER_ENV), file.get("server")) or DEFAULT_SERVER).rstrip(
            "/"
        ),
        api_key=_first(api_key, env.get(KEY_ENV), file.get("api_key"), file.get("key")),
        team=_first(env.get(TEAM_ENV), file.get("team")),
        zone=_first(env.get(ZONE_ENV), file.get("zone")),
    )
