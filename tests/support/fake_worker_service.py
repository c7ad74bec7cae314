"""A FAKE of the service side of docs/worker-protocol.md, served through httpx.MockTransport.

It keeps just enough state (workers, a job queue, leases, artifacts, datasets) to drive the
agent through the protocol, and it enforces what the real service must: bearer tokens,
fencing by attempt + lease token (409), and the SHA-256 of uploaded artifacts. It is not the
service: end-to-end tests against scheduler/ belong beside it once that exists.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

FLEET_TOKEN = "fleet-secret"
CHECKPOINT = "checkpoint.tar"

ActionRule = Callable[["FakeJob", dict[str, Any]], str]
UploadHook = Callable[["FakeJob", str], None]


@dataclass(frozen=True)
class Upload:
    """One artifact PUT the fake service accepted."""

    job_id: str
    name: str
    attempt: int
    data: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class FakeJob:
    """One job as the fake service tracks it."""

    id: str
    kind: str
    config: dict[str, Any]
    gpus: int = 1
    dataset_id: str | None = None
    zone: str = "ES"
    state: str = "scheduled"
    attempt: int = 0
    lease_token: str | None = None
    action_rule: ActionRule | None = None
    corrupt_resume: bool = False
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    finishes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)

    def steps_seen(self, attempt: int | None = None) -> list[int]:
        """Progress steps reported in heartbeats (optionally of one attempt)."""
        return [
            beat["progress"]["step"]
            for beat in self.heartbeats
            if "step" in beat.get("progress", {})
            and (attempt is None or beat["attempt"] == attempt)
        ]

    def events(self) -> list[dict[str, Any]]:
        """Every event the worker sent with its heartbeats."""
        return [event for beat in self.heartbeats for event in beat.get("events", [])]


class FakeService:
    """The fake service; ``transport()`` plugs it into an httpx client."""

    def __init__(self, *, heartbeat_seconds: float = 0.2) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self.lock = threading.Lock()
        self.jobs: dict[str, FakeJob] = {}
        self.worker_tokens: dict[str, str] = {}
        self.registrations: list[dict[str, Any]] = []
        self.worker_heartbeats: list[dict[str, Any]] = []
        self.artifacts: dict[str, dict[str, bytes]] = {}
        # The status answered to each of `requests`, in the same order.
        self.statuses: list[int] = []
        self.datasets: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.server_errors_before_claim = 0
        self.upload_delay_seconds = 0.0
        self.uploads: list[Upload] = []  # every accepted PUT, in order (artifacts keeps the last)
        self.before_upload: UploadHook | None = None  # runs before the fence check
        self._ids = itertools.count(1)

    def add_job(self, kind: str, config: dict[str, Any], **fields: Any) -> FakeJob:
        """Queue a job."""
        job = FakeJob(id=f"job-{next(self._ids)}", kind=kind, config=config, **fields)
        self.jobs[job.id] = job
        return job

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering as this service."""
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and self.upload_delay_seconds:
            time.sleep(self.upload_delay_seconds)  # a slow link, outside the lock
        with self.lock:
            self.requests.append((request.method, request.url.path))
            try:
                response = self._route(request)
            except _Reply as reply:
                response = httpx.Response(reply.status, json=reply.body)
            self.statuses.append(response.status_code)
            return response

    def _route(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if path == "/v1/workers/register" and method == "POST":
            if token != FLEET_TOKEN:
                raise _Reply(401, {"detail": "bad fleet token"})
            return self._register(json.loads(request.content))
        worker_id = next((w for w, t in self.worker_tokens.items() if t == token), None)
        if worker_id is None:
            raise _Reply(401, {"detail": "bad worker token"})
        body = json.loads(request.content) if request.content and method == "POST" else {}
        if match := re.fullmatch(r"/v1/workers/([^/]+)/heartbeat", path):
            self.worker_heartbeats.append(body)
            return httpx.Response(200, json={"ok": True})
        if re.fullmatch(r"/v1/workers/([^/]+)/claim", path):
            return self._claim()
        if match := re.fullmatch(r"/v1/workers/[^/]+/jobs/([^/]+)/(\w+)", path):
            return self._job_call(self._job(match[1]), match[2], body)
        if match := re.fullmatch(r"/v1/jobs/([^/]+)/artifacts/([^/]+)", path):
            job = self._job(match[1])
            if method == "PUT":
                return self._store_artifact(job, match[2], request)
            data = self.artifacts.get(job.id, {}).get(match[2])
            if data is None:
                raise _Reply(404, {"detail": "no such artifact"})
            return httpx.Response(200, content=data)
        if match := re.fullmatch(r"/v1/datasets/([^/]+)/archive", path):
            return httpx.Response(200, content=self.datasets[match[1]])
        raise _Reply(404, {"detail": f"no route {method} {path}"})

    def _register(self, body: dict[str, Any]) -> httpx.Response:
        worker_id = f"worker-{len(self.worker_tokens) + 1}"
        self.worker_tokens[worker_id] = f"token-{worker_id}"
        self.registrations.append(body)
        return httpx.Response(
            201,
            json={
                "worker_id": worker_id,
                "token": self.worker_tokens[worker_id],
                "heartbeat_seconds": self.heartbeat_seconds,
                "lease_seconds": 90,
            },
        )

    def _claim(self) -> httpx.Response:
        if self.server_errors_before_claim > 0:
            self.server_errors_before_claim -= 1
            raise _Reply(503, {"detail": "try later"})
        job = next((j for j in self.jobs.values() if j.state == "scheduled"), None)
        if job is None:
            return httpx.Response(204)
        job.state = "running"
        job.attempt += 1
        job.lease_token = f"lease-{job.id}-{job.attempt}"
        body: dict[str, Any] = {
            "job": {
                "id": job.id,
                "name": job.id,
                "kind": job.kind,
                "config": job.config,
                "dataset": {"id": job.dataset_id} if job.dataset_id else None,
                "gpus": job.gpus,
                "interruptible": True,
                "zone": job.zone,
            },
            "attempt": job.attempt,
            "lease_token": job.lease_token,
            "lease_expires_at": "2030-01-01T00:00:00Z",
        }
        stored = self.artifacts.get(job.id, {}).get(CHECKPOINT)
        if stored is not None:
            digest = hashlib.sha256(stored).hexdigest()
            body["resume_from"] = {
                "artifact": CHECKPOINT,
                "sha256": "0" * 64 if job.corrupt_resume else digest,
            }
        job.claims.append(body)
        return httpx.Response(200, json=body)

    def _job(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs:
            raise _Reply(404, {"detail": "no such job"})
        return self.jobs[job_id]

    @staticmethod
    def _fence(job: FakeJob, attempt: Any, lease_token: Any) -> None:
        if job.state != "running" or int(attempt) != job.attempt or lease_token != job.lease_token:
            raise _Reply(409, {"detail": "lease lost"})

    def _job_call(self, job: FakeJob, verb: str, body: dict[str, Any]) -> httpx.Response:
        self._fence(job, body.get("attempt"), body.get("lease_token"))
        if verb == "heartbeat":
            job.heartbeats.append(body)
            action = job.action_rule(job, body) if job.action_rule else "continue"
            return httpx.Response(
                200, json={"action": action, "lease_expires_at": "2030-01-01T00:00:00Z"}
            )
        if verb not in ("complete", "fail", "release"):
            raise _Reply(404, {"detail": f"no verb {verb}"})
        job.finishes.append((verb, body))
        if verb == "complete":
            job.state = "succeeded"
        elif verb == "fail":
            job.state = "cancelled" if body.get("cancelled") else "failed"
        else:
            job.state = "scheduled"
        return httpx.Response(200, json={"ok": True})

    def _store_artifact(self, job: FakeJob, name: str, request: httpx.Request) -> httpx.Response:
        if self.before_upload is not None:
            self.before_upload(job, name)
        self._fence(job, request.headers.get("x-attempt"), request.headers.get("x-lease-token"))
        data = request.content
        digest = hashlib.sha256(data).hexdigest()
        if digest != request.headers.get("x-content-sha256"):
            raise _Reply(400, {"detail": "checksum mismatch"})
        self.artifacts.setdefault(job.id, {})[name] = data
        self.uploads.append(Upload(job.id, name, job.attempt, data, time.monotonic()))
        return httpx.Response(201, json={"name": name, "size": len(data), "sha256": digest})


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
