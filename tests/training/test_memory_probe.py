"""The micro-batch probe on a CPU, with an injected memory limit: a cap on the bytes autograd
saves for the backward pass (the activations, the memory that grows with the batch)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from worker.training.batches import to_device
from worker.training.checkpoint import seed_everything
from worker.training.config import FinetuneConfig
from worker.training.memory_probe import (
    SavedTensorBudget,
    candidates,
    longest_item,
    probe_micro_batch,
)
from worker.training.stages import Stage, build_stage
from worker.training.synthetic import synthetic_items

CPU = torch.device("cpu")
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def s1_stage() -> Stage:
    config = FinetuneConfig(stage="s1", model_size="tiny")
    seed_everything(config.seed)
    return build_stage("s1", config, CPU)


def saved_mib(stage: Stage, items: list, size: int) -> float:
    """What one forward+backward of ``size`` copies of the longest item saves, measured here."""
    used = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        used[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        batch = to_device(stage.collate([longest_item(items)] * size), CPU)
        out = stage.forward(batch, stage.models)
        sum(loss.float() for loss in out.optimised.values()).backward()
    for model in stage.models.values():
        model.zero_grad(set_to_none=True)
    return used[0] / MIB


def test_candidates_halve_down_to_one() -> None:
    assert candidates(8) == [8, 4, 2, 1]
    assert candidates(6) == [6, 3, 1]
    assert candidates(1) == [1]


def test_the_probe_picks_the_largest_micro_batch_under_the_limit() -> None:
    items = synthetic_items(6, seconds=0.4) + synthetic_items(1, seed=3, seconds=1.2)
    stage = s1_stage()
    two, four = saved_mib(stage, items, 2), saved_mib(stage, items, 4)
    assert two < four  # the limit below tells the sizes apart
    cap = (two + four) / 2
    assert probe_micro_batch(stage, items, 4, CPU, SavedTensorBudget(cap)) == 2
    assert probe_micro_batch(stage, items, 4, CPU, SavedTensorBudget(four * 2)) == 4
    assert probe_micro_batch(stage, items, 4, CPU, SavedTensorBudget(0.0)) == 1


def test_the_probe_leaves_the_model_and_random_streams_as_it_found_them() -> None:
    items = synthetic_items(4, seconds=0.4)
    stage = s1_stage()
    budget = SavedTensorBudget(saved_mib(stage, items, 2))  # 4 fails, 2 fits: two trials
    before = {k: v.clone() for m in stage.models.values() for k, v in m.state_dict().items()}
    torch.manual_seed(7)
    assert probe_micro_batch(stage, items, 4, CPU, budget) == 2
    after_probe = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_probe, torch.rand(3))
    for model in stage.models.values():
        assert all(p.grad is None for p in model.parameters())
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key])
