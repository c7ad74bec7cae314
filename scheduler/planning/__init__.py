"""Planning: when each queued job runs, given carbon intensity, tariffs and GPU capacity.

Pure functions (no I/O) except `simulate`, which reads traces and writes backtest results:

- `planner.plan` plans a queue; `types` holds its inputs and outputs.
- `joint` and `placement` are the planning core in slot units.
- `baselines` (run-now, the GSF SDK window rule) and `optimal` (MILP) for comparison.
- `tariff` prices slots from time-of-use schedules; `estimate` predicts run length and kWh.
- `simulate` and `workloads` run online backtests on historical traces.
"""
