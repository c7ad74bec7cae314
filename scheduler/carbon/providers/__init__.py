"""Carbon-intensity providers: a bundled trace, Electricity Maps, WattTime, GB Carbon Intensity."""

from __future__ import annotations

from scheduler.carbon.providers.base import (
    PLANS,
    CarbonProvider,
    ProviderAuthError,
    ProviderDataError,
    ProviderError,
    ProviderPlanLimit,
    ProviderUnavailable,
)
from scheduler.carbon.providers.factory import PROVIDER_NAMES, make_provider
from scheduler.carbon.providers.trace import DEFAULT_ZONE, default_trace_path

__all__ = [
    "DEFAULT_ZONE",
    "PLANS",
    "PROVIDER_NAMES",
    "CarbonProvider",
    "ProviderAuthError",
    "ProviderDataError",
    "ProviderError",
    "ProviderPlanLimit",
    "ProviderUnavailable",
    "default_trace_path",
    "make_provider",
]
