"""WorkerClient against the fake service (fake_worker_service.py) and scripted transports."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from support.fake_worker_service import FLEET_TOKEN, FakeService

from worker.client import ChecksumMismatch, LeaseLost, ProtocolError, WorkerClient


def client_for(transport: httpx.BaseTransport, **kwargs: object) -> WorkerClient:
    return WorkerClient(
        "http://service", FLEET_TOKEN, transport=transport, sleep=lambda _: None, **kwargs
    )


def registered(service: FakeService) -> WorkerClient:
    client = client_for(service.transport())
    client.register(host="h", zone="ES", gpus=[], cpu_only=True, version="0.1.0")
    return client


def test_register_then_claim_uses_the_worker_token() -> None:
    service = FakeService(heartbeat_seconds=7)
    client = client_for(service.transport())
    registration = client.register(
        host="gpu-01", zone="ES", gpus=[], cpu_only=True, version="0.1.0"
    )
    assert registration.heartbeat_seconds == 7 and client.worker_id == "worker-1"
    assert service.registrations[0]["host"] == "gpu-01"
    assert client.claim() is None  # 204: nothing queued
    job = service.add_job("burn-in", {"steps": 3})
    claim = client.claim()
    assert claim is not None and claim.job_id == job.id and claim.attempt == 1
    assert claim.resume_from is None


def test_wrong_fleet_token_is_a_protocol_error() -> None:
    client = WorkerClient("http://service", "nope", transport=FakeService().transport())
    with pytest.raises(ProtocolError) as raised:
        client.register(host="h", zone=None, gpus=[], cpu_only=True, version="0")
    assert raised.value.status_code == 401


def test_fenced_calls_raise_lease_lost() -> None:
    service = FakeService()
    client = registered(service)
    job = service.add_job("burn-in", {})
    claim = client.claim()
    assert claim is not None
    assert client.job_heartbeat(claim, progress={}, energy={})["action"] == "continue"
    job.lease_token = "taken-by-another-worker"
    with pytest.raises(LeaseLost):
        client.job_heartbeat(claim, progress={}, energy={})
    with pytest.raises(LeaseLost):
        client.complete(claim, energy={}, result={})


class Scripted(httpx.BaseTransport):
    """Fails the first ``failures`` requests (with an exception or a status), then answers."""

    def __init__(self, failures: list[Exception | int], answer: httpx.Response) -> None:
        self.failures = list(failures)
        self.answer = answer
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"detail": "down"})
        return self.answer


def with_worker(client: WorkerClient) -> WorkerClient:
    client.worker_id = "w1"
    return client


def test_idempotent_calls_retry_on_5xx_and_transport_errors() -> None:
    transport = Scripted(
        [503, httpx.ReadTimeout("slow"), 502], httpx.Response(200, json={"ok": True})
    )
    with_worker(client_for(transport)).heartbeat([])
    assert transport.calls == 4


def test_retries_give_up_after_the_limit() -> None:
    transport = Scripted([503] * 5, httpx.Response(200, json={"ok": True}))
    with pytest.raises(ProtocolError):
        with_worker(client_for(transport, retries=2)).heartbeat([])
    assert transport.calls == 3


def test_claim_is_not_retried_after_the_request_may_have_arrived() -> None:
    transport = Scripted([503], httpx.Response(204))
    with pytest.raises(ProtocolError):
        with_worker(client_for(transport)).claim()
    timeout = Scripted([httpx.ReadTimeout("slow")], httpx.Response(204))
    with pytest.raises(httpx.ReadTimeout):
        with_worker(client_for(timeout)).claim()
    assert timeout.calls == 1


def test_claim_retries_when_the_connection_was_never_made() -> None:
    transport = Scripted([httpx.ConnectError("refused")], httpx.Response(204))
    assert with_worker(client_for(transport)).claim() is None
    assert transport.calls == 2


def test_artifact_round_trip_with_checksums(tmp_path: Path) -> None:
    service = FakeService()
    client = registered(service)
    job = service.add_job("burn-in", {})
    claim = client.claim()
    assert claim is not None
    source = tmp_path / "adapter.bin"
    source.write_bytes(b"weights" * 300_000)  # several streamed chunks
    stored = client.upload_artifact(claim, "adapter.bin", source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert stored["sha256"] == digest
    assert service.artifacts[job.id]["adapter.bin"] == source.read_bytes()
    copy = client.download_artifact(
        job.id, "adapter.bin", tmp_path / "copy.bin", expected_sha256=digest
    )
    assert copy.read_bytes() == source.read_bytes()
    with pytest.raises(ChecksumMismatch):
        client.download_artifact(
            job.id, "adapter.bin", tmp_path / "bad.bin", expected_sha256="0" * 64
        )
    assert not (tmp_path / "bad.bin").exists()
    assert not (tmp_path / "bad.bin.partial").exists()


def test_upload_after_losing_the_lease_is_refused(tmp_path: Path) -> None:
    service = FakeService()
    client = registered(service)
    job = service.add_job("burn-in", {})
    claim = client.claim()
    assert claim is not None
    job.attempt += 1  # another worker claimed it since
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(LeaseLost):
        client.upload_artifact(claim, "x", path)
    assert job.id not in service.artifacts
