"""The trace reader on real-world file shapes: one small file per case in fixtures/traces."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.carbon.trace_reader import LBS_PER_MWH_TO_G_PER_KWH, TraceError, read_trace

TRACES = Path(__file__).parent / "fixtures" / "traces"
RECORDED = Path(__file__).parent / "fixtures"


def test_a_resolution_change_is_resampled_to_the_coarser_step() -> None:
    read = read_trace(TRACES / "resolution_switch.csv")
    series, report = read.series, read.report
    assert series.step_minutes == 30 and series.start == datetime(2023, 5, 1, tzinfo=UTC)
    # 15-minute readings are averaged in pairs, weighted by the time each one covers.
    assert list(series.values) == [300, 280, 255, 230, 205]
    assert series.source == "trace:DE"
    assert report.resolutions == [15, 30] and report.resampled == 3 and report.filled == 0
    assert any("resolution changes" in note for note in report.warnings())


def test_a_finer_step_repeats_coarse_readings() -> None:
    series = read_trace(TRACES / "resolution_switch.csv", step_minutes=15).series
    assert list(series.values[:6]) == [300, 300, 280, 280, 260, 250]


def test_gaps_are_forward_filled_and_counted() -> None:
    read = read_trace(TRACES / "gaps.csv")
    assert read.series.step_minutes == 60
    assert list(read.series.values) == [100, 110, 110, 110, 110, 150, 150, 170]
    assert read.report.filled == 4 and read.report.missing == 1
    assert read.report.resampled == 0
    assert "4 slots filled" in " ".join(read.report.warnings())


def test_duplicates_and_unsorted_rows() -> None:
    read = read_trace(TRACES / "duplicates_unsorted.csv")
    # The later of the two 01:00 rows wins, as a revision would.
    assert list(read.series.values) == [10, 25, 30, 40]
    assert read.report.duplicates == 1 and read.report.reordered == 3
    notes = " ".join(read.report.warnings())
    assert "1 duplicate rows" in notes and "3 rows out of time order" in notes


def test_local_time_across_the_autumn_change() -> None:
    # Madrid, 30 Oct 2022: 02:00 comes twice (CEST, then CET); both are kept, an hour apart.
    read = read_trace(TRACES / "local_time_dst.csv")
    assert read.series.start == datetime(2022, 10, 29, 23, tzinfo=UTC)
    assert list(read.series.values) == [100, 110, 120, 130, 140]
    assert read.report.duplicates == 0 and read.report.filled == 0


def test_local_time_across_the_spring_change() -> None:
    # Madrid, 27 Mar 2022: 01:00 CET is followed by 03:00 CEST, one hour later.
    read = read_trace(TRACES / "local_time_spring.csv")
    assert read.series.start == datetime(2022, 3, 27, tzinfo=UTC)
    assert list(read.series.values) == [100, 110, 120] and read.report.filled == 0


def test_local_time_zone_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "naive.csv"
    path.write_text("time,value\n2022-10-30 02:00,1\n2022-10-30 02:00,2\n2022-10-30 03:00,3\n")
    assert list(read_trace(path, timezone="Europe/Madrid").series.values) == [1, 2, 3]
    assert read_trace(path).report.duplicates == 1  # read as UTC, the 02:00s collide


def test_offsets_across_the_change() -> None:
    series = read_trace(TRACES / "offsets_dst.csv").series
    assert series.start == datetime(2022, 10, 29, 23, tzinfo=UTC)
    assert list(series.values) == [100, 110, 120, 130]


def test_electricitymaps_json_history() -> None:
    read = read_trace(TRACES / "electricitymaps_history.json")
    assert read.series.source == "trace:DE" and read.series.signal_type == "average"
    assert list(read.series.values) == [302, 302, 290] and read.report.filled == 1


def test_watttime_moer_csv_is_marginal_in_g_per_kwh() -> None:
    series = read_trace(TRACES / "watttime_moer.csv").series
    assert series.signal_type == "marginal" and series.step_minutes == 5
    assert series.source == "trace:CAISO_NORTH"
    assert series.values == pytest.approx([v * LBS_PER_MWH_TO_G_PER_KWH for v in (1000, 1100, 900)])


@pytest.mark.parametrize("name", ["watttime_historical.json"])
def test_watttime_json(name: str) -> None:
    for path in (TRACES / name, RECORDED / name):
        series = read_trace(path).series
        assert series.signal_type == "marginal" and series.step_minutes == 5
        assert 400 < series.values[0] < 500  # ~1048 lbs/MWh


def test_ukci_shapes() -> None:
    national = read_trace(TRACES / "ukci_national.json").series
    assert national.source == "trace:GB" and national.step_minutes == 30
    assert list(national.values) == [150, 148]  # actual, else the forecast
    regional = read_trace(TRACES / "ukci_regional.json").series
    assert list(regional.values) == [266, 270]
    assert regional.source == "trace:North West England"
    csv_export = read_trace(TRACES / "ukci.csv").series
    assert list(csv_export.values) == [118, 125]
    for recorded in ("ukci_regional_all_range.json", "ukci_national_fw48h.json"):
        assert len(read_trace(RECORDED / recorded).series) >= 2


def test_recorded_electricitymaps_past_range() -> None:
    series = read_trace(RECORDED / "electricitymaps_past_range.json").series
    assert len(series) >= 2 and series.signal_type == "average"


@pytest.mark.parametrize(
    ("body", "where", "reason"),
    [
        ("time,value\n2023-05-01 00:00,1\nyesterday,2\n", ":3:", "cannot read a time"),
        ("time,value\n2023-05-01 00:00,1\n2023-05-01 01:00,lots\n", ":3:", "not a number"),
        ("time,value\n2023-05-01 00:00,1\n2023-05-01 01:00,-3\n", ":3:", "negative"),
        ("time,value\n2023-05-01 00:00,1\n2023-05-01 01:00\n", ":3:", "no time or value"),
        ("time,value\n2023-05-01 00:00,\n", "", "no readable data rows"),
        ("time,value\n2023-05-01 00:00,1\n2990-05-01 00:00,1\n", ":3:", "slots after"),
        (
            "Datetime (Europe/Madrid),value\n2022-03-27 01:00,1\n2022-03-27 02:30,2\n",
            ":3:",
            "does not exist",
        ),
        (
            '{"data": [{"point_time": "2022-07-15T00:00:00Z"}]}',
            ": data[0]:",
            "no 'carbonIntensity'",
        ),
        ('{"data": [\n{"from": 1,}', ":2:", "not valid JSON"),
    ],
)
def test_an_unusable_file_is_refused_naming_line_and_reason(
    tmp_path: Path, body: str, where: str, reason: str
) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(body)
    with pytest.raises(TraceError, match=reason) as caught:
        read_trace(path)
    assert str(caught.value).startswith(f"{path}{where}")
