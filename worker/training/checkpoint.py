"""Checkpoint files in one directory: atomic writes, newest-first lookup, keep the last N.

Checkpoints travel between workers through the service, so they are read with
``weights_only=True``: tensors and plain containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import pickle
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
    # list_checkpoints returns only names that _NAME matches.
    sequence = int(_NAME.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    path = directory / f"ckpt-{sequence:06d}-{stage}-step{step}.pt"
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


class UnsafeCheckpoint(ValueError):
    """A file that is not plain tensors and containers; it was refused, not unpickled."""


def safe_torch_load(path: Path | str) -> Any:
    """``torch.load`` restricted to tensors and plain containers (no code runs on load)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The message torch gives names the refused global; keep its first line only.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpoint(
            f"refused to load {Path(path).name}: it holds more than tensors ({first[:200]})"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint."""
    return safe_torch_load(path)


def capture_rng() -> dict[str, Any]:
    """Every RNG state training draws from on this process."""
    # numpy's state becomes tensors and ints so the checkpoint loads with weights_only.
    algorithm, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back RNG states captured by capture_rng."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["algorithm"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
