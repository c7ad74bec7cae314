"""Build a carbon provider by name from the operator's settings."""

from __future__ import annotations

from pathlib import Path

import httpx

from scheduler.carbon.providers.base import PLANS, CarbonProvider, Clock, ProviderError
from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.http import Sleep
from scheduler.carbon.providers.trace import TraceProvider
from scheduler.carbon.providers.ukci import UkciProvider
from scheduler.carbon.providers.watttime import WattTimeProvider

PROVIDER_NAMES = ("trace", "electricitymaps", "watttime", "ukci")


def plan_for(setting: str, provider: str) -> str:
    """The plan of `provider` from GREENWINDOW_CARBON_PLAN: `free`, `paid`, or
    `provider=plan` pairs (a provider not named there is on the free plan)."""
    if setting in PLANS:
        return setting
    pairs = dict(part.split("=", 1) for part in setting.split(",") if "=" in part)
    return pairs.get(provider, "free")


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
    plan: str = "free",
    base_url: str | None = None,
) -> CarbonProvider:
    """The provider called `name`; missing credentials fail here rather than at first use.

    `signal_type` only matters for WattTime ("marginal", the default, or "average");
    `plan` ("free" or "paid") picks the endpoints Electricity Maps and WattTime may call
    (UK CI is open to all, the trace is local); `base_url` replaces the provider's own
    (a proxy, a mirror, a test server); `sleep` replaces the pause between HTTP retries
    (tests pass a no-op).
    """
    if plan not in PLANS:
        raise ProviderError(f"carbon plan must be one of {PLANS}, not {plan!r}")
    if name == "trace":
        return TraceProvider(trace_path, clock=clock)
    if name == "electricitymaps":
        return ElectricityMapsProvider(
            token, plan=plan, clock=clock, transport=transport, sleep=sleep, base_url=base_url
        )
    if name == "watttime":
        return WattTimeProvider(
            username,
            password,
            signal_type=signal_type or "marginal",
            plan=plan,
            clock=clock,
            transport=transport,
            sleep=sleep,
            base_url=base_url,
        )
    if name == "ukci":
        return UkciProvider(clock=clock, transport=transport, sleep=sleep, base_url=base_url)
    raise ProviderError(f"unknown carbon provider {name!r}; expected one of {PROVIDER_NAMES}")
