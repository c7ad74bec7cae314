"""The demo's accelerated grid clock, shared with its worker child, and the worker's
transport that maps its wall-clock timestamps onto that clock."""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypedDict

import httpx

# Real seconds between the worker's heartbeats; grid-time settings are scaled from it.
REAL_HEARTBEAT_S = 1.0
MAX_SPEEDUP = 3600.0
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class DemoClock:
    """Grid time as a piecewise-linear function of real time, shared across processes.

    The state is three doubles in shared memory (anchor real epoch, anchor grid epoch,
    rate), so the worker child maps its timestamps with exactly the service's function.
    """

    def __init__(self, state: Any) -> None:
        self.state = state

    @classmethod
    def start(cls, rate: float, *, context: Any = None, at: datetime | None = None) -> DemoClock:
        """A clock that reads `at` (default: now) and runs `rate` times faster than real time."""
        context = context or multiprocessing.get_context("spawn")
        real = time.time()
        grid = (at or datetime.now(UTC)).timestamp()
        return cls(context.Array("d", [real, grid, float(rate)]))

    def grid_epoch(self, real_epoch: float) -> float:
        """The grid time (epoch seconds) at a real time (epoch seconds)."""
        with self.state.get_lock():
            anchor_real, anchor_grid, rate = self.state[:]
        return anchor_grid + (real_epoch - anchor_real) * rate

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.grid_epoch(time.time()), UTC)

    def to_grid(self, real: datetime) -> datetime:
        """Map a real (wall-clock) time onto grid time."""
        return datetime.fromtimestamp(self.grid_epoch(real.timestamp()), UTC)

    @property
    def rate(self) -> float:
        return float(self.state[2])

    def set_rate(self, rate: float) -> None:
        """Change the speed from now on; grid time never jumps or runs backwards."""
        with self.state.get_lock():
            anchor_real, anchor_grid, old = self.state[:]
            if old == rate:
                return
            real = time.time()
            self.state[:] = [real, anchor_grid + (real - anchor_real) * old, float(rate)]


class DemoTiming(TypedDict):
    """The Settings fields `scaled_timing` sets."""

    heartbeat_seconds: int
    lease_seconds: int


def scaled_timing(speedup: float) -> DemoTiming:
    """Heartbeat and lease settings (grid seconds) that survive `speedup`x grid time.

    A worker is alive for three heartbeat periods and talks every REAL_HEARTBEAT_S real
    seconds, which is `speedup` times as many grid seconds; a lease gets four periods.
    """
    heartbeat = min(3600, max(15, math.ceil(speedup * REAL_HEARTBEAT_S)))
    lease = min(86_400, max(90, 4 * heartbeat))
    return DemoTiming(heartbeat_seconds=heartbeat, lease_seconds=lease)


def map_timestamps(value: Any, to_grid: Callable[[datetime], datetime]) -> Any:
    """Every RFC 3339 timestamp string inside a JSON value, moved onto grid time."""
    if isinstance(value, dict):
        return {k: map_timestamps(v, to_grid) for k, v in value.items()}
    if isinstance(value, list):
        return [map_timestamps(v, to_grid) for v in value]
    if isinstance(value, str) and _RFC3339.match(value):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return to_grid(moment).isoformat().replace("+00:00", "Z")
    return value


class GridTimeTransport(httpx.BaseTransport):
    """The demo worker's transport: its reports speak grid time, its heartbeats real time.

    Worker JSON bodies carry wall-clock timestamps (attempt start and end, power samples,
    events); they are mapped onto the demo clock. The registration answer names heartbeat
    and lease periods in grid seconds; the worker is told the real-time equivalents.
    """

    def __init__(
        self,
        clock: DemoClock,
        real_heartbeat_s: float = REAL_HEARTBEAT_S,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self.clock = clock
        self.real_heartbeat_s = real_heartbeat_s
        self.inner = inner or httpx.HTTPTransport()

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        is_json = request.headers.get("content-type", "").startswith("application/json")
        if path.startswith("/v1/workers/") and is_json and request.method == "POST":
            body = json.loads(request.read() or b"null")
            if body is not None:
                headers = {
                    k: v for k, v in request.headers.items() if k.lower() != "content-length"
                }
                request = httpx.Request(
                    request.method,
                    request.url,
                    headers=headers,
                    content=json.dumps(map_timestamps(body, self.clock.to_grid)).encode(),
                    extensions=request.extensions,
                )
        response = self.inner.handle_request(request)
        if path == "/v1/workers/register" and response.status_code < 300:
            response.read()
            data = response.json()
            ratio = self.real_heartbeat_s / float(data.get("heartbeat_seconds") or 1.0)
            data["heartbeat_seconds"] = self.real_heartbeat_s
            data["lease_seconds"] = float(data.get("lease_seconds") or 90.0) * ratio
            return httpx.Response(response.status_code, json=data, request=request)
        return response
