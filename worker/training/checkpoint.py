"""Checkpoint files in one directory: atomic writes, newest-first lookup, keep the last N."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^ckpt-(\d{6})-(s[12])-step(\d+)\.pt$")


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in directory, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    """Newest checkpoint file, or None."""
    files = list_checkpoints(directory)
    return files[-1] if files else None


def save_checkpoint(
    directory: Path, state: dict[str, Any], stage: str, step: int, keep_last: int
) -> Path:
    """Write state as the next checkpoint (atomically) and delete all but the newest keep_last."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = list_checkpoints(directory)
    sequence = int(_NAME.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    path = directory / f"ckpt-{sequence:06d}-{stage}-step{step}.pt"
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint."""
    return torch.load(path, map_location="cpu", weights_only=False)


def capture_rng() -> dict[str, Any]:
    """Every RNG state training draws from on this process."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back RNG states captured by capture_rng."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
