"""GPU checks at the v2 (original GPT-SoVITS) size; run through `bench/gpu_check.sh`.

Parts (each prints its figures; `bench/README.md` says what they mean):

- `train`: steps/s, peak GPU memory and NVML energy per step for full fp32 and for LoRA with
  bf16 autocast, for each stage (one fresh process per configuration, via bench/training.py).
- `sampler`: the energy-metering sampler's cost on step time: the same stage-1 LoRA bf16 run
  without a sampler, with the worker's 1 s sampler, and with a 0.1 s one.
- `counter`: the NVML total-energy counter against integrated power (1 s and 0.1 s sampling)
  over a load that alternates matrix-multiply bursts and idle gaps.

    .venv/bin/python bench/gpu_check.py train|sampler|counter [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")


def part_train(steps: int, warmup: int) -> None:
    """Full fp32 against LoRA + bf16 for both stages at v2 size (bench/training.py children)."""
    from bench.training import _run_child

    print(f"{'stage':5} {'variant':10} {'train M':>8} {'steps/s':>8} {'peak MB':>9} {'J/step':>8}")
    for stage in ("s1", "s2"):
        rows = {}
        for variant in ("full-fp32", "lora-bf16"):
            row = _run_child(stage, variant, "v2", steps, warmup)
            rows[variant] = row
            energy = row.get("energy_j_per_step", float("nan"))
            print(
                f"{stage:5} {variant:10} {row['trainable_m']:8.2f} {row['steps_per_s']:8.2f} "
                f"{row['peak_mem_mb']:9.0f} {energy:8.1f}",
                flush=True,
            )
        full, lora = rows["full-fp32"], rows["lora-bf16"]
        speed = lora["steps_per_s"] / full["steps_per_s"]
        memory = lora["peak_mem_mb"] / full["peak_mem_mb"]
        line = f"  {stage} lora-bf16 vs full-fp32: speed x{speed:.2f}, peak memory x{memory:.2f}"
        if full.get("energy_j_per_step") and lora.get("energy_j_per_step"):
            line += f", energy/step x{lora['energy_j_per_step'] / full['energy_j_per_step']:.2f}"
        print(line, flush=True)


def _stage1_step_times(
    steps: int, sampler_seconds: float | None, device_name: str = "cuda", size: str = "v2"
) -> list[float]:
    import torch

    from worker.metering.nvml import Nvml, NvmlMeter
    from worker.metering.session import MeteringSession
    from worker.training.checkpoint import seed_everything
    from worker.training.config import FinetuneConfig
    from worker.training.distributed import DistContext
    from worker.training.stages import build_stage
    from worker.training.synthetic import synthetic_items
    from worker.training.trainer import Trainer, TrainerSettings

    device = torch.device(device_name, 0) if device_name == "cuda" else torch.device(device_name)
    config = FinetuneConfig(stage="s1", model_size=size, lora_rank=32, precision="bf16")
    seed_everything(0)
    stage = build_stage("s1", config, device)
    items = synthetic_items(32, seconds=4.0, n_codes=1024)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_event(event: dict) -> None:
        if event.get("type") == "progress":
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

    session = None
    if sampler_seconds is not None:
        meter = NvmlMeter.for_visible_devices(Nvml.open(), None)
        session = MeteringSession(
            attempt=1, gpu_meter=meter, cpu_meter=None, sample_seconds=sampler_seconds
        )
        session.start()
    settings = TrainerSettings(steps, 8, 1, 1.0, 10**9, 0, "bf16")
    last[0] = time.perf_counter()
    Trainer(stage, items, settings, DistContext(device=device), report=on_event).run()
    if session is not None:
        session.stop()
    return times[3:]  # the first steps include allocator and autotuning warm-up


def part_sampler(steps: int) -> None:
    """Median step time without the sampler, with the worker's 1 s sampler and with 0.1 s."""
    results = {}
    for label, interval in (("none", None), ("1 s", 1.0), ("0.1 s", 0.1)):
        cmd = [sys.executable, __file__, "sampler-child", "--steps", str(steps)]
        if interval is not None:
            cmd += ["--interval", str(interval)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        median = float(out.stdout.strip().splitlines()[-1])
        results[label] = median
        print(f"sampler {label:6}: median step {median * 1000:.1f} ms", flush=True)
    base = results["none"]
    for label in ("1 s", "0.1 s"):
        print(f"  overhead at {label}: {100 * (results[label] / base - 1):+.2f} %")


def part_counter(seconds: float) -> None:
    """NVML energy counter against trapezoid-integrated power at 1 s and 0.1 s."""
    import torch

    from worker.metering.nvml import Nvml

    nvml = Nvml.open()
    if not nvml.available:
        raise SystemExit("NVML is not available")
    info, handle = nvml.visible_gpus(None)[0]
    lib = nvml.module
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), lib.nvmlDeviceGetPowerUsage(handle) / 1000.0))
            time.sleep(0.1)

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    thread = threading.Thread(target=sample, daemon=True)
    start_mj = lib.nvmlDeviceGetTotalEnergyConsumption(handle)
    t0 = time.monotonic()
    thread.start()
    while time.monotonic() - t0 < seconds:
        burst_end = time.monotonic() + 3.0
        while time.monotonic() < burst_end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        time.sleep(2.0)  # idle gap: the power curve the integral must follow
    stop.set()
    thread.join()
    end_mj = lib.nvmlDeviceGetTotalEnergyConsumption(handle)
    counter_j = (end_mj - start_mj) / 1000.0

    def integral(points: list[tuple[float, float]]) -> float:
        pairs = zip(points, points[1:], strict=False)
        return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in pairs)

    every_second = samples[::10]
    print(f"GPU: {info.name}, window {samples[-1][0] - samples[0][0]:.1f} s")
    print(f"NVML energy counter      : {counter_j:10.1f} J")
    for label, points in (("0.1 s", samples), ("1 s", every_second)):
        joules = integral(points)
        print(
            f"integrated power ({label:5}): {joules:10.1f} J "
            f"({100 * (joules / counter_j - 1):+.2f} % vs counter)"
        )
    print(f"mean power {statistics.fmean(w for _, w in samples):.0f} W")


def main() -> None:
    """Run one part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["train", "sampler", "sampler-child", "counter"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=60.0)
    # A CPU smoke run of the sampler child (tiny size), to check the script without a GPU.
    parser.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_smoke and args.part == "sampler-child":
        times = _stage1_step_times(args.steps, args.interval, "cpu", "tiny")
        print(statistics.median(times))
        return
    _require_gpu()
    if args.part == "train":
        part_train(args.steps, args.warmup)
    elif args.part == "sampler":
        part_sampler(args.steps)
    elif args.part == "sampler-child":
        print(statistics.median(_stage1_step_times(args.steps, args.interval)))
    else:
        part_counter(args.seconds)


if __name__ == "__main__":
    main()
