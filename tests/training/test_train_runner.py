"""run_finetune end to end on the sample dataset: both stages, artifacts, pause and resume."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from worker.training.checkpoint import list_checkpoints, load_checkpoint
from worker.training.config import FinetuneConfig
from worker.training.data.prepare import prepare_dataset
from worker.training.memory_probe import SavedTensorBudget
from worker.training.runner import build_finetuned_model, run_finetune
from worker.training.sample import write_sample_dataset

PROGRESS_KEYS = {
    "stage",
    "step",
    "total_steps",
    "loss",
    "grad_norm",
    "steps_per_s",
    "samples_per_s",
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Two threads on a busy two-core machine spin against each other; one is steadier.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample dataset and its preparation, made once for the module."""
    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(root / "dataset", n_utterances=8)
    prepare_dataset(root / "dataset", root / "prepared")
    return root / "dataset", root / "prepared"


def _work_dir(tmp_path: Path, sample: tuple[Path, Path]) -> Path:
    work = tmp_path / "work"
    shutil.copytree(sample[1], work / "prepared")  # reuse the cached preparation
    return work


def _config(**overrides: object) -> FinetuneConfig:
    values = {
        "stage": "both",
        "model_size": "tiny",
        "max_steps": 3,
        "batch_size": 2,
        "save_every_steps": 2,
        "keep_last_checkpoints": 2,
    }
    values.update(overrides)
    return FinetuneConfig(**values)


def _losses(events: list[dict]) -> list[tuple[str, int, float]]:
    return [(e["stage"], e["step"], e["loss"]) for e in events if e["type"] == "progress"]


def _trainer_on(items: list, name: str, steps: int, micro_batch: int, **config: object) -> list:
    from worker.training.checkpoint import seed_everything
    from worker.training.distributed import DistContext
    from worker.training.stages import build_stage
    from worker.training.trainer import Trainer, TrainerSettings

    stage_config = FinetuneConfig(stage=name, model_size="tiny", **config)
    seed_everything(0)
    stage = build_stage(name, stage_config, torch.device("cpu"))
    events: list[dict] = []
    settings = TrainerSettings(steps, micro_batch, 1, 1.0, 1000, 0)
    Trainer(stage, items, settings, DistContext(), report=events.append).run()
    return [e for e in events if e["type"] == "progress"]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize(
    ("overrides", "ratio"),
    [({}, 0.96), ({"lora_rank": 0}, 0.75)],
    ids=["lora-on-random-base", "full"],
)
def test_stage1_loss_decreases_on_the_sample_data(
    sample_dataset: tuple[Path, Path], overrides: dict, ratio: float
) -> None:
    from worker.training.data.prepare import PreparedDataset

    items = PreparedDataset.load(sample_dataset[1]).items
    # Per-token loss: the summed loss also moves with the lengths that happen to be drawn.
    losses = [e["loss_per_token"] for e in _trainer_on(items, "s1", 30, 4, **overrides)]
    assert len(losses) == 30
    assert _mean(losses[-5:]) < ratio * _mean(losses[:5])


def test_stage2_mel_loss_decreases_on_the_sample_data(sample_dataset: tuple[Path, Path]) -> None:
    from worker.training.data.prepare import PreparedDataset

    items = PreparedDataset.load(sample_dataset[1]).items
    for item in items:  # the first second of every clip keeps the test quick
        item.ssl, item.wav32k = item.ssl[:, :50], item.wav32k[:32_000]
    progress = _trainer_on(items, "s2", 24, 2, lora_rank=0, s2_learning_rate=1e-3)
    mel = [e["loss_mel_l1"] for e in progress]
    assert _mean(mel[-4:]) < 0.8 * _mean(mel[:4])
    assert torch.isfinite(torch.tensor([e["loss_discriminator"] for e in progress])).all()


def test_both_stages_export_adapters_and_a_paused_run_resumes_identically(
    tmp_path: Path, sample_dataset: tuple[Path, Path]
) -> None:
    config = _config()
    straight: list[dict] = []
    work = _work_dir(tmp_path / "straight", sample_dataset)
    result = run_finetune(config, sample_dataset[0], work, report=straight.append)

    assert result.status == "succeeded"
    assert result.steps == {"s1": 3, "s2": 3}
    names = sorted(p.name for p in result.outputs)
    # The tiny stage-2 size has no counterpart in the original, so only the GPT is merged.
    assert names == [
        "adapter_config.json",
        "gpt_merged.ckpt",
        "s1_lora.safetensors",
        "s2_lora.safetensors",
    ]
    assert all(p.exists() for p in result.outputs)
    adapter_config = json.loads((work / "outputs/adapter_config.json").read_text())
    assert adapter_config["stages"]["s1"]["merged"] == "gpt_merged.ckpt"
    assert adapter_config["stages"]["s2"]["merged"] is None
    progress = [e for e in straight if e["type"] == "progress"]
    assert all(PROGRESS_KEYS <= e.keys() for e in progress)
    assert [e["stage"] for e in progress] == ["s1"] * 3 + ["s2"] * 3
    # Telemetry for the heartbeat: stage 2 adds its KL and mel losses.
    assert all(e["telemetry"]["kl"] is None for e in progress[:3])
    assert all(isinstance(e["telemetry"]["mel"], float) for e in progress[3:])
    assert all(isinstance(e["telemetry"]["kl"], float) for e in progress[3:])
    phases = [e["name"] for e in straight if e["type"] == "phase"]
    assert phases == ["prepare", "s1", "s2"]
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    assert len(list_checkpoints(work / "checkpoints")) <= 2
    assert result.checkpoint is not None and result.checkpoint.exists()
    assert "s2/loss_mel_l1" in result.metrics

    # The exported stage-2 adapter rebuilds the generator onto the same base.
    from worker.training.data.prepare import PreparedDataset

    codebook = PreparedDataset.load(work / "prepared").codebook
    generator = build_finetuned_model("s2", config, work / "outputs/s2_lora.safetensors", codebook)
    assert any(".lora." in name for name, _ in generator.named_parameters())

    # Pause during stage 2, then run again in the same work dir: it resumes there.
    interrupted: list[dict] = []

    def pause_in_stage2() -> str | None:
        done = [e for e in interrupted if e["type"] == "progress" and e["stage"] == "s2"]
        return "pause" if len(done) == 1 else None

    work2 = _work_dir(tmp_path / "interrupted", sample_dataset)
    paused = run_finetune(
        config, sample_dataset[0], work2, report=interrupted.append, stop_requested=pause_in_stage2
    )
    assert paused.status == "paused"
    assert paused.steps == {"s1": 3, "s2": 1}
    assert load_checkpoint(paused.checkpoint)["current"]["step"] == 1

    resumed_events: list[dict] = []
    resumed = run_finetune(config, sample_dataset[0], work2, report=resumed_events.append)
    assert resumed.status == "succeeded" and resumed.steps == {"s1": 3, "s2": 3}
    assert not [e for e in resumed_events if e.get("stage") == "s1"]  # s1 is not retrained
    assert _losses(interrupted) + _losses(resumed_events) == _losses(straight)


def test_stop_request_saves_and_reports_stopped(
    tmp_path: Path, sample_dataset: tuple[Path, Path]
) -> None:
    work = _work_dir(tmp_path, sample_dataset)
    result = run_finetune(
        _config(stage="s1"), sample_dataset[0], work, stop_requested=lambda: "stop"
    )
    assert result.status == "stopped" and result.steps == {"s1": 0}
    assert result.checkpoint is not None and result.outputs == []


def test_resume_refuses_a_checkpoint_from_a_different_model(
    tmp_path: Path, sample_dataset: tuple[Path, Path]
) -> None:
    work = _work_dir(tmp_path, sample_dataset)
    run_finetune(_config(stage="s1"), sample_dataset[0], work, stop_requested=lambda: "pause")
    with pytest.raises(ValueError, match="lora_rank"):
        run_finetune(_config(stage="s1", lora_rank=8), sample_dataset[0], work)


def test_two_cpu_ranks_train_with_gloo_ddp(
    tmp_path: Path, sample_dataset: tuple[Path, Path]
) -> None:
    events: list[dict] = []
    work = _work_dir(tmp_path, sample_dataset)
    # An injected memory limit: rank 1 cannot afford any batch, rank 0 any it is offered.
    budget = SavedTensorBudget(cap_mib=1e6, rank_caps_mib={1: 0.0})
    result = run_finetune(
        _config(stage="s1", max_steps=2),
        sample_dataset[0],
        work,
        gpus=2,
        report=events.append,
        memory_budget=budget,
    )
    assert result.status == "succeeded" and result.steps == {"s1": 2}
    progress = [e for e in events if e["type"] == "progress"]
    # Every step covers both ranks' shares: 2 ranks x micro-batch 2 (accumulated from 1s).
    assert [e["step"] for e in progress] == [1, 2]
    assert [e["attempt_samples"] for e in progress] == [4, 8]
    # Both ranks took the smaller probed micro-batch (all_reduce MIN); rank 0 reports it.
    assert {e["micro_batch"] for e in progress} == {1}
    assert [e["kind"] for e in events if e.get("kind") == "micro_batch"] == ["micro_batch"]
    # The heartbeat's telemetry covers every rank, not only rank 0.
    for event in progress:
        assert [r["rank"] for r in event["telemetry"]["ranks"]] == [0, 1]
        assert event["telemetry"]["step_time_s"] > 0 and event["telemetry"]["kl"] is None
    assert (work / "outputs" / "s1_lora.safetensors").exists()
