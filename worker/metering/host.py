"""One CPU/RAM energy measurement per host, split between the jobs on it by CPU time.

The CPU package counter (RAPL) and CodeCarbon's estimates are host-wide: a meter per job
would give every job the whole host's energy, so two jobs on a 200 W package for an hour
would be charged 0.4 kWh for the host's 0.2. Instead the host is read once, and each reading's
increment is divided between the jobs running at the time in proportion to the CPU time their
process trees used in that interval. The parts always add up to the host's total: energy
used while no job ran is kept as the host's idle share, never dropped or double counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.metering.codecarbon_meter import CpuRamEnergy

# Cumulative (cpu_kwh, ram_kwh) of the whole host since an arbitrary origin; None if unknown.
HostReader = Callable[[], tuple[float, float] | None]
# CPU seconds (user + system) used so far by the process tree rooted at a pid; None if gone.
CpuSecondsReader = Callable[[int], float | None]


def process_tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, its reaped children and its live descendants."""
    import psutil  # a CodeCarbon dependency

    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue  # exited between the listing and the read
            total += child_times.user + child_times.system
        return total
    except psutil.Error:
        return None


MAX_PEERS = 64
MAX_PEER_FILE_BYTES = 4096


class HostRegistry:
    """Where the agents of one host list the pids of their running jobs.

    A directory private to the user the agents run as (mode 0700, checked before use, so no
    other user can list pids and shrink this agent's share); one small JSON file per agent.
    """

    def __init__(self, directory: Path, name: str | None = None) -> None:
        self.directory = directory
        self.name = name or str(os.getpid())

    @classmethod
    def open(cls, directory: Path, name: str | None = None) -> HostRegistry | None:
        """The registry at `directory`, created if missing; None if it is not ours alone."""
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.stat()
        except OSError:
            return None
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        return cls(directory, name)

    def publish(self, pids: list[int]) -> None:
        """Replace this agent's list of job pids (atomically)."""
        target = self.directory / f"{self.name}.json"
        temporary = self.directory / f".{self.name}.tmp"
        try:
            temporary.write_text(json.dumps(pids[:MAX_PEERS]))
            temporary.replace(target)
        except OSError:
            pass

    def withdraw(self) -> None:
        """Remove this agent's list."""
        with contextlib.suppress(OSError):
            (self.directory / f"{self.name}.json").unlink()

    def peer_pids(self) -> list[int]:
        """Job pids the host's other agents listed (bounded, malformed files ignored)."""
        pids: list[int] = []
        try:
            files = sorted(self.directory.glob("*.json"))[:MAX_PEERS]
        except OSError:
            return pids
        for path in files:
            if path.stem == self.name:
                continue
            try:
                if path.stat().st_size > MAX_PEER_FILE_BYTES:
                    continue
                listed = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(listed, list):
                pids.extend(p for p in listed if isinstance(p, int) and p > 0)
        return pids


@dataclass
class _Share:
    pid: int | None = None
    last_cpu_s: float | None = None
    cpu_kwh: float = 0.0
    ram_kwh: float = 0.0
    watts: float | None = None
    active: bool = True
    failed: bool = False


class HostEnergyMeter:
    """Reads the host's CPU/RAM energy once for all jobs and splits it by CPU time."""

    def __init__(
        self,
        read_host: HostReader,
        *,
        cpu_seconds: CpuSecondsReader = process_tree_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
        method: str = "estimated",
        registry: HostRegistry | None = None,
    ) -> None:
        self._read_host = read_host
        self._cpu_seconds = cpu_seconds
        self._clock = clock
        self.method = method
        # Other agents on this host: their jobs' CPU time counts in the split, their share of
        # the energy is theirs to charge.
        self._registry = registry
        self._peer_cpu_s: dict[int, float] = {}
        self._published: list[int] | None = None
        self._lock = threading.Lock()
        self._shares: dict[int, _Share] = {}
        self._next_key = 0
        self._last: tuple[float, float] | None = None
        self._last_t: float | None = None
        self.idle_cpu_kwh = 0.0
        self.idle_ram_kwh = 0.0
        self.total_cpu_kwh = 0.0
        self.total_ram_kwh = 0.0

    def join(self) -> HostShare:
        """A new job's share (its process is attached with `HostShare.track`)."""
        with self._lock:
            self._update_locked()
            key = self._next_key
            self._next_key += 1
            self._shares[key] = _Share()
        return HostShare(self, key)

    def update(self) -> None:
        """Read the host and hand out the energy used since the last reading."""
        with self._lock:
            self._update_locked()

    def _update_locked(self) -> None:
        reading = self._read_host()
        now = self._clock()
        if reading is None:
            # The jobs running now get no figure: a failed read is never a 0.
            for share in self._shares.values():
                share.failed = True
            return
        previous, previous_t = self._last, self._last_t
        self._last, self._last_t = reading, now
        # CPU seconds per running share over the interval (0 for a share without a process).
        weights: dict[int, float] = {}
        for key, share in self._shares.items():
            if not share.active:
                continue
            used = self._cpu_seconds(share.pid) if share.pid is not None else None
            if used is not None:
                delta = used - share.last_cpu_s if share.last_cpu_s is not None else 0.0
                share.last_cpu_s = used
                weights[key] = max(delta, 0.0)
            else:
                weights[key] = 0.0
        peer_weights = self._peer_weights()
        if previous is None:
            return
        cpu = max(reading[0] - previous[0], 0.0)
        ram = max(reading[1] - previous[1], 0.0)
        self.total_cpu_kwh += cpu
        self.total_ram_kwh += ram
        seconds = (now - previous_t) if previous_t is not None else 0.0
        if not weights:
            self.idle_cpu_kwh += cpu
            self.idle_ram_kwh += ram
            return
        total = sum(weights.values()) + sum(peer_weights.values())
        jobs = len(weights) + len(peer_weights)
        for key, weight in weights.items():
            # No CPU time at all in the interval: the running jobs share it evenly.
            part = weight / total if total > 0 else 1.0 / jobs
            share = self._shares[key]
            share.cpu_kwh += cpu * part
            share.ram_kwh += ram * part
            share.watts = (cpu + ram) * part * 3.6e6 / seconds if seconds > 0 else None

    def _peer_weights(self) -> dict[int, float]:
        """CPU seconds used since the last reading by the jobs of the host's other agents."""
        if self._registry is None:
            return {}
        own = {share.pid for share in self._shares.values() if share.pid is not None}
        if sorted(own) != self._published:
            self._published = sorted(own)
            self._registry.publish(self._published)
        weights: dict[int, float] = {}
        seen: dict[int, float] = {}
        for pid in self._registry.peer_pids():
            if pid in own:
                continue
            used = self._cpu_seconds(pid)
            if used is None:
                continue
            seen[pid] = used
            last = self._peer_cpu_s.get(pid)
            weights[pid] = max(used - last, 0.0) if last is not None else 0.0
        self._peer_cpu_s = seen
        return weights

    def close(self) -> None:
        """Withdraw this agent from the host registry."""
        if self._registry is not None:
            self._registry.withdraw()

    def _share(self, key: int) -> _Share:
        return self._shares[key]

    def _track(self, key: int, pid: int) -> None:
        with self._lock:
            self._update_locked()
            share = self._shares[key]
            share.pid = pid
            share.last_cpu_s = self._cpu_seconds(pid)

    def _leave(self, key: int) -> _Share:
        with self._lock:
            self._update_locked()
            share = self._shares.pop(key)
            share.active = False
            return share


class HostShare:
    """One job's part of the host meter, with the interface of a per-job CPU/RAM meter."""

    def __init__(self, meter: HostEnergyMeter, key: int) -> None:
        self._meter = meter
        self._key = key
        self._result: CpuRamEnergy | None = None

    def start(self) -> None:
        """Nothing to start: the host meter is already running."""

    def track(self, pid: int) -> None:
        """Attribute CPU time of `pid`'s process tree to this job from now on."""
        self._meter._track(self._key, pid)

    def kwh_so_far(self) -> tuple[float, float] | None:
        """This job's CPU and RAM kWh so far."""
        if self._result is not None:
            return (self._result.cpu_kwh or 0.0, self._result.ram_kwh or 0.0)
        self._meter.update()
        share = self._meter._share(self._key)
        return (share.cpu_kwh, share.ram_kwh)

    def watts_now(self) -> float | None:
        """This job's CPU + RAM power over the last interval."""
        if self._result is not None:
            return None
        return self._meter._share(self._key).watts

    def stop(self) -> CpuRamEnergy:
        """Leave the host meter and return this job's part."""
        if self._result is not None:
            return self._result
        share = self._meter._leave(self._key)
        if share.failed:
            self._result = CpuRamEnergy(ok=False, error="host CPU/RAM energy could not be read")
        else:
            self._result = CpuRamEnergy(
                ok=True,
                cpu_kwh=share.cpu_kwh,
                ram_kwh=share.ram_kwh,
                cpu_method=self._meter.method,
                ram_method=self._meter.method,
                cpu_tracking="host meter split by CPU time",
            )
        return self._result
