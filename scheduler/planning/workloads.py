"""Seeded synthetic fine-tune queues for backtests: busy and quiet, mixed slack.

Jobs arrive at random (uniform) over the first `arrival_hours`; durations are whole hours
(1-6 h, short ones more likely), 1 or 2 GPUs, power 0.25-0.45 kW per GPU plus 0.1 kW host,
slack 2-48 h beyond the duration, half of them interruptible. `busy` asks for enough jobs
to keep about 70 % of the GPUs busy during the arrival period, `quiet` about 20 %.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from scheduler.planning.types import to_utc

BUSY_LOAD = 0.7
QUIET_LOAD = 0.2
_DURATION_HOURS = np.array([1, 2, 3, 4, 5, 6])
_DURATION_WEIGHTS = np.array([0.25, 0.25, 0.2, 0.15, 0.1, 0.05])
_MEAN_GPU_HOURS = float((_DURATION_HOURS * _DURATION_WEIGHTS).sum()) * 1.25  # 25 % use 2 GPUs


def _rfc3339(moment: datetime) -> str:
    return to_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_workload(
    start: datetime,
    arrival_hours: int = 72,
    *,
    busy: bool = True,
    capacity_gpus: int = 4,
    seed: int = 0,
    n_jobs: int | None = None,
    min_slack_hours: float = 2.0,
    max_slack_hours: float = 48.0,
) -> dict[str, Any]:
    """A workload dict (`capacity_gpus`, `jobs`) in the `greenwindow simulate` format."""
    rng = np.random.default_rng(seed)
    load = BUSY_LOAD if busy else QUIET_LOAD
    if n_jobs is None:
        n_jobs = max(1, round(load * capacity_gpus * arrival_hours / _MEAN_GPU_HOURS))
    start = to_utc(start)
    offsets = np.sort(rng.uniform(0, arrival_hours * 60, n_jobs))
    jobs = []
    for index, minute in enumerate(offsets):
        duration_hours = int(rng.choice(_DURATION_HOURS, p=_DURATION_WEIGHTS))
        gpus = int(min(capacity_gpus, 2 if rng.random() < 0.25 else 1))
        slack_hours = float(rng.uniform(min_slack_hours, max_slack_hours))
        submitted = start + timedelta(minutes=float(minute))
        deadline = submitted + timedelta(hours=duration_hours + slack_hours)
        jobs.append(
            {
                "id": f"job-{index:04d}",
                "submitted_at": _rfc3339(submitted),
                "duration_minutes": 60 * duration_hours,
                "deadline": _rfc3339(deadline),
                "gpus": gpus,
                "power_kw": round(gpus * float(rng.uniform(0.25, 0.45)) + 0.1, 3),
                "interruptible": bool(rng.random() < 0.5),
            }
        )
    return {"capacity_gpus": capacity_gpus, "jobs": jobs}
