"""Out-of-sample evaluation of the own forecaster (`scheduler/carbon/forecaster.py`).

    .venv/bin/python bench/forecast.py [--train-months 6] [--holdout NO] [--backtests 2]

The forecaster's constants are tuned by grid search on the first `--train-months` of 2022
of every zone except `--holdout` (MAPE of 48 h forecasts issued every 24 h), then both the
shipped constants and the tuned ones are scored on the remaining months, and on the
held-out zone as a whole. With `--backtests N`, the planner's share of the optimal saving
in forecaster mode is measured on N busy instances per zone that start in the test months.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.carbon import forecaster  # noqa: E402
from scheduler.carbon.series import IntensitySeries, read_trace_csv  # noqa: E402

DEFAULT_DATA = (
    ROOT.parent / "shared" / "data" / "carbon" / "electricitymaps-decarbonization-potential"
)
ZONES = ("US-CAL-CISO", "ES", "NO", "BR")
GRID = {
    "PROFILE_WEEKS": (1, 2, 4),
    "RECENT_DAY_WEIGHT": (0.4, 0.8, 1.0),
    "ANOMALY_DECAY_HOURS": (6.0, 12.0, 24.0),
}
HORIZON_HOURS = 48


@contextmanager
def constants(values: dict[str, float]) -> Iterator[None]:
    """Run with the forecaster's module constants set to `values`."""
    saved = {name: getattr(forecaster, name) for name in values}
    for name, value in values.items():
        setattr(forecaster, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(forecaster, name, value)


def mape(series: IntensitySeries, start: datetime, end: datetime, every_hours: int) -> float:
    """Mean absolute percentage error of 48 h forecasts issued every `every_hours` in
    [start, end), each from the history before it."""
    errors = []
    issue = start
    while issue + timedelta(hours=HORIZON_HOURS) <= end:
        history = series.window(series.start, issue)
        if len(history) >= 24 * 7:
            predicted = forecaster.seasonal_forecast(history, issue, HORIZON_HOURS).values
            actual = series.window(issue, issue + timedelta(hours=HORIZON_HOURS)).values
            count = min(len(predicted), len(actual))
            truth = np.maximum(actual[:count], 1.0)
            errors.append(float(np.mean(np.abs(predicted[:count] - truth) / truth)))
        issue += timedelta(hours=every_hours)
    return 100.0 * float(np.mean(errors)) if errors else float("nan")


def main() -> None:
    """Tune on the train months, score out of sample, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-months", type=int, default=6)
    parser.add_argument("--holdout", default="NO")
    parser.add_argument("--every-hours", type=int, default=24)
    parser.add_argument("--backtests", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=120)
    series = {zone: read_trace_csv(args.data / f"{zone}_2022_hourly.csv") for zone in ZONES}
    year_start = datetime(2022, 1, 1, tzinfo=UTC)
    split = datetime(2022, 1 + args.train_months, 1, tzinfo=UTC)
    year_end = datetime(2023, 1, 1, tzinfo=UTC)
    tuning_zones = [zone for zone in ZONES if zone != args.holdout]
    shipped = {name: getattr(forecaster, name) for name in GRID}

    best: tuple[float, dict[str, float]] | None = None
    for combination in itertools.product(*GRID.values()):
        values = dict(zip(GRID, combination, strict=True))
        with constants(values):
            score = float(
                np.mean(
                    [mape(series[z], year_start, split, args.every_hours) for z in tuning_zones]
                )
            )
        if best is None or score < best[0]:
            best = (score, values)
    assert best is not None
    tuned = best[1]
    console.print(f"shipped constants: {shipped}")
    last_train = split - timedelta(days=1)
    console.print(f"tuned on {', '.join(tuning_zones)}, Jan-{last_train:%b} 2022: {tuned}")

    table = Table(title=f"MAPE of 48 h forecasts issued every {args.every_hours} h")
    for column in ("zone", "period", "shipped constants", "tuned on train months"):
        table.add_column(column, justify="left" if column in ("zone", "period") else "right")
    for zone in ZONES:
        last_train = split - timedelta(days=1)
        periods = [(f"train (Jan-{last_train:%b})", year_start, split)]
        periods.append((f"test ({split:%b}-Dec)", split, year_end))
        if zone == args.holdout:
            periods.append(("held out, whole year", year_start, year_end))
        for label, start, end in periods:
            with constants(shipped):
                before = mape(series[zone], start, end, args.every_hours)
            with constants(tuned):
                after = mape(series[zone], start, end, args.every_hours)
            table.add_row(zone, label, f"{before:.1f} %", f"{after:.1f} %")
    console.print(table)

    if args.backtests:
        backtests(series, split, args.backtests, shipped, tuned, console)


def backtests(
    series: dict[str, IntensitySeries],
    split: datetime,
    instances: int,
    shipped: dict[str, float],
    tuned: dict[str, float],
    console: Console,
) -> None:
    """Planner share of the optimal saving in forecaster mode, on test-month instances."""
    sys.path.insert(0, str(ROOT / "bench"))
    from planner import ARRIVAL_HOURS, CAPACITY, optimum_kg

    from scheduler.planning.simulate import simulate_series
    from scheduler.planning.workloads import generate_workload

    table = Table(title=f"Forecaster-mode share of the optimal saving, busy, from {split:%b}")
    for column in ("zone", "instances", "shipped constants", "tuned constants", "misses", "EDF"):
        table.add_column(column, justify="left" if column == "zone" else "right")
    for zone, trace in series.items():
        saving = {"shipped": 0.0, "tuned": 0.0}
        best_total = 0.0
        misses = edf = 0
        for instance in range(instances):
            start = split + timedelta(days=17 + 61 * instance, hours=7, minutes=30)
            workload = generate_workload(
                start, ARRIVAL_HOURS, busy=True, capacity_gpus=CAPACITY, seed=300 + instance
            )
            kg_opt, _ = optimum_kg(trace, workload)
            for name, values in (("shipped", shipped), ("tuned", tuned)):
                with constants(values):
                    result = simulate_series(trace, workload, forecast="forecaster")
                saving[name] += result["run_now_kg_co2e"] - result["total_kg_co2e"]
                if name == "tuned":
                    misses += result["deadline_misses"]
                    edf += result["edf_deadline_misses"]
            best_total += result["run_now_kg_co2e"] - kg_opt
        table.add_row(
            zone,
            str(instances),
            f"{100 * saving['shipped'] / best_total:.0f} %",
            f"{100 * saving['tuned'] / best_total:.0f} %",
            str(misses),
            str(edf),
        )
        console.print(f"  done: {zone}", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()
