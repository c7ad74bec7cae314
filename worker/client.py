"""HTTP client for the worker side of docs/worker-protocol.md.

Retries: idempotent calls (heartbeats, finishing calls fenced by the lease, artifact PUT,
downloads) are retried with exponential backoff on transport errors and 5xx. Calls that
create something (register, claim) are retried only when the connection was never made, so
a retry can never claim a second job.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CHUNK_BYTES = 1024 * 1024


class LeaseLost(Exception):
    """The service answered 409: this worker no longer holds the job's lease."""


class ProtocolError(Exception):
    """The service answered with an unexpected status."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ChecksumMismatch(Exception):
    """A transferred file's SHA-256 is not the expected one."""


@dataclass(frozen=True)
class Registration:
    """What the service returns on register."""

    worker_id: str
    token: str
    heartbeat_seconds: float
    lease_seconds: float


@dataclass(frozen=True)
class Claim:
    """A job handed to this worker, with its lease."""

    job: dict[str, Any]
    attempt: int
    lease_token: str
    lease_expires_at: str | None
    resume_from: dict[str, Any] | None
    # The prepared dataset an earlier attempt uploaded (artifact, sha256, attempt), if any.
    prepared_from: dict[str, Any] | None = None

    @property
    def job_id(self) -> str:
        """The claimed job's id."""
        return str(self.job["id"])

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Claim:
        """Parse a claim response body."""
        return cls(
            job=body["job"],
            attempt=int(body["attempt"]),
            lease_token=body["lease_token"],
            lease_expires_at=body.get("lease_expires_at"),
            resume_from=body.get("resume_from"),
            prepared_from=body.get("prepared_from"),
        )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


class WorkerClient:
    """Speaks the worker protocol; thread-safe (one httpx client underneath)."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=server.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
        )
        self._fleet_token = token
        self._token = token
        self._retries = retries
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._sleep = sleep
        self.worker_id: str | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _headers(
        self, extra: dict[str, str] | None = None, *, token: str | None = None
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self._token}", **(extra or {})}

    def _delay(self, attempt: int) -> float:
        # Full jitter keeps a fleet of workers from retrying in lockstep after an outage.
        return random.uniform(0, min(self._max_backoff, self._backoff * 2**attempt))

    def _send(
        self, build: Callable[[], httpx.Request], *, idempotent: bool, stream: bool = False
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(build(), stream=stream)
            except httpx.ConnectError:
                if attempt >= self._retries:
                    raise
            except httpx.TransportError:
                if not idempotent or attempt >= self._retries:
                    raise
            else:
                if response.status_code < 500 or not idempotent or attempt >= self._retries:
                    return response
                response.close()
            self._sleep(self._delay(attempt))
            attempt += 1

    def _json_call(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        *,
        idempotent: bool,
        token: str | None = None,
    ) -> httpx.Response:
        response = self._send(
            lambda: self._http.build_request(
                method, url, json=body, headers=self._headers(token=token)
            ),
            idempotent=idempotent,
        )
        self._check(response, url)
        return response

    @staticmethod
    def _check(response: httpx.Response, url: str) -> None:
        if response.status_code == 409:
            raise LeaseLost(f"{url}: lease lost ({response.text[:200]})")
        if response.status_code >= 400:
            if not response.is_closed:
                response.read()
            raise ProtocolError(
                f"{url}: HTTP {response.status_code}: {response.text[:500]}",
                response.status_code,
            )

    def _worker_url(self, suffix: str) -> str:
        if self.worker_id is None:
            raise RuntimeError("register() first")
        return f"/v1/workers/{self.worker_id}{suffix}"

    def register(
        self,
        *,
        host: str,
        zone: str | None,
        gpus: list[dict[str, Any]],
        cpu_only: bool,
        version: str,
        bases: list[str] | None = None,
    ) -> Registration:
        """Register with the fleet token; later calls use the returned worker token."""
        body = {
            "host": host,
            "zone": zone,
            "gpus": gpus,
            "cpu_only": cpu_only,
            "version": version,
            "bases": bases or ["none"],
        }
        data = self._json_call(
            "POST", "/v1/workers/register", body, idempotent=False, token=self._fleet_token
        ).json()
        registration = Registration(
            worker_id=str(data["worker_id"]),
            token=data["token"],
            heartbeat_seconds=float(data.get("heartbeat_seconds", 15)),
            lease_seconds=float(data.get("lease_seconds", 90)),
        )
        self.worker_id = registration.worker_id
        self._token = registration.token
        return registration

    def heartbeat(self, gpu_watts: list[dict[str, Any]]) -> None:
        """Worker liveness, with the current power per GPU."""
        self._json_call(
            "POST", self._worker_url("/heartbeat"), {"gpu_watts": gpu_watts}, idempotent=True
        )

    def claim(self) -> Claim | None:
        """Ask for a job; None when nothing fits."""
        response = self._json_call("POST", self._worker_url("/claim"), {}, idempotent=False)
        if response.status_code == 204 or not response.content:
            return None
        return Claim.from_json(response.json())

    def job_heartbeat(
        self,
        claim: Claim,
        *,
        progress: dict[str, Any],
        energy: dict[str, Any],
        events: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Renew the lease; returns the service's answer with its ``action``."""
        body: dict[str, Any] = {
            "attempt": claim.attempt,
            "lease_token": claim.lease_token,
            "progress": progress,
            "energy": energy,
        }
        if events:
            body["events"] = events
        url = self._worker_url(f"/jobs/{claim.job_id}/heartbeat")
        return self._json_call("POST", url, body, idempotent=True).json()

    def _finish(self, claim: Claim, verb: str, body: dict[str, Any]) -> None:
        fenced = {"attempt": claim.attempt, "lease_token": claim.lease_token, **body}
        url = self._worker_url(f"/jobs/{claim.job_id}/{verb}")
        self._json_call("POST", url, fenced, idempotent=True)

    def complete(self, claim: Claim, *, energy: dict[str, Any], result: dict[str, Any]) -> None:
        """Report success with the attempt energy report."""
        self._finish(claim, "complete", {"energy": energy, "result": result})

    def fail(
        self,
        claim: Claim,
        *,
        energy: dict[str, Any],
        error: str,
        retryable: bool,
        cancelled: bool = False,
    ) -> None:
        """Report failure (or a completed cancellation)."""
        self._finish(
            claim,
            "fail",
            {"energy": energy, "error": error, "retryable": retryable, "cancelled": cancelled},
        )

    def release(self, claim: Claim, *, energy: dict[str, Any], reason: str) -> None:
        """Give the job back (``paused`` or ``shutdown``); it resumes from its checkpoint."""
        self._finish(claim, "release", {"energy": energy, "reason": reason})

    def orphan_energy(self, claim: Claim, *, energy: dict[str, Any]) -> None:
        """Send the energy report of an attempt whose lease was lost, so it is still charged."""
        self._finish(claim, "orphan-energy", {"energy": energy})

    def upload_artifact(self, claim: Claim, name: str, path: Path) -> dict[str, Any]:
        """Stream a file to the job's artifacts; the service verifies its SHA-256."""
        sha256 = file_sha256(path)
        url = f"/v1/jobs/{claim.job_id}/artifacts/{name}"
        headers = self._headers(
            {
                "X-Attempt": str(claim.attempt),
                "X-Lease-Token": claim.lease_token,
                "X-Content-SHA256": sha256,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            }
        )
        response = self._send(
            lambda: self._http.build_request(
                "PUT", url, content=_stream_file(path), headers=headers
            ),
            idempotent=True,
        )
        self._check(response, url)
        data = response.json()
        if data.get("sha256") not in (None, sha256):
            raise ChecksumMismatch(f"{name}: service stored {data['sha256']}, sent {sha256}")
        return data

    def list_artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's artifacts."""
        return self._json_call("GET", f"/v1/jobs/{job_id}/artifacts", None, idempotent=True).json()

    def download_artifact(
        self, job_id: str, name: str, dest: Path, *, expected_sha256: str | None = None
    ) -> Path:
        """Download an artifact to ``dest``, checking its SHA-256 when one is expected."""
        return self._download(f"/v1/jobs/{job_id}/artifacts/{name}", dest, expected_sha256)

    def download_dataset(self, dataset_id: str, dest: Path) -> Path:
        """Download a dataset archive (zip) to ``dest``."""
        return self._download(f"/v1/datasets/{dataset_id}/archive", dest, None)

    def _download(self, url: str, dest: Path, expected_sha256: str | None) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        attempt = 0
        while True:
            try:
                digest = self._download_once(url, partial)
                break
            except httpx.TransportError:
                # A transfer cut mid-body starts over; the service has no ranged GETs.
                if attempt >= self._retries:
                    raise
                self._sleep(self._delay(attempt))
                attempt += 1
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{url}: got sha256 {digest.hexdigest()}, expected {expected_sha256}"
            )
        os.replace(partial, dest)
        return dest

    def _download_once(self, url: str, partial: Path) -> Any:
        response = self._send(
            lambda: self._http.build_request("GET", url, headers=self._headers()),
            idempotent=True,
            stream=True,
        )
        try:
            self._check(response, url)
            digest = hashlib.sha256()
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    digest.update(chunk)
                    handle.write(chunk)
            return digest
        finally:
            response.close()
