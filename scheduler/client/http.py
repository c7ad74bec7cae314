"""A small synchronous HTTP client of the greenwindow API."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from scheduler.client.config import ClientConfig

USER_AGENT = "greenwindow-cli/0.1"


class ClientError(Exception):
    """A failure the CLI prints as one line, never as a traceback."""

    def one_line(self) -> str:
        """The message shown after `error: `."""
        return str(self)


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code} {detail}".strip())
        self.status_code = status_code
        self.detail = detail


class ConnectionFailed(ClientError):
    """The server could not be reached at all."""


def error_detail(response: httpx.Response) -> str:
    """The server's own message for an error response (its `detail`), or the status phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str) and detail:
            return detail
        if isinstance(detail, list):
            # FastAPI's default validation body, from routes without the project's handler.
            return "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
                for item in detail
                if isinstance(item, dict)
            )
    text = response.text.strip().splitlines()
    return text[0][:200] if text else response.reason_phrase


def _reason(exc: httpx.TransportError) -> str:
    """A short lower-case cause, e.g. 'connection refused', from an httpx transport error."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    cause: BaseException | None = exc
    while cause is not None:
        code = getattr(cause, "errno", None)
        if code == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(code, int) and code in errno.errorcode:
            return (getattr(cause, "strerror", None) or errno.errorcode[code]).lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip()
    if "refused" in text.lower():
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return text.lower() or type(exc).__name__


def _segment(value: str) -> str:
    """A path segment with '/' and friends escaped, so an id cannot reach another route."""
    return quote(value, safe="")


class GreenwindowClient:
    """Calls the service's REST API with a team key; raises ClientError on any failure."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self.config = config
        self._http = httpx.Client(
            base_url=config.server, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> GreenwindowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; the decoded JSON body (None for an empty one)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.config.server}: {_reason(exc)}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_detail(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.config.server} answered {response.status_code} with a body that is not JSON"
            ) from None

    def submit(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a job; the created (or replayed) job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/v1/jobs", json=body, headers=headers)

    def jobs_page(
        self, *, state: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """One page of the caller's jobs, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if cursor:
            params["cursor"] = cursor
        return self.request("GET", "/v1/jobs", params=params)

    def iter_jobs(
        self, *, state: str | None = None, limit: int = 50, all_pages: bool = False
    ) -> Iterator[dict[str, Any]]:
        """The caller's jobs: the first page, or every page when `all_pages`."""
        cursor: str | None = None
        while True:
            page = self.jobs_page(state=state, cursor=cursor, limit=limit)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not all_pages or not cursor:
                return

    def job(self, job_id: str) -> dict[str, Any]:
        """One job."""
        return self.request("GET", f"/v1/jobs/{_segment(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for a job to be cancelled."""
        return self.request("POST", f"/v1/jobs/{_segment(job_id)}/cancel")

    def energy(self, job_id: str) -> dict[str, Any]:
        """The job's energy and emissions report."""
        return self.request("GET", f"/v1/jobs/{_segment(job_id)}/energy")

    def budget(self, team: str) -> dict[str, Any]:
        """The team's budget figures for the current period."""
        return self.request("GET", f"/v1/teams/{_segment(team)}/budget")

    def forecast(self, zone: str, *, hours: int = 48) -> dict[str, Any]:
        """The zone's carbon-intensity forecast."""
        return self.request("GET", f"/v1/zones/{_segment(zone)}/forecast", params={"hours": hours})
