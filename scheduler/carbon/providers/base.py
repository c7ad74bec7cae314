"""The carbon-signal provider interface and its errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from scheduler.carbon.series import IntensitySeries

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC; the default clock of every provider."""
    return datetime.now(UTC)


PLANS = ("free", "paid")


class ProviderError(Exception):
    """A carbon provider could not answer; the message says which one and why."""

    def __init__(
        self, message: str, *, status_code: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        # A short excerpt of the provider's error body, when there was one.
        self.detail = detail


class ProviderAuthError(ProviderError):
    """The provider rejected the credentials (or the account may not read that zone)."""


class ProviderPlanLimit(ProviderError):
    """The account's plan does not include an endpoint (or a region, or a signal).

    Not a bad credential: the same token works for the endpoints the plan has. `endpoint`
    names the one that is out of reach.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status_code: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, detail=detail)
        self.endpoint = endpoint


class ProviderUnavailable(ProviderError):
    """The provider is down, timed out, or kept answering 5xx / 429 after retries."""


class ProviderDataError(ProviderError):
    """The provider answered, but not with data in the documented shape."""


@runtime_checkable
class CarbonProvider(Protocol):
    """A source of carbon intensity for grid zones: now, past and forecast."""

    name: str
    signal_type: str

    def current(self, zone: str) -> tuple[datetime, float]:
        """Start of the latest slot and its intensity in gCO2e/kWh."""
        ...

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        """Observed intensity for the slots overlapping `[start, end)`."""
        ...

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        """Forecast intensity from the current slot for (up to) `hours` ahead."""
        ...
