"""`watch` and `energy` on a job that a worker runs through the real worker protocol."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from support.cli_driver import Cli
from support.helpers import FakeClock, bearer, burn_in_job
from support.worker_driver import ProtocolWorker, attempt_report


def _run_soon(client: TestClient, key: str) -> str:
    # One minute of slack leaves the planner no choice: the job is ready at once.
    response = client.post(
        "/v1/jobs", json=burn_in_job(name="watched", max_delay_minutes=1), headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "ready"
    return str(response.json()["id"])


def _script_worker(cli: Cli, client: TestClient, clock: FakeClock, job_id: str) -> None:
    """Between the CLI's polls: claim, report progress twice, then complete."""
    worker = ProtocolWorker(client)
    started = clock.now
    steps = iter(
        [
            lambda: worker.claim(),
            lambda: worker.call(
                job_id,
                "heartbeat",
                progress={"stage": "burn-in", "step": 20, "total_steps": 50, "loss": 1.25},
                energy={"kwh_so_far": 0.002, "watts": 150.0},
            ),
            lambda: worker.call(
                job_id,
                "heartbeat",
                progress={"stage": "burn-in", "step": 50, "total_steps": 50, "loss": 0.5},
                energy={"kwh_so_far": 0.004, "watts": 150.0},
            ),
            lambda: worker.call(
                job_id, "complete", energy=attempt_report(1, started, 96.0, 150.0), result={}
            ),
        ]
    )

    def next_step() -> None:
        clock.advance(seconds=30)
        next(steps)()

    cli.on_sleep = next_step


def test_watch_follows_progress_to_success(
    cli: Cli, client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id = _run_soon(client, team_key)
    _script_worker(cli, client, clock, job_id)
    result = cli("watch", job_id, "--interval", "0")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("watched: ready")
    assert any("step 20/50" in line and "loss 1.25" in line and "running" in line for line in lines)
    assert any("step 50/50" in line and "loss 0.5" in line for line in lines)
    # Live power, energy and emissions from the heartbeats, while it ran.
    assert any(
        "step 20/50" in line and "150 W" in line and "0.002 kWh so far" in line and "CO2e" in line
        for line in lines
    ), lines
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["live"] is None  # finished: the figures are in its energy report now
    assert lines[-1].startswith(f"{job_id} succeeded: ")
    assert f"{job['actual_kwh']:.5f}".rstrip("0") in lines[-1]


def test_a_running_job_read_carries_its_live_figures(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id = _run_soon(client, team_key)
    worker = ProtocolWorker(client)
    worker.claim()
    clock.advance(seconds=30)
    worker.call(
        job_id,
        "heartbeat",
        progress={"stage": "burn-in", "step": 20, "total_steps": 50, "loss": 1.25},
        energy={"kwh_so_far": 0.002, "watts": 150.0},
    )
    live = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()["live"]
    assert live["watts"] == 150.0 and live["kwh_so_far"] == pytest.approx(0.002)
    assert live["pue"] == 1.0 and live["g_per_kwh"] > 0
    assert live["kg_co2e_so_far"] == pytest.approx(0.002 * live["g_per_kwh"] / 1000)
    assert live["at"] is not None
    # Lists stay cheap: the figures are only on the single-job read.
    listed = client.get("/v1/jobs", headers=bearer(team_key)).json()["items"][0]
    assert listed["live"] is None


def test_watch_draws_a_live_bar_on_a_terminal(
    cli: Cli, client: TestClient, team_key: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rich treats FORCE_COLOR as a terminal: the redrawn progress bar path runs.
    monkeypatch.setenv("FORCE_COLOR", "1")
    job_id = _run_soon(client, team_key)
    _script_worker(cli, client, clock, job_id)
    result = cli("watch", job_id, "--interval", "0")
    assert result.exit_code == 0, result.output
    assert "50/50" in result.stdout and "succeeded" in result.stdout
    assert "━" in result.stdout


def test_energy_report_table_and_json(
    cli: Cli, client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id = _run_soon(client, team_key)
    _script_worker(cli, client, clock, job_id)
    assert cli("watch", job_id, "--interval", "0").exit_code == 0

    raw = cli("energy", job_id, "--json")
    assert raw.exit_code == 0, raw.output
    report = json.loads(raw.stdout)
    assert report["job_id"] == job_id and report["kwh"]["total"] == pytest.approx(0.004)

    table = cli("energy", job_id)
    assert table.exit_code == 0, table.output
    assert "0.004 kWh" in table.stdout
    assert "cpu" in table.stdout and "(estimated)" in table.stdout
    assert "attempts" in table.stdout and "succeeded" in table.stdout
    # The power timeline stays out of the table.
    assert "timeline" not in table.stdout
