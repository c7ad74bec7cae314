"""The JSON layer of the client: one method per API route, answers as decoded JSON.

The CLI renders these dicts directly; scripts use `GreenwindowClient` (scheduler.client.api),
which wraps this layer and parses each answer into a typed model.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from scheduler.client.config import ClientConfig
from scheduler.client.errors import ApiError, ClientError, ConnectionFailed, UnexpectedResponse

USER_AGENT = "greenwindow-cli/0.1"


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


class JsonClient:
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

    def __enter__(self) -> JsonClient:
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
            raise UnexpectedResponse(
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

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        interval_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Poll a job until it succeeds, fails or is cancelled; the final job.

        Raises ClientError when `timeout_s` passes first.
        """
        waited = 0.0
        while True:
            job = self.job(job_id)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if timeout_s is not None and waited >= timeout_s:
                raise ClientError(f"job {job_id} still {job['state']} after {waited:.0f} s")
            sleep(interval_s)
            waited += interval_s

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for a job to be cancelled."""
        return self.request("POST", f"/v1/jobs/{_segment(job_id)}/cancel")

    def energy(self, job_id: str) -> dict[str, Any]:
        """The job's energy and emissions report."""
        return self.request("GET", f"/v1/jobs/{_segment(job_id)}/energy")

    def budget(self, team: str) -> dict[str, Any]:
        """The team's budget figures for the current period."""
        return self.request("GET", f"/v1/teams/{_segment(team)}/budget")

    def budget_history(self, team: str) -> dict[str, Any]:
        """How the team's budget burned this period (cumulative actual, committed)."""
        return self.request("GET", f"/v1/teams/{_segment(team)}/budget/history")

    def forecast(self, zone: str, *, hours: int = 48) -> dict[str, Any]:
        """The zone's carbon-intensity forecast."""
        return self.request("GET", f"/v1/zones/{_segment(zone)}/forecast", params={"hours": hours})

    # -- datasets and artifacts ------------------------------------------------------------

    def upload_dataset(self, archive: Path, *, name: str | None = None) -> dict[str, Any]:
        """Upload a dataset zip (streamed from disk); the stored dataset."""
        params = {"name": name} if name else None
        with archive.open("rb") as body:
            return self.request(
                "POST",
                "/v1/datasets",
                params=params,
                content=body,
                headers={"Content-Type": "application/zip"},
                timeout=None,
            )

    def datasets(self) -> list[dict[str, Any]]:
        """The team's datasets, newest first."""
        return self.request("GET", "/v1/datasets")

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """One dataset."""
        return self.request("GET", f"/v1/datasets/{_segment(dataset_id)}")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The files a job stored: name, size, sha256, attempt."""
        return self.request("GET", f"/v1/jobs/{_segment(job_id)}/artifacts")

    def download_artifact(
        self,
        job_id: str,
        artifact: Mapping[str, Any],
        out_dir: Path,
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Path:
        """Stream one artifact into `out_dir`, checking its sha256 before it takes its name.

        A partial or corrupt download never appears under the artifact's name.
        """
        name = str(artifact["name"])
        if name != Path(name).name or name in ("", ".", ".."):
            raise ClientError(f"refusing artifact name {name!r}: not a plain file name")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / name
        partial = out_dir / f".{name}.part"
        digest = hashlib.sha256()
        path = f"/v1/jobs/{_segment(job_id)}/artifacts/{_segment(name)}"
        try:
            with self._http.stream("GET", path, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, error_detail(response))
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
                        digest.update(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ConnectionFailed(f"cannot reach {self.config.server}: {_reason(exc)}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != artifact["sha256"]:
            partial.unlink(missing_ok=True)
            raise ClientError(
                f"{name}: sha256 {digest.hexdigest()} does not match the listed "
                f"{artifact['sha256']}; nothing was kept"
            )
        os.replace(partial, target)
        return target

    # -- administration (the admin token as key) -------------------------------------------

    def create_team(self, name: str, *, webhook_url: str | None = None) -> dict[str, Any]:
        """Create a team; its first key is in the answer, shown once."""
        body: dict[str, Any] = {"name": name}
        if webhook_url:
            body["webhook_url"] = webhook_url
        return self.request("POST", "/v1/teams", json=body)

    def teams(self) -> list[dict[str, Any]]:
        """Every team with its keys (without secrets)."""
        return self.request("GET", "/v1/teams")

    def create_key(self, team: str) -> dict[str, Any]:
        """A new key for a team, shown once."""
        return self.request("POST", f"/v1/teams/{_segment(team)}/keys")

    def revoke_key(self, team: str, key_id: str) -> dict[str, Any]:
        """Revoke one of a team's keys."""
        return self.request("DELETE", f"/v1/teams/{_segment(team)}/keys/{_segment(key_id)}")

    def set_budget(self, team: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Set or replace a team's budget; its figures."""
        return self.request("PUT", f"/v1/teams/{_segment(team)}/budget", json=spec)

    def set_tariff(self, zone: str, schedule: dict[str, Any]) -> dict[str, Any]:
        """Set a zone's time-of-use tariff."""
        return self.request("PUT", f"/v1/zones/{_segment(zone)}/tariff", json=schedule)

    def workers(self) -> list[dict[str, Any]]:
        """The registered workers with their liveness and GPUs."""
        return self.request("GET", "/v1/workers")
