"""Build a carbon provider by name from the operator's settings."""

from __future__ import annotations

from pathlib import Path

import httpx

from scheduler.carbon.providers.base import CarbonProvider, Clock, ProviderError
from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.http import Sleep
from scheduler.carbon.providers.trace import TraceProvider
from scheduler.carbon.providers.ukci import UkciProvider
from scheduler.carbon.providers.watttime import WattTimeProvider

PROVIDER_NAMES = ("trace", "electricitymaps", "watttime", "ukci")


def make_provider(
    name: str,
    *,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    trace_path: str | Path | None = None,
    clock: Clock | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep | None = None,
    signal_type: str | None = None,
) -> CarbonProvider:
    """The provider called `name`; missing credentials fail here rather than at first use.

    `signal_type` only matters for WattTime ("marginal", the default, or "average");
    `sleep` replaces the pause between HTTP retries (tests pass a no-op).
    """
    if name == "trace":
        return TraceProvider(trace_path, clock=clock)
    if name == "electricitymaps":
        return ElectricityMapsProvider(token, clock=clock, transport=transport, sleep=sleep)
    if name == "watttime":
        return WattTimeProvider(
            username,
            password,
            signal_type=signal_type or "marginal",
            clock=clock,
            transport=transport,
            sleep=sleep,
        )
    if name == "ukci":
        return UkciProvider(clock=clock, transport=transport, sleep=sleep)
    raise ProviderError(f"unknown carbon provider {name!r}; expected one of {PROVIDER_NAMES}")
