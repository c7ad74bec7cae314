"""/metrics exports per-GPU gauges of live workers from the telemetry of the jobs they run,
labelled by worker id and GPU index only."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support.helpers import FakeClock
from support.telemetry_helpers import beat, gpu, running_job, telemetry


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_gpu_gauges_per_live_worker_and_index(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key, gpus=2)
    snapshot = telemetry(
        [
            gpu(0, 0, util_pct=81.0, temp_c=66.0, mem_used_mib=1024.0),
            gpu(1, 1, util_pct=79.0, temp_c=68.0, power_w=None),
            # A second report of index 1 (a misbehaving worker) does not add a series.
            gpu(2, 1, util_pct=5.0),
        ]
    )
    assert beat(worker, job_id, 3, snapshot).status_code == 200
    samples = scrape(client)
    labels = lambda index: (("gpu", str(index)), ("worker", worker.id))  # noqa: E731
    assert samples[("greenwindow_worker_gpu_utilisation_percent", labels(0))] == 81.0
    assert samples[("greenwindow_worker_gpu_utilisation_percent", labels(1))] == 79.0
    assert samples[("greenwindow_worker_gpu_temperature_celsius", labels(1))] == 68.0
    assert samples[("greenwindow_worker_gpu_memory_used_bytes", labels(0))] == 1024.0 * 2**20
    assert samples[("greenwindow_worker_gpu_power_watts", labels(0))] == 410.0
    assert ("greenwindow_worker_gpu_power_watts", labels(1)) not in samples  # not reported
    gpu_series = [key for key in samples if key[0].startswith("greenwindow_worker_gpu_util")]
    assert len(gpu_series) == 2
    assert not any(job_id in value for _, key in samples for _, value in key)

    # A worker that stopped beating drops out, with its GPUs.
    clock.advance(seconds=3 * 15 + 1)
    later = scrape(client)
    assert not [key for key in later if key[0].startswith("greenwindow_worker_gpu_util")]
