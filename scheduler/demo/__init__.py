"""`greenwindow demo`: the whole loop on one machine, in about two to three minutes.

It starts the service in-process (SQLite, the bundled ES trace, the zone's tariff), one
CPU worker in a child process, creates a team with a carbon budget, uploads a generated
sample dataset, submits three fine-tunes with different deadlines and objectives, shows
where the planner put them and why, runs them, and prints their energy reports, the
team's budget and the dashboard address.

Grid time is accelerated so that waiting for a low-carbon window takes seconds. The demo
clock runs `speedup` times faster than real time while no job is ready or running, and
`run_speedup` times faster while one is (so a short CPU training fills about the grid
time it was planned for). Training, metering and accounting stay real: the worker's
timestamps are mapped onto the same clock by its HTTP transport, so each measured kWh is
charged at the intensity of the grid time it was used in. Heartbeats and leases are
scaled so that no lease expires because grid time runs fast.
"""

from __future__ import annotations

from scheduler.demo.clock import (
    MAX_SPEEDUP,
    REAL_HEARTBEAT_S,
    DemoClock,
    GridTimeTransport,
    map_timestamps,
    scaled_timing,
)
from scheduler.demo.render import budget_table, energy_table, plan_table
from scheduler.demo.steps import (
    DEMO_JOBS,
    TEAM,
    Demo,
    DemoJob,
    DemoOptions,
    DemoRun,
    demo_settings,
    job_body,
    nice_ceiling,
    run_demo,
    training_core_usable,
    wait_until_validated,
    worker_main,
)

__all__ = [
    "DEMO_JOBS",
    "MAX_SPEEDUP",
    "REAL_HEARTBEAT_S",
    "TEAM",
    "Demo",
    "DemoClock",
    "DemoJob",
    "DemoOptions",
    "DemoRun",
    "GridTimeTransport",
    "budget_table",
    "demo_settings",
    "energy_table",
    "job_body",
    "map_timestamps",
    "nice_ceiling",
    "plan_table",
    "run_demo",
    "scaled_timing",
    "training_core_usable",
    "wait_until_validated",
    "worker_main",
]
