"""Fixtures that run the `greenwindow` CLI in-process against the test app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.cli_driver import SERVER, Cli


@pytest.fixture
def cli(client: TestClient, team_key: str, tmp_path: Path) -> Cli:
    """The CLI with GREENWINDOW_SERVER/API_KEY set and no config file in reach."""
    env = {
        "GREENWINDOW_SERVER": SERVER,
        "GREENWINDOW_API_KEY": team_key,
        "GREENWINDOW_CLIENT_CONFIG": str(tmp_path / "absent.toml"),
    }
    return Cli(client, env)
