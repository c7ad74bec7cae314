"""Run estimates: priors that move the right way, and learning from measured runs."""

from __future__ import annotations

import pytest

from scheduler.planning.estimate import (
    PRIOR_WEIGHT,
    EstimateModel,
    config_signature,
    normalise_gpu_model,
    optimiser_steps,
    prior_estimate,
)
from worker.training.config import FinetuneConfig


def test_steps_come_from_epochs_over_the_sliced_clips_or_max_steps() -> None:
    config = FinetuneConfig(epochs=4, batch_size=8)
    # 14 minutes of audio in 7 s clips is 120 clips: 15 steps per epoch at batch size 8.
    assert optimiser_steps(config, 14.0) == 60
    assert optimiser_steps(config, 14.0, gpus=2) == 32  # 8 steps per epoch over two GPUs
    assert optimiser_steps(FinetuneConfig(max_steps=500), 14.0) == 500


def test_priors_grow_with_work_and_shrink_with_faster_gpus() -> None:
    base = FinetuneConfig(epochs=8)
    small = prior_estimate(base, 10.0, gpu_model="A100")
    assert prior_estimate(FinetuneConfig(epochs=16), 10.0).duration_minutes > small.duration_minutes
    assert prior_estimate(base, 60.0).duration_minutes > small.duration_minutes
    assert prior_estimate(base, 10.0, gpu_model="H100").duration_minutes < small.duration_minutes
    assert prior_estimate(base, 10.0, gpu_model="T4").duration_minutes > small.duration_minutes
    fp32 = prior_estimate(FinetuneConfig(epochs=8, precision="fp32"), 10.0)
    assert fp32.duration_minutes > small.duration_minutes
    tiny = prior_estimate(FinetuneConfig(epochs=8, model_size="tiny"), 10.0)
    assert tiny.duration_minutes < small.duration_minutes
    s1_only = prior_estimate(FinetuneConfig(epochs=8, stage="s1"), 10.0)
    assert s1_only.duration_minutes < small.duration_minutes


def test_prior_energy_is_power_times_time() -> None:
    estimate = prior_estimate(FinetuneConfig(epochs=8), 30.0, gpus=2, gpu_model="L4")
    assert estimate.source == "prior"
    assert estimate.kwh == pytest.approx(estimate.power_kw * estimate.duration_minutes / 60)
    assert estimate.gpu_hours == pytest.approx(2 * estimate.duration_minutes / 60)
    cpu = prior_estimate(FinetuneConfig(epochs=8), 30.0, gpu_model="cpu")
    assert cpu.gpu_hours == 0.0


def test_gpu_names_map_to_priors() -> None:
    assert normalise_gpu_model("NVIDIA A100-SXM4-80GB") == "A100"
    assert normalise_gpu_model("NVIDIA H100 80GB HBM3") == "H100"
    assert normalise_gpu_model("NVIDIA GeForce RTX 4090") == "RTX 4090"
    assert normalise_gpu_model("Tesla T4") == "T4"


def test_learning_moves_the_estimate_to_the_measured_mean() -> None:
    config = FinetuneConfig(epochs=8)
    model = EstimateModel()
    prior = model.estimate(config, 10.0, gpu_model="A100")
    signature = config_signature(config, 10.0)
    measured_seconds, measured_kwh = 3 * prior.duration_minutes * 60, 0.5
    model.observe(signature, "NVIDIA A100-SXM4-40GB", measured_seconds, measured_kwh)
    one = model.estimate(config, 10.0, gpu_model="A100")
    assert one.source == "blended" and one.observations == 1
    assert prior.duration_minutes < one.duration_minutes < measured_seconds / 60 * 1.1
    weight = 1 / (1 + PRIOR_WEIGHT)
    expected = weight * measured_seconds / 60 * 1.05 + (1 - weight) * prior.duration_minutes
    assert one.duration_minutes == pytest.approx(expected)
    for _ in range(30):
        model.observe(signature, "A100", measured_seconds, measured_kwh)
    many = model.estimate(config, 10.0, gpu_model="A100")
    assert many.duration_minutes == pytest.approx(measured_seconds / 60 * 1.05, rel=0.1)
    assert many.kwh == pytest.approx(measured_kwh * 1.05, rel=0.1)


def test_observations_stay_with_their_signature_and_gpu() -> None:
    config = FinetuneConfig(epochs=8)
    model = EstimateModel()
    model.observe(config_signature(config, 10.0), "A100", 99_999.0, 9.0)
    assert model.estimate(config, 10.0, gpu_model="H100").source == "prior"
    assert model.estimate(FinetuneConfig(epochs=9), 10.0, gpu_model="A100").source == "prior"
    assert model.estimate(config, 40.0, gpu_model="A100").source == "prior"
    # A slightly different dataset size lands in the same bucket.
    assert model.estimate(config, 10.2, gpu_model="A100").source == "blended"


def test_bad_observations_are_refused() -> None:
    with pytest.raises(ValueError):
        EstimateModel().observe("x", "A100", 0.0, 1.0)
