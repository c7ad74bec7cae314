"""Fine-tune throughput, peak memory and energy per step: full fp32 versus LoRA + mixed precision.

On a GPU both stages run at the `v2` (original) size; without one they run at `tiny` on the CPU.
Every configuration runs in its own process so peak-memory figures do not leak between them.

    .venv/bin/python bench/training.py [--steps 10] [--warmup 2] [--size tiny|v2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (lora_rank, precision); "auto" is bf16 (or fp16) on a GPU and fp32 on a CPU.
VARIANTS: dict[str, tuple[int, str]] = {
    "full-fp32": (0, "fp32"),
    "lora-fp32": (32, "fp32"),
    "lora-amp": (32, "auto"),
}
CPU_EXTRA = {"lora-bf16": (32, "bf16")}


def measure(stage_name: str, variant: str, size: str, steps: int, warmup: int) -> dict[str, Any]:
    """Train one configuration on synthetic data and return its figures."""
    import torch

    from worker.training.checkpoint import seed_everything
    from worker.training.config import FinetuneConfig
    from worker.training.distributed import DistContext, pick_device
    from worker.training.stages import build_stage
    from worker.training.synthetic import synthetic_items
    from worker.training.telemetry import GpuProbe
    from worker.training.trainer import Trainer, TrainerSettings

    rank, precision = {**VARIANTS, **CPU_EXTRA}[variant]
    device = pick_device(0)
    batch = (8 if stage_name == "s1" else 4) if device.type == "cuda" else 4
    seconds = 4.0 if device.type == "cuda" else 1.0
    config = FinetuneConfig(stage=stage_name, model_size=size, lora_rank=rank, precision=precision)
    seed_everything(0)
    stage = build_stage(stage_name, config, device)
    items = synthetic_items(batch * 4, seconds=seconds, n_codes=1024)
    settings = TrainerSettings(warmup, batch, 1, 1.0, 10**9, 0, precision)
    trainer = Trainer(stage, items, settings, DistContext(device=device))
    trainer.run()
    probe = GpuProbe(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    energy_start = probe.energy_mj()
    started = time.perf_counter()
    trainer.settings.total_steps = warmup + steps
    trainer.run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    energy_end = probe.energy_mj()
    trainable = sum(
        p.numel() for m in stage.models.values() for p in m.parameters() if p.requires_grad
    )
    result: dict[str, Any] = {
        "stage": stage_name,
        "variant": variant,
        "size": size,
        "device": str(device),
        "precision": trainer.amp.precision,
        "batch": batch,
        "trainable_m": trainable / 1e6,
        "steps_per_s": steps / elapsed,
        "samples_per_s": steps * batch / elapsed,
    }
    if device.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        # Process peak RSS; each configuration runs in a fresh process, so this is its own.
        result["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if energy_start is not None and energy_end is not None:
        result["energy_j_per_step"] = (energy_end - energy_start) / 1000 / steps
    return result


def _run_child(stage: str, variant: str, size: str, steps: int, warmup: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", stage, variant, size, str(steps), str(warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run every variant for both stages and print figures and ratios against full fp32."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", choices=["tiny", "v2"], default=None)
    parser.add_argument("--stages", default="s1,s2")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, variant, size, steps, warmup = args.child
        print(json.dumps(measure(stage, variant, size, int(steps), int(warmup))))
        return

    import torch

    gpu = torch.cuda.is_available()
    size = args.size or ("v2" if gpu else "tiny")
    # On a CPU "auto" resolves to fp32, so lora-amp would repeat lora-fp32; bf16 stands in.
    variants = list(VARIANTS) if gpu else ["full-fp32", "lora-fp32", *CPU_EXTRA]
    header = (
        f"{'stage':5} {'variant':10} {'prec':5} {'train M':>8} {'steps/s':>8} {'samples/s':>9} "
        f"{'peak MB':>8} {'J/step':>8}"
    )
    print(f"device: {'cuda' if gpu else 'cpu'} ({torch.get_num_threads()} threads), size {size}")
    print(header)
    for stage in args.stages.split(","):
        rows = {v: _run_child(stage, v, size, args.steps, args.warmup) for v in variants}
        for variant, row in rows.items():
            energy = row.get("energy_j_per_step")
            print(
                f"{stage:5} {variant:10} {row['precision']:5} {row['trainable_m']:8.2f} "
                f"{row['steps_per_s']:8.2f} {row['samples_per_s']:9.2f} "
                f"{row['peak_mem_mb']:8.0f} {energy if energy is not None else float('nan'):8.1f}"
            )
        base = rows["full-fp32"]
        for variant, row in rows.items():
            if variant == "full-fp32":
                continue
            ratios = [
                f"speed x{row['steps_per_s'] / base['steps_per_s']:.2f}",
                f"peak memory x{row['peak_mem_mb'] / base['peak_mem_mb']:.2f}",
            ]
            if row.get("energy_j_per_step") and base.get("energy_j_per_step"):
                ratios.append(
                    f"energy/step x{row['energy_j_per_step'] / base['energy_j_per_step']:.2f}"
                )
            print(f"  {stage} {variant} vs full-fp32: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
