"""Deterministic data order and the collate functions of both stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

# The original repeats datasets under 100 items so an epoch holds enough batches.
MIN_ITEMS_PER_EPOCH = 100


class TrainingItem(Protocol):
    """The fields of a prepared utterance that training reads."""

    name: str
    phoneme_ids: list[int]
    bert: np.ndarray  # float32 [1024, n_phones]
    ssl: np.ndarray  # float32 [768, T50]
    wav32k: np.ndarray  # float32 [n] at 32 kHz
    semantic: list[int]  # 25 Hz codes


@dataclass(frozen=True)
class EpochPlan:
    """Which items form each optimizer step: a seeded shuffle per epoch, cut into equal batches."""

    n_items: int
    batch_items: int  # items per optimizer step over all ranks
    seed: int
    world_size: int = 1

    @property
    def epoch_length(self) -> int:
        """Item slots per epoch, after repeating small datasets."""
        repeats = max(1, -(-MIN_ITEMS_PER_EPOCH // self.n_items))
        return self.n_items * repeats

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (a last batch too small for every rank is dropped)."""
        full, rest = divmod(self.epoch_length, self.batch_items)
        return full + (1 if rest >= self.world_size else 0)

    def order(self, epoch: int) -> np.ndarray:
        """Item indices of one epoch, in training order."""
        repeated = np.tile(np.arange(self.n_items), self.epoch_length // self.n_items)
        return np.random.default_rng([self.seed, epoch]).permutation(repeated)

    def step_items(self, epoch: int, step_in_epoch: int, rank: int = 0) -> list[int]:
        """This rank's item indices for one optimizer step."""
        start = step_in_epoch * self.batch_items
        chosen = self.order(epoch)[start : start + self.batch_items]
        return [int(i) for i in chosen[rank :: self.world_size]]


def _pad_stack(arrays: Sequence[np.ndarray], length: int, left: bool = False) -> torch.Tensor:
    """Stack arrays whose last axis is ragged into one zero-padded tensor."""
    shape = (len(arrays), *arrays[0].shape[:-1], length)
    out = np.zeros(shape, dtype=arrays[0].dtype)
    for row, array in enumerate(arrays):
        n = array.shape[-1]
        if left:
            out[row, ..., length - n :] = array
        else:
            out[row, ..., :n] = array
    return torch.from_numpy(out)


def collate_s1(items: Sequence[TrainingItem], eos: int) -> dict[str, torch.Tensor]:
    """Stage-1 batch: phonemes and BERT features left-padded, semantic codes right-padded (EOS)."""
    phonemes = [np.asarray(it.phoneme_ids, dtype=np.int64) for it in items]
    codes = [np.asarray(it.semantic, dtype=np.int64) for it in items]
    text_len = max(len(p) for p in phonemes)
    code_len = max(len(c) for c in codes)
    semantic = np.full((len(items), code_len), eos, dtype=np.int64)
    for row, c in enumerate(codes):
        semantic[row, : len(c)] = c
    bert = [np.asarray(it.bert, dtype=np.float32) for it in items]
    return {
        "phonemes": _pad_stack(phonemes, text_len, left=True),
        "text_lens": torch.tensor([len(p) for p in phonemes]),
        "bert": _pad_stack(bert, text_len, left=True),
        "semantic": torch.from_numpy(semantic),
        "semantic_lens": torch.tensor([len(c) for c in codes]),
    }


def collate_s2(items: Sequence[TrainingItem], hop: int) -> dict[str, torch.Tensor]:
    """Stage-2 batch: SSL frames and waveform cut to one even 50 Hz frame count, right-padded."""
    frames = []
    for it in items:
        usable = min(it.ssl.shape[-1], len(it.wav32k) // hop)
        frames.append(usable - usable % 2)  # the 25 Hz quantizer halves the frame rate
    if min(frames) < 2:
        raise ValueError("an utterance is shorter than two 50 Hz frames")
    max_frames = max(frames)
    ssl = [np.asarray(it.ssl[:, :n], dtype=np.float32) for it, n in zip(items, frames, strict=True)]
    wav = [
        np.asarray(it.wav32k[: n * hop], dtype=np.float32)
        for it, n in zip(items, frames, strict=True)
    ]
    phonemes = [np.asarray(it.phoneme_ids, dtype=np.int64) for it in items]
    return {
        "ssl": _pad_stack(ssl, max_frames),
        "wav": _pad_stack(wav, max_frames * hop),
        "frame_lens": torch.tensor(frames),
        "phonemes": _pad_stack(phonemes, max(len(p) for p in phonemes)),
        "text_lens": torch.tensor([len(p) for p in phonemes]),
    }


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to device."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
