"""Entry point the worker calls: prepare data, train the requested stages, export adapters.

With stage "both", stage 1 (GPT) trains first and stage 2 (SoVITS) second: the two are
independent here (the quantizer is frozen, so the semantic codes stay valid), and the cheap stage
finishing first means a pause during the longer GAN stage still leaves a usable GPT adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from worker.training.bases import BaseFiles, base_files
from worker.training.batches import EpochPlan
from worker.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from worker.training.config import (
    FinetuneConfig,
    adapter_filename,
    feature_path,
    parent_job_id,
)
from worker.training.distributed import DistContext, launch_distributed, pick_device
from worker.training.export import MERGED_GPT, MERGED_SOVITS, export_merged_stage
from worker.training.lora import export_adapter, load_adapter, load_trainable_state
from worker.training.memory_probe import MemoryBudget, default_budget, probe_micro_batch
from worker.training.precision import Amp
from worker.training.stages import Stage, StartingPoint, build_stage
from worker.training.telemetry import TensorBoardLog
from worker.training.trainer import Trainer, TrainerSettings, steps_for

STAGE_ORDER: dict[str, list[str]] = {"s1": ["s1"], "s2": ["s2"], "both": ["s1", "s2"]}
# Changing any of these between a checkpoint and a resume would change the model or data order.
RESUME_KEYS = (
    "stage",
    "model_size",
    "batch_size",
    "grad_accum",
    "lora_rank",
    "lora_alpha",
    "lora_ffn",
    "lora_trainable_modules",
    "seed",
    "base",
)
CHECKPOINT_FORMAT = 1


@dataclass
class FinetuneResult:
    """What a fine-tune produced and how it ended."""

    status: Literal["succeeded", "paused", "stopped"]
    steps: dict[str, int]
    outputs: list[Path]
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)


def build_finetuned_model(
    stage: str,
    config: FinetuneConfig,
    weights: Path,
    codebook: np.ndarray | None = None,
    device: torch.device | None = None,
    start: StartingPoint | None = None,
) -> nn.Module:
    """The exported model of a stage: base (pretrained or seeded init) plus the saved weights."""
    seed_everything(config.seed)
    built = build_stage(stage, config, device or torch.device("cpu"), codebook, start)
    model = built.models[built.export_key]
    load_adapter(model, weights)
    return model.eval()


def run_finetune(
    config: FinetuneConfig,
    dataset_dir: Path,
    work_dir: Path,
    *,
    gpus: int = 1,
    report: Callable[[dict], None] = lambda e: None,
    stop_requested: Callable[[], str | None] = lambda: None,
    models_dir: Path | None = None,
    base: str | None = None,
    continued_from: dict[str, Path] | None = None,
    memory_budget: MemoryBudget | None = None,
) -> FinetuneResult:
    """Prepare the dataset (cached), train, checkpoint, resume and export; see the module doc.

    `base` is the base the worker holds for this job (for `config.base: job:<id>`, the one
    the service resolved); its files come from `models_dir`. `continued_from` holds the
    earlier job's adapter file per stage. `memory_budget` replaces the GPU's free memory
    for the micro-batch probe (worker/training/memory_probe.py); on a CPU nothing is probed
    unless one is given.
    """
    from worker.training.data.prepare import prepare_dataset

    base_name = base or config.base
    if parent_job_id(base_name) is not None:
        raise ValueError(f"base {base_name!r} must be resolved to the base the worker holds")
    files = base_files(Path(models_dir) if models_dir else None, base_name)
    start = StartingPoint(files, {k: Path(v) for k, v in (continued_from or {}).items()}, base_name)
    features = _load_features(files)
    described = feature_path(base_name)
    report(
        {
            "type": "event",
            "kind": "features",
            "message": f"base {base_name}, {described['path']} features: ssl {described['ssl']}; "
            f"bert {described['bert']}; semantic {described['semantic']}",
        }
    )
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    prepared_root = work_dir / "prepared"

    def progress(step: str, done: int, total: int) -> None:
        if done == total:  # one event per preparation step, not per clip
            report({"type": "event", "kind": "prepare", "message": f"prepared {step}: {total}"})

    # Phases split the attempt's energy (preparation apart from training) on the worker.
    report({"type": "phase", "name": "prepare", "at": time.time()})
    dataset = prepare_dataset(
        Path(dataset_dir), prepared_root, progress=progress, features=features
    )
    report({"type": "dataset", "audio_seconds": dataset.total_audio_seconds()})
    del features  # the feature models are not needed while training
    names = [item.name for item in dataset.items]
    if gpus > 1:
        return launch_distributed(
            gpus,
            _run_rank,
            args=(config, prepared_root, names, work_dir, start, None, None, memory_budget),
            main_args=(
                config,
                prepared_root,
                names,
                work_dir,
                start,
                report,
                stop_requested,
                memory_budget,
            ),
        )
    ctx = DistContext(device=pick_device(0))
    return _run_rank(
        ctx, config, prepared_root, names, work_dir, start, report, stop_requested, memory_budget
    )


def _load_features(files: BaseFiles | None) -> Any:
    if files is None:
        return None
    from worker.training.data.upstream_features import UpstreamFeatures

    return UpstreamFeatures.load(
        files.name, files.hubert_dir, files.roberta_dir, files.s2_generator
    )


def _check_resumable(saved: dict[str, Any], config: FinetuneConfig) -> None:
    changed = [k for k in RESUME_KEYS if saved.get(k) != getattr(config, k)]
    if changed:
        raise ValueError(f"checkpoint was made with a different config ({', '.join(changed)})")


def _run_rank(
    ctx: DistContext,
    config: FinetuneConfig,
    prepared_root: Path,
    names: list[str],
    work_dir: Path,
    start: StartingPoint,
    report: Callable[[dict], None] | None = None,
    stop_requested: Callable[[], str | None] | None = None,
    memory_budget: MemoryBudget | None = None,
) -> FinetuneResult:
    from worker.training.data.prepare import PreparedDataset

    dataset = PreparedDataset.load(prepared_root, names)
    items = dataset.items
    checkpoints = work_dir / "checkpoints"
    outputs_dir = work_dir / "outputs"
    report = report or (lambda event: None)
    stop_requested = stop_requested or (lambda: None)

    resume_path = latest_checkpoint(checkpoints)
    resumed = load_checkpoint(resume_path) if resume_path is not None else None
    completed: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    if resume_path is not None and resumed is not None:
        _check_resumable(resumed["config"], config)
        completed, current = resumed["completed"], resumed["current"]
        if ctx.is_main:
            report(
                {"type": "event", "kind": "resumed", "message": f"resumed from {resume_path.name}"}
            )

    tensorboard = TensorBoardLog(work_dir / "tensorboard" if ctx.is_main else None)
    steps: dict[str, int] = {}
    metrics: dict[str, float] = {}
    outputs: list[Path] = []

    def save(stage_name: str, step: int, state: dict[str, Any] | None) -> Path:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": config.model_dump(),
            "completed": completed,
            "current": state,
        }
        return save_checkpoint(checkpoints, payload, stage_name, step, config.keep_last_checkpoints)

    try:
        for index, name in enumerate(STAGE_ORDER[config.stage]):
            if name in completed:
                done = completed[name]
                steps[name] = done["steps"]
                metrics.update(done["metrics"])
                if ctx.is_main:
                    outputs.extend(
                        _export_saved(name, config, done, dataset.codebook, outputs_dir, start)
                    )
                continue
            seed_everything(config.seed)  # the same base init on every rank and every resume
            stage = build_stage(name, config, ctx.device, dataset.codebook, start)
            micro_batch = _probed_micro_batch(ctx, config, stage, items, memory_budget)
            plan = EpochPlan(
                len(items),
                config.batch_size * config.grad_accum * ctx.world_size,
                config.seed,
                ctx.world_size,
            )
            settings = TrainerSettings(
                total_steps=steps_for(plan, config.epochs, config.max_steps),
                micro_batch=config.batch_size,
                grad_accum=config.grad_accum,
                grad_clip=config.grad_clip,
                save_every_steps=config.save_every_steps,
                seed=config.seed,
                precision=config.precision,
            )

            def save_stage(state: dict[str, Any], stage_name: str = name) -> Path:
                return save(stage_name, state["step"], state)

            trainer = Trainer(
                stage,
                items,
                settings,
                ctx,
                report=report,
                stop_requested=stop_requested,
                save=save_stage,
                tensorboard=tensorboard,
            )
            # Separate streams per rank and stage for dropout, noise and window choice.
            seed_everything(config.seed + 7919 * ctx.rank + 104_729 * (index + 1))
            if current is not None and current["stage"] == name:
                trainer.load_state_dict(current)
            if micro_batch is not None:
                # This device's answer wins over a size saved on another one.
                trainer.micro_batch = micro_batch
                if ctx.is_main and micro_batch < config.batch_size:
                    report(
                        {
                            "type": "event",
                            "kind": "micro_batch",
                            "stage": name,
                            "message": f"stage {name}: micro-batch {micro_batch} fits the "
                            f"free memory (configured {config.batch_size}); the effective "
                            "batch is kept by accumulation",
                        }
                    )
            if ctx.is_main:
                report({"type": "phase", "name": name, "at": time.time()})
                report(
                    {
                        "type": "event",
                        "kind": "stage_start",
                        "stage": name,
                        "message": f"stage {name}: {settings.total_steps} steps, "
                        f"{len(stage.adapted)} adapted layers, precision {trainer.amp.precision}",
                    }
                )
            outcome = trainer.run()
            if ctx.is_main:
                report(
                    {
                        "type": "phase_counts",
                        "name": name,
                        "optimizer_steps": trainer.attempt_steps,
                        "samples": trainer.attempt_samples,
                    }
                )
            steps[name] = outcome.step
            metrics.update({f"{name}/{k}": v for k, v in outcome.metrics.items()})
            if outcome.status != "completed":
                return FinetuneResult(
                    outcome.status, steps, outputs, latest_checkpoint(checkpoints), metrics
                )
            model = stage.models[stage.export_key]
            completed[name] = {
                "steps": outcome.step,
                "metrics": {f"{name}/{k}": v for k, v in outcome.metrics.items()},
                "weights": {
                    n: p.detach().cpu().clone()
                    for n, p in model.named_parameters()
                    if p.requires_grad
                },
            }
            if ctx.is_main:
                path = outputs_dir / adapter_filename(name, config)
                outputs.append(export_adapter(model, path, _metadata(name, config, stage)))
                outputs.extend(_export_merged(name, config, model, outcome.step, outputs_dir))
                save(name, outcome.step, None)
    finally:
        tensorboard.close()

    if ctx.is_main:
        outputs.append(_write_adapter_config(config, completed, outputs_dir, start))
    return FinetuneResult("succeeded", steps, outputs, latest_checkpoint(checkpoints), metrics)


def _probed_micro_batch(
    ctx: DistContext,
    config: FinetuneConfig,
    stage: Stage,
    items: list[Any],
    budget: MemoryBudget | None,
) -> int | None:
    """The micro-batch every rank can afford, or None where nothing is probed (a CPU)."""
    budget = budget if budget is not None else default_budget(ctx.device)
    if budget is None:
        return None
    amp = Amp.create(config.precision, ctx.device)
    size = probe_micro_batch(
        stage, items, config.batch_size, ctx.device, budget, autocast=amp.autocast
    )
    return ctx.min_int(size)


def _metadata(name: str, config: FinetuneConfig, stage: Stage) -> dict[str, Any]:
    return {
        "stage": name,
        "model_size": config.model_size,
        "lora_rank": config.lora_rank,
        "lora_alpha": config.lora_alpha,
        "lora_ffn": config.lora_ffn,
        "adapted_layers": len(stage.adapted),
        "base": config.base,
    }


def _merged_info(name: str, config: FinetuneConfig, steps: int) -> str:
    # The original's own info strings: "GPT-e<epoch>" and "<epoch>epoch_<step>iteration".
    if name == "s1":
        return f"GPT-greenwindow-{steps}steps"
    return f"{config.epochs or 0}epoch_{steps}iteration"


def _export_merged(
    name: str, config: FinetuneConfig, model: nn.Module, steps: int, outputs_dir: Path
) -> list[Path]:
    """The stage's full weights with its adapters merged, in the original's format."""
    path = export_merged_stage(name, model, outputs_dir, _merged_info(name, config, steps))
    return [path] if path is not None else []


def merged_filename(name: str) -> str:
    """File name of a stage's merged full weights."""
    return MERGED_GPT if name == "s1" else MERGED_SOVITS


def _export_saved(
    name: str,
    config: FinetuneConfig,
    done: dict[str, Any],
    codebook: np.ndarray | None,
    outputs_dir: Path,
    start: StartingPoint,
) -> list[Path]:
    """Re-export a stage finished before a resume, where its files are missing here."""
    path = outputs_dir / adapter_filename(name, config)
    merged = outputs_dir / merged_filename(name)
    if path.exists() and merged.exists():
        return [path, merged]
    seed_everything(config.seed)
    stage = build_stage(name, config, torch.device("cpu"), codebook, start)
    model = stage.models[stage.export_key]
    load_trainable_state(model, done["weights"])
    written = [export_adapter(model, path, _metadata(name, config, stage))]
    return written + _export_merged(name, config, model, done["steps"], outputs_dir)


def _write_adapter_config(
    config: FinetuneConfig,
    completed: dict[str, dict[str, Any]],
    outputs_dir: Path,
    start: StartingPoint,
) -> Path:
    outputs_dir.mkdir(parents=True, exist_ok=True)
    path = outputs_dir / "adapter_config.json"
    body = {
        "format": "greenwindow-gpt-sovits/1",
        "config": config.model_dump(),
        "base": start.base_name,
        "continued_from": parent_job_id(config.base),
        "features": feature_path(start.base_name),
        "stages": {
            name: {
                "file": adapter_filename(name, config),
                "merged": merged_filename(name)
                if (outputs_dir / merged_filename(name)).exists()
                else None,
                "steps": done["steps"],
            }
            for name, done in completed.items()
        },
    }
    path.write_text(json.dumps(body, indent=2, sort_keys=True))
    return path
