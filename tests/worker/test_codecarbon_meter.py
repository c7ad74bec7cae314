"""CodeCarbon CPU/RAM metering: a real tracker on this machine, plus failure paths."""

from __future__ import annotations

import glob
import os
import time
from typing import Any

import pytest

from worker.metering.codecarbon_meter import CodeCarbonMeter, country_for_zone


def rapl_readable() -> bool:
    files = glob.glob("/sys/class/powercap/intel-rapl*/**/energy_uj", recursive=True)
    return any(os.access(path, os.R_OK) for path in files)


def busy(seconds: float) -> int:
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
    return count


def test_real_tracker_measures_cpu_and_ram() -> None:
    meter = CodeCarbonMeter(country_iso_code="ESP", measure_power_secs=1)
    meter.start()
    busy(2.5)
    so_far = meter.kwh_so_far()
    result = meter.stop()
    assert result.ok, result.error
    assert result.cpu_kwh is not None and result.cpu_kwh > 0
    assert result.ram_kwh is not None and result.ram_kwh > 0
    assert result.kg_co2e is not None and result.kg_co2e > 0
    assert result.cpu_method == ("measured" if rapl_readable() else "estimated")
    assert result.ram_method == "estimated"
    assert so_far is not None and so_far[0] <= result.cpu_kwh
    block = result.to_json()
    assert block["ok"] is True and block["cpu_kwh"] == result.cpu_kwh


class NoneTracker:
    """A tracker double whose stop() returns None, as CodeCarbon does when it swallowed an error."""

    def __init__(self, **_: Any) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> float | None:
        return None


def test_stop_returning_none_is_a_failed_measurement() -> None:
    meter = CodeCarbonMeter(tracker_factory=NoneTracker)
    meter.start()
    result = meter.stop()
    assert not result.ok
    assert result.cpu_kwh is None and result.ram_kwh is None
    assert "returned no measurement" in (result.error or "")
    assert result.to_json() == {"ok": False, "error": result.error}


def test_tracker_that_cannot_start_is_reported() -> None:
    def broken(**_: Any) -> NoneTracker:
        raise RuntimeError("no cpuinfo")

    meter = CodeCarbonMeter(tracker_factory=broken)
    meter.start()
    result = meter.stop()
    assert not result.ok and "no cpuinfo" in (result.error or "")
    assert meter.kwh_so_far() is None and meter.watts_now() is None


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("ES", "ESP"),
        ("DE", "DEU"),
        ("GB", "GBR"),
        ("DK-DK1", "DNK"),
        ("US-CAL-CISO", "USA"),
        ("FRA", "FRA"),
        (None, "USA"),
        ("ZZ", "USA"),
    ],
)
def test_country_for_zone(zone: str | None, expected: str) -> None:
    assert country_for_zone(zone) == expected
