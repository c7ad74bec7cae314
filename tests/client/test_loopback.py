"""The CLI against a real uvicorn server on a loopback socket: no in-process transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.helpers import FakeClock, admin_headers
from typer.testing import CliRunner

from scheduler.app import create_app
from scheduler.cli import app as cli_app
from scheduler.client import ClientHooks
from scheduler.serving import serve_in_thread
from scheduler.settings import Settings


@pytest.fixture
def server_url(settings: Settings, clock: FakeClock) -> Iterator[str]:
    with serve_in_thread(create_app(settings, clock=clock, run_ticks=False)) as url:
        yield url


def test_submit_and_list_over_a_socket(server_url: str, tmp_path: Path) -> None:
    created = httpx.post(f"{server_url}/v1/teams", json={"name": "loop"}, headers=admin_headers())
    assert created.status_code == 201, created.text
    config = tmp_path / "client.toml"
    # Server and key from the config file, the normal set-up of a user's machine.
    config.write_text(f'server = "{server_url}"\napi_key = "{created.json()["api_key"]}"\n')
    hooks = ClientHooks(env={"GREENWINDOW_CLIENT_CONFIG": str(config)})
    runner = CliRunner(env={"COLUMNS": "200"})

    submitted = runner.invoke(
        cli_app, ["submit", "--name", "over-tcp", "--kind", "burn-in"], obj=hooks
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.splitlines()[0].split()[-1]

    listed = runner.invoke(cli_app, ["jobs", "--json"], obj=hooks)
    assert listed.exit_code == 0, listed.output
    assert job_id in listed.stdout and "over-tcp" in listed.stdout

    metrics = httpx.get(f"{server_url}/metrics")
    assert metrics.status_code == 200 and "greenwindow_jobs" in metrics.text
