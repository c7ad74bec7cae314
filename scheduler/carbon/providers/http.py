"""A small JSON-over-HTTP helper shared by the providers: timeouts, retries, clear errors."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from scheduler.carbon.providers.base import (
    ProviderAuthError,
    ProviderDataError,
    ProviderError,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential delay before retry number `attempt` (1-based), half of it jittered."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        # Jitter spreads retries of many replicas hitting the same outage.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), if readable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _detail(response: httpx.Response, limit: int = 300) -> str:
    """A short, single-line excerpt of an error body for messages: the body's own
    `message` / `error` text when it is JSON carrying one, else the raw body."""
    text = response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]  # UK CI: {"error": {"code": "400 Bad Request", "message": ...}}
    if isinstance(body, dict):
        said = [body[key] for key in ("error", "message") if isinstance(body.get(key), str)]
        # WattTime sends both, the message repeating the error: keep the longer one.
        if said:
            text = max(said, key=len)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


class HttpClient:
    """GET JSON from one provider's API, retrying connect errors, timeouts, 5xx and 429."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        auth_hint: str = "",
    ) -> None:
        self.provider = provider
        self.retry = retry or RetryPolicy()
        self.auth_hint = auth_hint
        self._sleep = sleep or time.sleep
        self._rng = rng or random.Random()
        self._client = httpx.Client(
            base_url=base_url,
            transport=transport,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            follow_redirects=True,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> Any:
        """GET `path` and decode its JSON body, raising a ProviderError subclass on failure."""
        response = self._get_with_retries(path, params, headers, auth)
        try:
            return response.json()
        except ValueError:
            raise ProviderDataError(
                f"{self.provider}: {path} returned a body that is not JSON: {_detail(response)}",
                status_code=response.status_code,
            ) from None

    def _get_with_retries(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | tuple[str, str] | None,
    ) -> httpx.Response:
        last_problem = ""
        for attempt in range(1, self.retry.attempts + 1):
            wait: float | None = None
            try:
                response = self._client.get(
                    path, params=dict(params or {}), headers=dict(headers or {}), auth=auth
                )
            except httpx.TimeoutException as exc:
                last_problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last_problem = f"could not connect ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status == 429 or status >= 500:
                    last_problem = f"HTTP {status}"
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                else:
                    raise self._client_error(path, response)
            if attempt == self.retry.attempts:
                break
            if wait is None:
                wait = self.retry.backoff(attempt, self._rng)
            wait = min(wait, self.retry.max_delay_s)
            log.warning(
                "%s: %s %s; retry %d/%d in %.1f s",
                self.provider,
                path,
                last_problem,
                attempt,
                self.retry.attempts - 1,
                wait,
            )
            self._sleep(wait)
        raise ProviderUnavailable(
            f"{self.provider}: {path} unavailable after {self.retry.attempts} attempts "
            f"({last_problem})"
        )

    def _client_error(self, path: str, response: httpx.Response) -> ProviderError:
        status = response.status_code
        hint = f"; {self.auth_hint}" if self.auth_hint else ""
        detail = _detail(response)
        if status == 401:
            return ProviderAuthError(
                f"{self.provider}: token rejected (HTTP 401){hint}",
                status_code=status,
                detail=detail,
            )
        if status == 403:
            return ProviderAuthError(
                f"{self.provider}: access to {path} denied (HTTP 403): {detail}{hint}",
                status_code=status,
                detail=detail,
            )
        return ProviderError(
            f"{self.provider}: {path} was refused (HTTP {status}): {detail}",
            status_code=status,
            detail=detail,
        )
