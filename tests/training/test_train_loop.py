"""The training loop: learning, fault handling (non-finite, OOM), checkpoints and exact resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from worker.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from worker.training.config import FinetuneConfig
from worker.training.distributed import DistContext
from worker.training.stages import Stage, build_stage
from worker.training.synthetic import synthetic_items
from worker.training.trainer import Trainer, TrainerSettings

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Two threads on a busy two-core machine spin against each other; one is steadier.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _stage(name: str, **overrides: Any) -> Stage:
    config = FinetuneConfig(stage=name, model_size="tiny", **overrides)
    seed_everything(config.seed)
    return build_stage(name, config, CPU)


def _trainer(stage: Stage, items: list, steps: int, events: list, **kwargs: Any) -> Trainer:
    settings = TrainerSettings(
        total_steps=steps,
        micro_batch=kwargs.pop("micro_batch", 2),
        grad_accum=kwargs.pop("grad_accum", 1),
        grad_clip=1.0,
        save_every_steps=kwargs.pop("save_every_steps", 1000),
        seed=0,
    )
    trainer = Trainer(stage, items, settings, DistContext(), report=events.append, **kwargs)
    seed_everything(99)
    return trainer


def _progress(events: list, key: str = "loss") -> list[float]:
    return [e[key] for e in events if e["type"] == "progress"]


def test_gradient_checkpointing_gives_the_same_step() -> None:
    items = synthetic_items(4, seconds=0.4)
    results = []
    for name in ("s1", "s2"):
        for checkpointing in (False, True):
            events: list = []
            stage = _stage(name, grad_checkpointing=checkpointing, lora_rank=0)
            _trainer(stage, items, 1, events).run()
            results.append((name, checkpointing, _progress(events)[0], stage))
    for plain, checkpointed in (results[0:2], results[2:4]):
        assert plain[2] == pytest.approx(checkpointed[2], rel=1e-5)
        model_key = plain[3].export_key
        ref = dict(plain[3].models[model_key].named_parameters())
        for name, param in checkpointed[3].models[model_key].named_parameters():
            torch.testing.assert_close(param, ref[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_stay_finite(precision: str) -> None:
    events: list = []
    stage = _stage("s1")
    trainer = Trainer(
        stage,
        synthetic_items(4),
        TrainerSettings(3, 2, 1, 1.0, 1000, 0, precision),
        DistContext(),
        report=events.append,
    )
    trainer.run()
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["precision"] for e in progress] == [precision] * 3
    assert trainer.amp.scaler.is_enabled() == (precision == "fp16")
    assert torch.isfinite(torch.tensor([e["loss"] for e in progress])).all()


def test_non_finite_loss_skips_the_step_without_touching_weights() -> None:
    events: list = []
    stage = _stage("s1")
    trainer = _trainer(stage, synthetic_items(4), 1, events)
    trainer.run()
    model = stage.models["t2s"]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    poison = model.head.register_forward_hook(lambda m, i, out: out * float("nan"))
    trainer.settings.total_steps = 2
    trainer.run()
    poison.remove()
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(torch.equal(before[n], after[n]) for n in before)
    skipped = [e for e in events if e.get("kind") == "skipped_step"]
    assert len(skipped) == 1 and "non-finite" in skipped[0]["message"]
    trainer.settings.total_steps = 3
    trainer.run()
    assert trainer.step == 3 and trainer.skipped_steps == 1
    assert _progress(events)[-1] == pytest.approx(_progress(events)[-1])  # finite again
    assert torch.isfinite(torch.tensor(_progress(events))).all()


def test_oom_retries_with_half_micro_batch_and_same_effective_batch() -> None:
    items = synthetic_items(8)

    def raise_once(module: torch.nn.Module, args: Any) -> None:
        if not raised:
            raised.append(True)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")

    raised: list[bool] = []
    events: list = []
    stage = _stage("s1")
    stage.models["t2s"].register_forward_pre_hook(raise_once)
    trainer = _trainer(stage, items, 1, events, micro_batch=4)
    trainer.run()
    oom = [e for e in events if e.get("kind") == "oom"]
    assert [e["message"] for e in oom] == [
        "CUDA OOM at step 1: retrying with micro-batch 2 x accumulation 2"
    ]
    assert trainer.micro_batch == 2 and trainer.step == 1

    # The retried step equals a step planned as 2 x 2 from the start.
    reference_events: list = []
    reference = _stage("s1")
    _trainer(reference, items, 1, reference_events, micro_batch=2, grad_accum=2).run()
    got = dict(stage.models["t2s"].named_parameters())
    for name, param in reference.models["t2s"].named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(got[name], param)


def test_checkpoints_keep_only_the_newest(tmp_path: Path) -> None:
    for step in range(1, 6):
        save_checkpoint(tmp_path, {"step": step}, "s1", step, keep_last=2)
    files = list_checkpoints(tmp_path)
    assert [load_checkpoint(f)["step"] for f in files] == [4, 5]
    assert latest_checkpoint(tmp_path) == files[-1]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(("name", "steps", "stop_at"), [("s1", 8, 3), ("s2", 4, 2)])
def test_resume_continues_the_same_loss_sequence(name: str, steps: int, stop_at: int) -> None:
    items = synthetic_items(6, seconds=0.4)
    extra = {"micro_batch": 2, "grad_accum": 2} if name == "s1" else {}
    straight: list = []
    _trainer(_stage(name), items, steps, straight, **dict(extra)).run()

    first: list = []
    saved: list[dict] = []
    interrupted = _trainer(
        _stage(name),
        items,
        steps,
        first,
        stop_requested=lambda: "pause" if len(_progress(first)) >= stop_at else None,
        save=saved.append,
        **dict(extra),
    )
    outcome = interrupted.run()
    assert outcome.status == "paused" and outcome.step == stop_at

    second: list = []
    resumed = _trainer(_stage(name), items, steps, second, **dict(extra))
    resumed.load_state_dict(saved[-1])
    assert resumed.run().status == "completed"
    assert _progress(first) + _progress(second) == _progress(straight)
