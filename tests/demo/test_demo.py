"""`greenwindow demo` end to end in a subprocess: real service, worker, training, reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOBS = ("narrator-en", "support-bot", "game-npc")


@pytest.mark.slow
def test_demo_runs_three_jobs_and_prints_reports_and_budget(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("GREENWINDOW_ADMIN_TOKEN", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "demo",
            "--exit-when-done",
            "--speedup",
            "3600",
            "--run-speedup",
            "20",
            "--steps",
            "12",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
            "--timeout",
            "240",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "Where the planner put each job" in out
    # The plan table ends where the progress section starts (its header, not any "running").
    plan = out.split("Where the planner put each job", 1)[1].split("running (grid clock", 1)[0]
    for name in JOBS:
        assert name in plan
    # Every job ends succeeded, with a measured, non-zero energy row.
    reports = out.split("Energy reports (measured)", 1)[1].split("carbon budget", 1)[0]
    for name in JOBS:
        row = next(line for line in reports.splitlines() if name in line)
        assert "succeeded" in row
        figures = [float(x) for x in re.findall(r"\b\d+\.\d+\b", row)]
        assert any(value > 0 for value in figures), row
        assert "trace:ES" in row
    budget = out.split("carbon budget this month", 1)[1]
    actual = re.search(r"([\d.]+) (g|kg) CO2e\s*│\s*([\d.]+) (g|kg) CO2e", budget)
    assert actual is not None, budget
    assert float(actual.group(3)) > 0  # actual: the measured jobs were charged
    # The key is never put in the address: the demo says which token to sign in with.
    assert re.search(r"dashboard\s+http://127\.0\.0\.1:\d+/dashboard\s+\(sign in with", out)
    # The demo's data dir holds the database it used, and the worker is gone.
    assert (tmp_path / "demo" / "greenwindow.db").exists()
