"""Memory-aware placement: per-device memory needs (declared, prior, learned from measured
peaks), claims that never hand a job to a worker whose GPUs cannot hold it, the planner's
capacity, and the gradient-checkpointing slowdown in time estimates."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, make_ready
from support.helpers import WORKER_TOKEN, FakeClock, bearer, burn_in_job
from support.telemetry_helpers import beat, gpu, running_job, telemetry

from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.planning import estimate, memory
from scheduler.planning.memory import MemoryModel, memory_signature, prior_need_mib
from scheduler.teams.models import Team
from scheduler.telemetry.memory import memory_model
from worker.training.config import FinetuneConfig


def register(client: TestClient, host: str, memory_mib: int | None, gpus: int = 1) -> WorkerSession:
    body = {
        "host": host,
        "zone": "ES",
        "gpus": [
            {"index": i, "uuid": f"GPU-{host}-{i}", "name": "NVIDIA L4", "memory_mib": memory_mib}
            for i in range(gpus)
        ],
        "cpu_only": False,
        "version": "test",
    }
    response = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert response.status_code == 201, response.text
    return WorkerSession(client, response.json())


def submit(client: TestClient, key: str, **config: Any) -> str:
    body = burn_in_job(config={"steps": 5, **config})
    response = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


# -- the estimator (pure) ------------------------------------------------------------------


def test_prior_need_follows_batch_precision_checkpointing_and_full_finetune() -> None:
    base = FinetuneConfig(stage="s2", model_size="v2", batch_size=8)
    need = prior_need_mib(base)
    assert need == pytest.approx((4_500 + 2 * 32 + 900 * 8) * memory.PRIOR_MARGIN)
    assert prior_need_mib(base.model_copy(update={"batch_size": 16})) > need
    assert prior_need_mib(base.model_copy(update={"precision": "fp32"})) > need
    checkpointed = prior_need_mib(base.model_copy(update={"grad_checkpointing": True}))
    assert checkpointed == pytest.approx(
        (4_500 + 2 * 32 + 900 * 8 * memory.CHECKPOINT_ACTIVATION_SHARE) * memory.PRIOR_MARGIN
    )
    assert prior_need_mib(base.model_copy(update={"lora_rank": 0})) > need
    both = FinetuneConfig(stage="both", model_size="v2", batch_size=8)
    assert prior_need_mib(both) == max(
        prior_need_mib(both.model_copy(update={"stage": stage})) for stage in ("s1", "s2")
    )


def test_declared_need_wins_and_measured_peaks_move_the_estimate() -> None:
    model = MemoryModel()
    config = FinetuneConfig(stage="s1", model_size="tiny", batch_size=4)
    prior = model.finetune_need(config)
    assert prior.source == "prior" and prior.mib == pytest.approx(prior_need_mib(config))
    declared = model.finetune_need(config.model_copy(update={"memory_mib": 9_000}))
    assert (declared.mib, declared.source) == (9_000.0, "declared")
    for peak in (2_000.0, 2_400.0):
        model.observe(memory_signature(config), peak)
    learned = model.finetune_need(config)
    weight = 2 / (2 + memory.PRIOR_WEIGHT)
    expected = weight * 2_400.0 * memory.LEARNED_MARGIN + (1 - weight) * prior.mib
    assert (learned.source, learned.observations) == ("blended", 2)
    assert learned.mib == pytest.approx(expected)
    # Run length does not change the memory signature; the micro-batch does.
    longer = config.model_copy(update={"epochs": 50, "grad_accum": 8})
    assert memory_signature(longer) == memory_signature(config)
    assert memory_signature(config.model_copy(update={"batch_size": 8})) != memory_signature(config)


def test_worker_memory_is_its_smallest_gpu_and_unknown_is_not_filtered() -> None:
    assert memory.worker_memory_mib([{"memory_mib": 24_576}, {"memory_mib": 16_384}], False) == (
        16_384
    )
    assert memory.worker_memory_mib([{"memory_mib": None}], False) is None
    assert memory.worker_memory_mib([], True) is None
    need = memory.MemoryNeed(20_000.0, "declared")
    assert not memory.fits(need, 16_384) and memory.fits(need, 24_576)
    assert memory.fits(need, None) and memory.fits(None, 1)


def test_grad_checkpointing_slows_the_time_estimate() -> None:
    plain = FinetuneConfig(stage="s1", model_size="v2", max_steps=1000)
    checkpointed = plain.model_copy(update={"grad_checkpointing": True})
    fast = estimate.prior_estimate(plain, 10.0)
    slow = estimate.prior_estimate(checkpointed, 10.0)
    setup = estimate.SETUP_MINUTES * estimate.PRIOR_MARGIN
    assert (slow.duration_minutes - setup) == pytest.approx(
        (fast.duration_minutes - setup) * estimate.GRAD_CHECKPOINT_SLOWDOWN
    )
    assert slow.kwh > fast.kwh


# -- claims and planning (API) -------------------------------------------------------------


def test_a_job_needing_more_memory_than_a_worker_has_is_never_claimed_by_it(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    big_job = submit(client, team_key, memory_mib=40_000)
    # Estimated, not declared: three 16384-square fp32 matrices (3 GiB) plus the context.
    wide_job = submit(client, team_key, size=16_384)
    tiny = register(client, "tiny-gpu", 2_048)
    # Registration replans the zone; these tests are about claims, so both are made ready.
    make_ready(client.app, big_job, wide_job)
    for _ in range(3):
        assert tiny.claim() is None
        clock.advance(seconds=30)
    # 16 GiB holds the 3 GiB job, never the 40 GB one.
    small = register(client, "small-gpu", 16_384)
    make_ready(client.app, big_job, wide_job)
    claimed = small.claim()
    assert claimed is not None and claimed["job"]["id"] == wide_job
    second = register(client, "small-gpu-2", 16_384)
    make_ready(client.app, big_job)
    assert second.claim() is None and tiny.claim() is None
    big = register(client, "big-gpu", 81_559)
    make_ready(client.app, big_job)
    claimed = big.claim()
    assert claimed is not None and claimed["job"]["id"] == big_job


def test_unknown_worker_memory_claims_as_before(client: TestClient, team_key: str) -> None:
    job_id = submit(client, team_key, memory_mib=40_000)
    unknown = register(client, "no-memory-figure", None)
    make_ready(client.app, job_id)
    claimed = unknown.claim()
    assert claimed is not None and claimed["job"]["id"] == job_id


def test_planner_counts_only_workers_whose_gpus_hold_the_need(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    register(client, "small-gpu", 16_384, gpus=2)
    job_id = submit(client, team_key, memory_mib=40_000)
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["state"] == "scheduled" and job["planned_start"] is None
    assert "40000 MiB of GPU memory" in job["state_reason"]
    small_job = submit(client, team_key, memory_mib=8_000)
    planned = client.get(f"/v1/jobs/{small_job}", headers=bearer(team_key)).json()
    assert planned["planned_start"] is not None
    # A worker that holds it joins: the zone is replanned and the job gets a window.
    register(client, "big-gpu", 81_559)
    clock.advance(seconds=1)
    with session_scope(client.app.state.session_factory) as session:
        client.app.state.scheduling.replan_zone(session, "ES", now=clock.now)
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["planned_start"] is not None, job["state_reason"]


def test_peaks_from_heartbeats_teach_the_memory_model(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key)
    for step, peak in enumerate((3_000.0, 5_500.0, 4_000.0)):
        clock.advance(seconds=15)
        beat(worker, job_id, step, telemetry([gpu(torch_peak_mib=peak), gpu(1, 1)]))
    config = FinetuneConfig(stage="s1", model_size="tiny", batch_size=2)
    with session_scope(client.app.state.session_factory) as session:
        # The burn-in's peak is not a fine-tune's: the model learns only from fine-tunes.
        assert memory_model(session).finetune_need(config).source == "prior"
        team = session.query(Team).filter_by(name="alpha").one()
        session.query(Job).filter_by(id=job_id).update(
            {
                "kind": "gpt-sovits-finetune",
                "config": config.model_dump(exclude_none=True),
                "team_id": team.id,
            }
        )
    with session_scope(client.app.state.session_factory) as session:
        learned = memory_model(session).finetune_need(config)
    assert learned.source == "blended" and learned.observations == 1
    weight = 1 / (1 + memory.PRIOR_WEIGHT)
    assert learned.mib == pytest.approx(
        weight * 15_000.0 * memory.LEARNED_MARGIN + (1 - weight) * prior_need_mib(config)
    )


def test_the_worker_runs_burn_in_configs_with_or_without_a_declared_need(
    client: TestClient, team_key: str
) -> None:
    from worker.burnin import BurninConfig

    for declared in ({}, {"memory_mib": 4_096}):
        job_id = submit(client, team_key, **declared)
        config = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()["config"]
        assert config.get("memory_mib") == declared.get("memory_mib")
        assert BurninConfig.model_validate(config).steps == 5
