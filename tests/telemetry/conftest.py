"""Telemetry tests drive the worker protocol with the fleet helpers of tests/workers and the
in-process CLI of tests/client."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "workers"), str(TESTS / "client")]

import pytest  # noqa: E402
from cli_driver import SERVER, Cli  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture
def cli(client: TestClient, team_key: str, tmp_path: Path) -> Cli:
    """The CLI with GREENWINDOW_SERVER/API_KEY set and no config file in reach."""
    env = {
        "GREENWINDOW_SERVER": SERVER,
        "GREENWINDOW_API_KEY": team_key,
        "GREENWINDOW_CLIENT_CONFIG": str(tmp_path / "absent.toml"),
    }
    return Cli(client, env)
