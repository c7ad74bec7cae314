"""Multi-zone backtests: `greenwindow simulate --trace ZONE=FILE ...` and zone choice."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scheduler.carbon.trace_reader import read_trace
from scheduler.cli import app
from scheduler.planning.spatial import simulate_zones
from scheduler.planning.workloads import generate_workload

PLAN_CHECK = Path(__file__).resolve().parents[3] / "shared" / "tools" / "plan_check.py"
START = datetime(2026, 1, 1, tzinfo=UTC)


def _trace(path: Path, level: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["time,carbon_intensity"]
    for hour in range(5 * 24):
        value = level * (1 + 0.3 * np.sin(hour / 24 * 2 * np.pi)) + rng.normal(0, level * 0.05)
        lines.append(f"{START + timedelta(hours=hour):%Y-%m-%dT%H:%M:%SZ},{max(value, 1):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def zones(tmp_path: Path) -> dict[str, Path]:
    return {
        "DIRTY": _trace(tmp_path / "dirty.csv", 400, 1),
        "CLEAN": _trace(tmp_path / "c.csv", 80, 2),
    }


def _workload(capacity: object, first: str = "DIRTY") -> dict:
    workload = generate_workload(START + timedelta(hours=2), 24, busy=True, capacity_gpus=2, seed=3)
    other = "CLEAN" if first == "DIRTY" else "DIRTY"
    for job in workload["jobs"]:
        job["zones"] = [first, other]
    workload["capacity_gpus"] = capacity
    return workload


def test_jobs_move_to_the_cleaner_zone_when_it_has_room(zones: dict[str, Path]) -> None:
    series = {zone: read_trace(path).series for zone, path in zones.items()}
    result = simulate_zones(series, _workload(4))
    assert result["moved_jobs"] > len(result["jobs"]) / 2
    assert result["extra_saving_percent"] > 30
    assert result["total_kg_co2e"] < result["home_zone_kg_co2e"]
    assert result["deadline_misses"] <= result["edf_deadline_misses"]
    # Without GPUs there, nothing can move.
    closed = simulate_zones(series, _workload({"DIRTY": 4, "CLEAN": 0}))
    assert closed["moved_jobs"] == 0 and closed["extra_saving_percent"] == 0
    # Carbon-blind policies keep every job in its first zone.
    assert simulate_zones(series, _workload(4), policy="run-now")["moved_jobs"] == 0


def test_cli_takes_repeated_zone_traces_and_each_zone_passes_plan_check(
    zones: dict[str, Path], tmp_path: Path
) -> None:
    workload = _workload(2)
    workload_path, out = tmp_path / "w.json", tmp_path / "plan.json"
    workload_path.write_text(json.dumps(workload))
    args = ["simulate", "--workload", str(workload_path), "--out", str(out)]
    for zone, path in zones.items():
        args += ["--trace", f"{zone}={path}"]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    plan = json.loads(out.read_text())
    assert {job["zone"] for job in plan["jobs"]} <= {"DIRTY", "CLEAN"}
    assert "extra" in outcome.output and plan["moved_jobs"] > 0
    if not PLAN_CHECK.exists():
        return
    for zone, path in zones.items():
        ids = {job["id"] for job in plan["jobs"] if job["zone"] == zone}
        part = {
            "capacity_gpus": 2,
            "jobs": [
                dict(job, interruptible=job["interruptible"])
                for job in workload["jobs"]
                if job["id"] in ids
            ],
        }
        part_plan = {"jobs": [job for job in plan["jobs"] if job["id"] in ids]}
        (tmp_path / "pw.json").write_text(json.dumps(part))
        (tmp_path / "pp.json").write_text(json.dumps(part_plan))
        done = subprocess.run(
            [
                sys.executable,
                str(PLAN_CHECK),
                str(path),
                str(tmp_path / "pw.json"),
                str(tmp_path / "pp.json"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout


def test_cli_refuses_unnamed_or_unknown_zones(zones: dict[str, Path], tmp_path: Path) -> None:
    workload_path = tmp_path / "w.json"
    workload_path.write_text(json.dumps(_workload(2)))
    base = ["simulate", "--workload", str(workload_path), "--out", str(tmp_path / "p.json")]
    unnamed = CliRunner().invoke(
        app, [*base, "--trace", str(zones["DIRTY"]), "--trace", str(zones["CLEAN"])]
    )
    assert unnamed.exit_code == 2 and "ZONE=FILE" in unnamed.output
    unknown = CliRunner().invoke(
        app, [*base, "--trace", f"DIRTY={zones['DIRTY']}", "--trace", f"X={zones['CLEAN']}"]
    )
    assert unknown.exit_code == 2 and "no trace for zone 'CLEAN'" in unknown.output
