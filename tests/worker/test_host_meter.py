"""The host CPU/RAM meter: measured once, split between jobs by CPU time (fakes for the
host's energy counter and for the processes' CPU time)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.metering.host import HostEnergyMeter, HostRegistry, process_tree_cpu_seconds


class FakeHost:
    """A host whose CPU package draws `watts` and RAM `ram_watts`, on a settable clock."""

    def __init__(self, watts: float, ram_watts: float = 0.0) -> None:
        self.t = 0.0
        self.watts = watts
        self.ram_watts = ram_watts
        self.cpu_s: dict[int, float] = {}
        self.fail = False

    def clock(self) -> float:
        return self.t

    def read(self) -> tuple[float, float] | None:
        if self.fail:
            return None
        return (self.watts * self.t / 3.6e6, self.ram_watts * self.t / 3.6e6)

    def cpu_seconds(self, pid: int) -> float | None:
        return self.cpu_s.get(pid)


def test_two_jobs_on_a_200_w_package_for_an_hour_share_its_0_2_kwh() -> None:
    # Audit example 3. Before: each job's tracker read the host counter: 0.4 kWh in total.
    host = FakeHost(200.0, ram_watts=20.0)
    meter = HostEnergyMeter(host.read, cpu_seconds=host.cpu_seconds, clock=host.clock)
    first, second = meter.join(), meter.join()
    host.cpu_s = {101: 0.0, 202: 0.0}
    first.track(101)
    second.track(202)
    for _ in range(60):  # one minute at a time; job 101 uses 3x the CPU time of job 202
        host.t += 60.0
        host.cpu_s[101] += 90.0
        host.cpu_s[202] += 30.0
        first.kwh_so_far()
    a, b = first.stop(), second.stop()
    assert a.ok and b.ok
    assert a.cpu_kwh == pytest.approx(0.15) and b.cpu_kwh == pytest.approx(0.05)
    assert a.ram_kwh == pytest.approx(0.015) and b.ram_kwh == pytest.approx(0.005)
    assert (a.cpu_kwh or 0) + (b.cpu_kwh or 0) == pytest.approx(meter.total_cpu_kwh)
    assert meter.total_cpu_kwh == pytest.approx(0.2)


def test_parts_add_up_with_jobs_coming_and_going_and_idle_time() -> None:
    host = FakeHost(100.0)
    meter = HostEnergyMeter(host.read, cpu_seconds=host.cpu_seconds, clock=host.clock)
    meter.update()
    host.t = 600.0  # ten idle minutes: nobody's job
    first = meter.join()
    host.cpu_s[1] = 0.0
    first.track(1)
    host.t = 1200.0
    host.cpu_s[1] = 300.0
    second = meter.join()
    host.cpu_s[2] = 0.0
    second.track(2)
    host.t = 1800.0  # both run; job 2 uses no CPU at all in this interval
    host.cpu_s[1] = 600.0
    a = first.stop()
    host.t = 2400.0  # only job 2, without CPU time: it still gets the host's energy
    b = second.stop()
    kwh = 100.0 / 3.6e6
    assert meter.idle_cpu_kwh == pytest.approx(600 * kwh)
    assert a.cpu_kwh == pytest.approx(1200 * kwh)
    assert b.cpu_kwh == pytest.approx(600 * kwh)
    assert meter.idle_cpu_kwh + (a.cpu_kwh or 0) + (b.cpu_kwh or 0) == pytest.approx(
        meter.total_cpu_kwh
    )
    assert meter.total_cpu_kwh == pytest.approx(2400 * kwh)


def test_a_failed_host_read_is_a_failed_measurement_not_zero() -> None:
    host = FakeHost(100.0)
    meter = HostEnergyMeter(host.read, cpu_seconds=host.cpu_seconds, clock=host.clock)
    share = meter.join()
    host.fail = True
    host.t = 60.0
    result = share.stop()
    assert not result.ok and result.cpu_kwh is None


def test_process_tree_cpu_time_of_a_real_process() -> None:
    before = process_tree_cpu_seconds(os.getpid())
    assert before is not None
    sum(i * i for i in range(300_000))  # burn a little CPU
    after = process_tree_cpu_seconds(os.getpid())
    assert after is not None and after >= before
    assert process_tree_cpu_seconds(2**22 + 12345) is None


def test_two_agents_on_one_host_split_it_through_the_registry(tmp_path: Path) -> None:
    # Two agents (one job each) read the same 200 W package: together they charge 0.2 kWh.
    host = FakeHost(200.0)
    directory = tmp_path / "host-meter"
    meters = []
    for name in ("agent-a", "agent-b"):
        registry = HostRegistry.open(directory, name)
        assert registry is not None
        meters.append(
            HostEnergyMeter(
                host.read, cpu_seconds=host.cpu_seconds, clock=host.clock, registry=registry
            )
        )
    a, b = meters[0].join(), meters[1].join()
    host.cpu_s = {11: 0.0, 22: 0.0}
    a.track(11)
    b.track(22)
    for meter in (*meters, *meters):
        meter.update()  # each sees the other's job before the hour starts
    for _ in range(60):
        host.t += 60.0
        host.cpu_s[11] += 45.0
        host.cpu_s[22] += 15.0
        for meter in meters:
            meter.update()
    first, second = a.stop(), b.stop()
    assert first.cpu_kwh == pytest.approx(0.15) and second.cpu_kwh == pytest.approx(0.05)
    for meter in meters:
        meter.close()
    assert list(directory.glob("*.json")) == []


def test_a_registry_other_users_can_write_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    assert HostRegistry.open(directory) is None
    (tmp_path / "private").mkdir(mode=0o700)
    registry = HostRegistry.open(tmp_path / "private", "me")
    assert registry is not None
    (tmp_path / "private" / "peer.json").write_text('[5, "x", -1, 7]')
    (tmp_path / "private" / "big.json").write_text("[" + "1," * 5000 + "1]")
    registry.publish([3])
    assert registry.peer_pids() == [5, 7]
