"""The client commands end to end against the in-process service."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from support.cli_driver import Cli
from support.helpers import admin_headers, bearer, burn_in_job

from scheduler.client import render


def _submit(client: TestClient, key: str, **overrides: object) -> dict[str, object]:
    response = client.post("/v1/jobs", json=burn_in_job(**overrides), headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


def test_submit_from_flags_prints_the_plan(cli: Cli, team_key: str) -> None:
    result = cli(
        "submit",
        "--name",
        "warm-up",
        "--kind",
        "burn-in",
        "--max-delay",
        "600",
        "--set",
        "steps=30",
        "--set",
        "size=64",
    )
    assert result.exit_code == 0, result.output
    first_line = result.stdout.splitlines()[0]
    job_id = first_line.split()[-1]
    job = cli.client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["name"] == "warm-up" and job["config"]["steps"] == 30 and job["config"]["size"] == 64
    # Every figure the user needs to judge the plan is on screen.
    assert job["state_reason"] in result.stdout
    assert "planned window" in result.stdout and "CO2e" in result.stdout
    assert "saving" in result.stdout
    assert job["planned_start"][:10] in result.stdout


def test_submit_from_a_yaml_file_with_flag_overrides(
    cli: Cli, tmp_path: Path, team_key: str
) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "name: from-file\nkind: burn-in\nmax_delay_minutes: 120\nconfig:\n  steps: 10\n"
        "priority: 3\n"
    )
    result = cli("submit", str(job_file), "--priority", "7", "--set", "size=32")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.splitlines()[0].split()[-1]
    job = cli.client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["name"] == "from-file"
    assert job["priority"] == 7
    assert job["config"]["steps"] == 10 and job["config"]["size"] == 32


def test_submit_from_a_json_file_with_an_absolute_deadline(
    cli: Cli, tmp_path: Path, team_key: str
) -> None:
    job_file = tmp_path / "job.json"
    body = burn_in_job(name="json-job", max_delay_minutes=None, deadline="2026-03-02T20:00:00Z")
    job_file.write_text(json.dumps({k: v for k, v in body.items() if v is not None}))
    result = cli("submit", str(job_file))
    assert result.exit_code == 0, result.output
    job_id = result.stdout.splitlines()[0].split()[-1]
    job = cli.client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["deadline"].startswith("2026-03-02T20:00")


def test_jobs_lists_filters_and_pages(cli: Cli, client: TestClient, team_key: str) -> None:
    ids = [str(_submit(client, team_key, name=f"job-{n}")["id"]) for n in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=bearer(team_key))

    listed = cli("jobs")
    assert listed.exit_code == 0, listed.output
    assert all(job_id in listed.stdout for job_id in ids)

    cancelled = cli("jobs", "--state", "cancelled")
    assert ids[0] in cancelled.stdout and ids[1] not in cancelled.stdout

    table_page = cli("jobs", "--limit", "2")
    assert "--all lists every job" in table_page.stderr
    assert "--all" not in cli("jobs", "--limit", "3").stderr

    first_page = cli("jobs", "--limit", "2", "--json")
    assert len(first_page.stdout.splitlines()) == 2
    every_page = cli("jobs", "--limit", "2", "--all", "--json")
    assert sorted(json.loads(line)["id"] for line in every_page.stdout.splitlines()) == sorted(ids)


def test_status_and_cancel(cli: Cli, client: TestClient, team_key: str) -> None:
    job = _submit(client, team_key, name="to-cancel")
    shown = cli("status", str(job["id"]))
    assert shown.exit_code == 0, shown.output
    assert "to-cancel" in shown.stdout and str(job["state"]) in shown.stdout

    cancelled = cli("cancel", str(job["id"]))
    assert cancelled.exit_code == 0, cancelled.output
    assert f"{job['id']} cancelled" in cancelled.stdout
    assert client.get(f"/v1/jobs/{job['id']}", headers=bearer(team_key)).json()["state"] == (
        "cancelled"
    )


def test_watch_polls_until_the_job_ends(cli: Cli, client: TestClient, team_key: str) -> None:
    job = _submit(client, team_key, name="watched")
    polls: list[int] = []

    def cancel_on_second_poll() -> None:
        polls.append(1)
        if len(polls) == 2:
            client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(team_key))

    cli.on_sleep = cancel_on_second_poll
    result = cli("watch", str(job["id"]), "--interval", "0.5")
    # Cancelled is an end, but not a success: scripts can tell from the exit status.
    assert result.exit_code == 1, result.output
    assert len(cli.sleeps) == 2 and set(cli.sleeps) == {0.5}
    assert f"{job['id']} cancelled" in result.stdout
    assert "watched" in result.stdout


def test_budget_shows_figures_and_a_bar(cli: Cli, client: TestClient, team_key: str) -> None:
    response = client.put(
        "/v1/teams/alpha/budget",
        json={"period": "month", "limit_kg_co2e": 100.0},
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text
    job = _submit(client, team_key)

    result = cli("budget", "alpha")
    assert result.exit_code == 0, result.output
    assert "month budget" in result.stdout and "100" in result.stdout
    assert "[" in result.stdout and "% of" in result.stdout

    # Without a TEAM the team of the caller's newest job is used.
    as_json = json.loads(cli("budget", "--json").stdout)
    assert as_json["limit_kg_co2e"] == 100.0
    assert as_json["committed_kg_co2e"] > 0 and job["team"] == "alpha"


def test_key_of_another_team_cannot_read_a_budget(cli: Cli, client: TestClient) -> None:
    other = client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers()).json()
    result = cli("budget", "alpha", env={**cli.env, "GREENWINDOW_API_KEY": other["api_key"]})
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: 404 unknown team 'alpha'"


def test_forecast_sparkline_marks_the_planned_window(
    cli: Cli, client: TestClient, team_key: str
) -> None:
    job = _submit(client, team_key, name="deferred", max_delay_minutes=24 * 60)
    forecast = client.get(
        "/v1/zones/ES/forecast", params={"hours": 48}, headers=bearer(team_key)
    ).json()
    start = render.parse_time(forecast["points"][0]["t"])
    assert start is not None
    expected = render.window_marks(render.planned_intervals(job), start, 48)
    assert "▔" in expected

    # No ZONE: the zone of the caller's newest job.
    result = cli("forecast")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ES carbon intensity, next 48 h ({forecast['source']}")
    assert len(lines[1].split()[0]) == 48 and set(lines[1].split()[0]) <= set(render.SPARK_LEVELS)
    assert lines[2][:48] == expected
    assert "your planned jobs: 1" in lines[2]

    # A job in another zone is not marked on this zone's line.
    _submit(client, team_key, name="elsewhere", zone="DE")
    assert "your planned jobs: 1" in cli("forecast", "ES").stdout


def test_names_with_brackets_are_printed_verbatim(
    cli: Cli, client: TestClient, team_key: str
) -> None:
    # Rich would read these as markup (and fail on the stray closing tag) if it were enabled.
    name = "voice [/oops] [red]take 2"
    job = _submit(client, team_key, name=name)
    for args in (("jobs",), ("status", str(job["id"]))):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert name in result.stdout
    submitted = cli("submit", "--name", name, "--kind", "burn-in")
    assert submitted.exit_code == 0, submitted.output
