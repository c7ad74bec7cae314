"""The pure formatting: sparklines, planned-window marks, budget bars and the forecast view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.client import render
from scheduler.client.commands import forecast_view
from scheduler.client.jobfile import build_submission, parse_assignments

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_sparkline_spans_lowest_to_highest_block() -> None:
    line = render.sparkline([100.0, 200.0, 300.0, None, 300.0])
    assert line == "▁▅█ █"
    assert render.sparkline([5.0, 5.0]) == "▁▁"
    assert render.sparkline([None, None]) == "  "


def test_hourly_columns_average_sub_hourly_points() -> None:
    points = [
        {"t": _iso(START), "g_per_kwh": 100.0},
        {"t": _iso(START + timedelta(minutes=30)), "g_per_kwh": 200.0},
        {"t": _iso(START + timedelta(hours=2)), "g_per_kwh": 50.0},
        {"t": _iso(START + timedelta(hours=9)), "g_per_kwh": 1.0},  # beyond the horizon
    ]
    assert render.hourly_columns(points, START, 3) == [150.0, None, 50.0]


def test_window_marks_cover_every_overlapped_hour() -> None:
    intervals = [[_iso(START + timedelta(hours=2, minutes=30)), _iso(START + timedelta(hours=4))]]
    assert render.window_marks(intervals, START, 6, mark="^") == "  ^^  "


def test_planned_intervals_fall_back_to_start_and_end() -> None:
    job = {"planned_intervals": [], "planned_start": "a", "planned_end": "b"}
    assert render.planned_intervals(job) == [["a", "b"]]
    assert render.planned_intervals({"planned_start": None}) == []


def test_budget_bar_shows_actual_and_committed() -> None:
    bar = render.budget_bar(25.0, 25.0, 100.0, width=20)
    assert bar.plain == "[" + "█" * 5 + "▒" * 5 + "·" * 10 + "] 50 % of 100 kg CO2e"
    over = render.budget_bar(90.0, 30.0, 100.0, width=10)
    assert over.plain.startswith("[" + "█" * 9 + "▒" + "]") and "120 %" in over.plain


def test_window_text() -> None:
    same_day = render.fmt_window(_iso(START), _iso(START + timedelta(hours=4)))
    assert same_day == "2026-03-02 09:00Z → 13:00Z"
    overnight = render.fmt_window(_iso(START), _iso(START + timedelta(hours=20)))
    assert overnight == "2026-03-02 09:00Z → 2026-03-03 05:00Z"
    assert render.fmt_window(None, None) == "not planned"


def test_saving_text_gives_the_share_of_run_now() -> None:
    job = {"estimated_kg_co2e": 0.3, "expected_saving_kg_co2e": 0.1}
    assert render.saving_text(job) == "0.1 kg CO2e (−25 %)"


def test_forecast_view_marks_planned_jobs() -> None:
    points = [
        {"t": _iso(START + timedelta(hours=h)), "g_per_kwh": 300.0 - 10 * h} for h in range(12)
    ]
    data = {
        "points": points,
        "source": "trace",
        "signal_type": "average",
        "generated_at": _iso(START),
    }
    job = {
        "planned_intervals": [[_iso(START + timedelta(hours=8)), _iso(START + timedelta(hours=10))]]
    }
    lines = forecast_view("ES", data, [job], hours=12).plain.splitlines()
    assert lines[0].startswith("ES carbon intensity, next 12 h (trace, average")
    assert lines[1].startswith("█") and lines[1][11] == "▁"
    assert lines[2][:12] == " " * 8 + "▔▔" + " " * 2
    assert "your planned jobs: 1" in lines[2]
    assert lines[3].startswith("09    15")
    assert "min 190 g/kWh at 2026-03-02 20:00Z" in lines[4]


def test_assignments_nest_and_parse_scalars() -> None:
    assert parse_assignments(["steps=10", "lora.rank=8", "amp=true", "note=hi"]) == {
        "steps": 10,
        "lora": {"rank": 8},
        "amp": True,
        "note": "hi",
    }


def test_flags_replace_the_file_slack() -> None:
    body = build_submission(
        {"name": "a", "max_delay_minutes": 60, "config": {"steps": 5}},
        {"deadline": "2026-03-03T00:00:00Z", "gpus": None},
        {"size": 16},
    )
    assert body == {
        "name": "a",
        "deadline": "2026-03-03T00:00:00Z",
        "config": {"steps": 5, "size": 16},
    }
    assert build_submission({"name": "b", "dataset": "ds1"}, {}, {})["dataset"] == {"id": "ds1"}


def test_energy_tables_list_attempts_and_skip_the_timeline() -> None:
    report = {
        "job_id": "J",
        "kwh": {"gpu": 0.4, "cpu": 0.08, "ram": 0.02, "total": 0.5},
        "methods": {"gpu": "measured", "cpu": "estimated", "ram": "estimated"},
        "kg_co2e": 0.1,
        "timeline": [{"t": "2026-03-02T09:00:00Z", "watts": 123456.0}],
        "attempts": [{"attempt": 1, "outcome": "succeeded", "kwh": {"total": 0.5}}],
    }
    tables = render.energy_tables(report)
    assert [t.title for t in tables] == ["energy", "attempts"]
    rows = dict(render.energy_summary_rows(report))
    assert rows["energy"] == "0.5 kWh" and rows["  gpu"] == "0.4 kWh (measured)"
    assert rows["emissions"] == "0.1 kg CO2e"
    assert not any("123456" in value for value in rows.values())
    assert tables[1].row_count == 1


def test_progress_line_shows_live_energy_only_while_running() -> None:
    job = {
        "state": "running",
        "progress": {"step": 3, "loss": 0.25, "energy": {"watts": 150.0, "kwh_so_far": 0.002}},
    }
    assert render.progress_line(job) == "running · loss 0.25 · 150 W · 0.002 kWh so far"
    finished = {**job, "state": "succeeded"}
    assert render.progress_line(finished) == "succeeded · loss 0.25"
    waiting = {"state": "scheduled", "state_reason": "deferred to low-carbon window"}
    assert render.progress_line(waiting) == "scheduled · deferred to low-carbon window"


def test_live_energy_prefers_the_running_attempt() -> None:
    job = {"state": "running", "progress": {}}
    report = {
        "attempts": [
            {"outcome": "lost", "kwh_so_far": 9.0},
            {"outcome": "running", "kwh_so_far": 0.5, "watts": 80.0},
        ]
    }
    assert render.live_energy(job, report) == {
        "watts": 80.0,
        "kwh_so_far": 0.5,
        "kg_co2e_so_far": None,
    }
    assert render.live_energy(job, None) == {
        "watts": None,
        "kwh_so_far": None,
        "kg_co2e_so_far": None,
    }
    # The job's own live figures (its latest heartbeat) win.
    live = {**job, "live": {"watts": 120.0, "kwh_so_far": 0.7, "kg_co2e_so_far": 0.1}}
    assert render.live_energy(live, report) == {
        "watts": 120.0,
        "kwh_so_far": 0.7,
        "kg_co2e_so_far": 0.1,
    }
