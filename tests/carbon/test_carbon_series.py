"""IntensitySeries arithmetic and the trace readers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from scheduler.carbon.series import (
    IntensitySeries,
    infer_step_minutes,
    read_trace_csv,
    series_from_points,
)

BUNDLED = Path(__file__).resolve().parents[2] / "scheduler/carbon/data/ES_2022_hourly.csv"
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def hourly(values: list[float], start: datetime = T0) -> IntensitySeries:
    return IntensitySeries(start=start, step_minutes=60, values=np.array(values, dtype=float))


def test_end_and_times() -> None:
    series = hourly([1, 2, 3])
    assert series.end == T0 + timedelta(hours=3)
    assert series.times() == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert len(series) == 3


def test_rejects_naive_start_nan_and_odd_step() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        IntensitySeries(start=datetime(2024, 1, 1), step_minutes=60, values=np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        IntensitySeries(start=T0, step_minutes=60, values=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="step_minutes"):
        IntensitySeries(start=T0, step_minutes=20, values=np.ones(2))
    with pytest.raises(ValueError, match="signal_type"):
        IntensitySeries(start=T0, step_minutes=60, values=np.ones(2), signal_type="lca")


def test_start_normalised_to_utc_and_values_read_only() -> None:
    plus_two = timezone(timedelta(hours=2))
    series = IntensitySeries(
        start=datetime(2024, 3, 1, 2, tzinfo=plus_two), step_minutes=60, values=[1, 2]
    )
    assert series.start == T0 and series.start.tzinfo == UTC
    assert series.values.dtype == np.float64
    with pytest.raises(ValueError):
        series.values[0] = 5.0


def test_window_keeps_overlapping_slots() -> None:
    series = hourly([10, 20, 30, 40])
    part = series.window(T0 + timedelta(minutes=90), T0 + timedelta(minutes=150))
    assert part.start == T0 + timedelta(hours=1)
    assert list(part.values) == [20, 30]
    # The end is exclusive: a window ending exactly on a slot boundary leaves that slot out.
    assert list(series.window(T0, T0 + timedelta(hours=2)).values) == [10, 20]


def test_window_clips_and_can_be_empty() -> None:
    series = hourly([10, 20])
    assert list(series.window(T0 - timedelta(days=1), T0 + timedelta(days=1)).values) == [10, 20]
    assert len(series.window(T0 + timedelta(days=1), T0 + timedelta(days=2))) == 0
    assert len(series.window(T0 + timedelta(hours=1), T0 + timedelta(hours=1))) == 0


def test_value_at() -> None:
    series = hourly([10, 20])
    assert series.value_at(T0 + timedelta(minutes=59)) == 10
    assert series.value_at(T0 + timedelta(hours=1)) == 20
    with pytest.raises(ValueError, match="outside"):
        series.value_at(T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="outside"):
        series.value_at(T0 - timedelta(seconds=1))


def test_resample_refine_then_coarsen_round_trips() -> None:
    series = hourly([10, 20, 30])
    fine = series.resample(15)
    assert fine.step_minutes == 15 and len(fine) == 12
    assert list(fine.values[:5]) == [10, 10, 10, 10, 20]
    assert fine.resample(60) == series


def test_resample_coarsen_aligns_to_the_clock() -> None:
    start = T0 + timedelta(minutes=30)
    series = IntensitySeries(start=start, step_minutes=15, values=[1, 3, 5, 7, 9, 11])
    hourly_series = series.resample(60)
    # 00:30-01:00 is a partial hour; 01:00-02:00 is whole.
    assert hourly_series.start == T0
    assert list(hourly_series.values) == [2, 8]


def test_series_from_points_infers_step_and_forward_fills() -> None:
    points = [
        (T0 + timedelta(minutes=30), 5.0),
        (T0, 1.0),
        (T0 + timedelta(minutes=15), 3.0),
        (T0 + timedelta(minutes=75), 9.0),
    ]
    series = series_from_points(points, source="test", signal_type="marginal")
    assert series.step_minutes == 15
    assert series.start == T0
    assert list(series.values) == [1, 3, 5, 5, 5, 9]
    assert series.source == "test" and series.signal_type == "marginal"


def test_series_from_points_rejects_off_grid_and_odd_steps() -> None:
    with pytest.raises(ValueError, match="grid"):
        series_from_points([(T0, 1), (T0 + timedelta(hours=1), 2), (T0 + timedelta(minutes=95), 3)])
    with pytest.raises(ValueError, match="not one of"):
        infer_step_minutes([T0, T0 + timedelta(minutes=20), T0 + timedelta(minutes=40)])


def test_reads_electricitymaps_export_both_columns() -> None:
    lca = read_trace_csv(BUNDLED)
    direct = read_trace_csv(BUNDLED, column="direct")
    assert len(lca) == 8760 and lca.step_minutes == 60
    assert lca.start == datetime(2022, 1, 1, tzinfo=UTC)
    assert lca.source == "trace:ES" and lca.signal_type == "average"
    # Figures from SOURCES.md: LCA mean 219, direct min/mean/max 40/167/318.
    assert round(lca.mean()) == 219
    assert round(direct.values.min()) == 40 and round(direct.mean()) == 167
    assert round(direct.values.max()) == 318
    assert lca.value_at(datetime(2022, 1, 1, 1, tzinfo=UTC)) == pytest.approx(181.54)


def test_bundled_trace_ships_its_attribution() -> None:
    note = (BUNDLED.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for required in ("Electricity Maps", "ODbL 1.0", "DbCL 1.0", "10.1145/3627703.3650079"):
        assert required in note


def test_reads_two_column_files_with_gaps(tmp_path: Path) -> None:
    path = tmp_path / "marginal.csv"
    path.write_text(
        "Time,Carbon Intensity\n"
        "2023-05-01 00:00:00,100\n"
        "2023-05-01 00:30:00,120\n"
        "2023-05-01T02:00:00Z,90\n"  # 01:00 and 01:30 missing
        "2023-05-01T02:30:00+00:00,\n"  # empty value: a gap as well
        "2023-05-01T04:00:00+01:00,80\n"  # 03:00 UTC
    )
    series = read_trace_csv(path)
    assert series.step_minutes == 30
    assert series.start == datetime(2023, 5, 1, tzinfo=UTC)
    assert list(series.values) == [100, 120, 120, 120, 90, 90, 80]
    assert series.source == "trace:marginal"


def test_reads_headerless_five_minute_file(tmp_path: Path) -> None:
    path = tmp_path / "moer.csv"
    lines = [f"2023-05-01T00:{minute:02d}:00,{minute}" for minute in range(0, 30, 5)]
    path.write_text("\n".join(lines) + "\n")
    series = read_trace_csv(path)
    assert series.step_minutes == 5
    assert list(series.values) == [0, 5, 10, 15, 20, 25]


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("Time,Value\n2023-05-01 00:00,1\nnot a time,2\n", 3),
        ("Time,Value\n2023-05-01 00:00,1\n2023-05-01 01:00,lots\n", 3),
        ("Time,Value\n2023-05-01 00:00,1\n2023-05-01 01:00,2\n2023-05-01 01:20,inf\n", 4),
        ("Time,Value\n2023-05-01 00:00,1\n2023-05-01 01:00,-5\n", 3),
    ],
)
def test_unreadable_content_names_file_and_line(tmp_path: Path, body: str, line: int) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=rf"broken\.csv:{line}:"):
        read_trace_csv(path)


def test_export_without_requested_column_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "partial.csv"
    path.write_text("Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (LCA)\n2022-01-01,ES,1\n")
    assert read_trace_csv(path).source == "trace:ES"
    with pytest.raises(ValueError, match=r"partial\.csv:1: .*direct"):
        read_trace_csv(path, column="direct")


def test_equality_compares_values() -> None:
    series = hourly([1, 2])
    assert series == hourly([1.0, 2.0])
    assert series != hourly([1, 3])
    assert series != replace(series, source="other")


def labelled(values: list[float], labels: tuple[str, ...], start: datetime = T0) -> IntensitySeries:
    return IntensitySeries(
        start=start, step_minutes=30, values=np.array(values, dtype=float), provenance=labels
    )


def test_provenance_is_optional_and_validated() -> None:
    assert hourly([1, 2]).provenance is None
    assert hourly([1, 2]).labels("forecast") == ("forecast", "forecast")
    with pytest.raises(ValueError, match="2 labels for 3 values"):
        labelled([1, 2, 3], ("observed", "observed"))
    with pytest.raises(ValueError, match="provenance labels must be among"):
        labelled([1], ("guessed",))
    with pytest.raises(ValueError, match="provenance_detail"):
        IntensitySeries(start=T0, step_minutes=60, values=np.ones(1), provenance_detail=("x",))


def test_provenance_survives_window_and_resample() -> None:
    series = labelled([1, 2, 3, 4], ("observed", "estimated", "filled", "forecast"))
    assert series.window(T0 + timedelta(minutes=30), T0 + timedelta(hours=2)).provenance == (
        "estimated",
        "filled",
        "forecast",
    )
    assert series.resample(15).provenance == (
        "observed",
        "observed",
        "estimated",
        "estimated",
        "filled",
        "filled",
        "forecast",
        "forecast",
    )
    # A coarse slot is only as trustworthy as its least trustworthy part.
    assert series.resample(60).provenance == ("estimated", "forecast")
    detailed = replace(
        series, provenance_detail=(None, "TIME_SLICER_AVERAGE", None, None)
    ).resample(60)
    assert detailed.provenance_detail == ("TIME_SLICER_AVERAGE", None)


def test_provenance_takes_part_in_equality() -> None:
    series = labelled([1, 2], ("observed", "observed"))
    assert series == labelled([1, 2], ("observed", "observed"))
    assert series != labelled([1, 2], ("observed", "estimated"))
    assert series != replace(series, provenance=None)


def test_points_with_labels_mark_forward_filled_gaps() -> None:
    series = series_from_points(
        [(T0, 1.0), (T0 + timedelta(hours=2), 3.0)],
        60,
        labels=["observed", "estimated"],
        details=[None, "X"],
    )
    assert list(series.values) == [1, 1, 3]
    assert series.provenance == ("observed", "filled", "estimated")
    assert series.provenance_detail == (None, None, "X")


def test_trace_reader_labels_observed_and_filled(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "time,value\n2024-03-01T00:00Z,1\n2024-03-01T01:00Z,\n2024-03-01T02:00Z,3\n"
        "2024-03-01T03:00Z,4\n2024-03-01T04:00Z,5\n"
    )
    assert read_trace_csv(path).provenance == (
        "observed",
        "filled",
        "observed",
        "observed",
        "observed",
    )
