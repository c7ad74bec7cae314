"""The demo on the dates that used to break it: its budget is sized from the plans the service
returns, and reservations count in the period where each job is planned, so it runs to the end
at a month's last hour, on a DST change day and on 29 February. A failure is one plain line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scheduler import cli
from scheduler.demo import nice_ceiling

JOBS = ("narrator-en", "support-bot", "game-npc")


@pytest.mark.slow
@pytest.mark.parametrize(
    "start_at",
    ["2026-11-30T23:07:00+00:00", "2027-03-28T00:30:00+00:00", "2028-02-29T22:40:00+00:00"],
    ids=["month-last-hour", "dst-change-day", "29-february"],
)
def test_demo_runs_to_the_end_on_awkward_dates(tmp_path: Path, start_at: str) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "demo",
            "--exit-when-done",
            "--kind",
            "burn-in",
            "--speedup",
            "3600",
            "--run-speedup",
            "30",
            "--steps",
            "4",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
            "--timeout",
            "200",
            "--start-at",
            start_at,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=260,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"clock starts at {start_at[:10]}" in done.stdout
    reports = done.stdout.split("Energy reports (measured)", 1)[1].split("carbon budget", 1)[0]
    for name in JOBS:
        assert "succeeded" in next(line for line in reports.splitlines() if name in line)


def test_budget_sizes_are_round_numbers_above_the_expectation() -> None:
    assert nice_ceiling(0.00142) == 0.002
    assert nice_ceiling(0.002) == 0.002
    assert nice_ceiling(0.0031) == 0.005
    assert nice_ceiling(7.2) == 10.0
    assert nice_ceiling(0.0) > 0


def test_a_failing_command_prints_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:8765/v1/jobs")
    response = httpx.Response(
        409, json={"detail": "budget exhausted until 2026-12-01T00:00:00Z"}, request=request
    )

    def refused(*_: object, **__: object) -> None:
        response.raise_for_status()

    monkeypatch.setattr("scheduler.demo.run_demo", refused)
    monkeypatch.setattr(sys, "argv", ["greenwindow", "demo", "--exit-when-done"])
    monkeypatch.delenv("GREENWINDOW_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        "error: POST /v1/jobs answered 409: budget exhausted until 2026-12-01T00:00:00Z\n"
    )
