"""Synthetic prepared utterances with learnable structure, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.training.models.sizes import BERT_DIM, SSL_DIM

SAMPLE_RATE = 32_000
HOP = 640


@dataclass
class SyntheticItem:
    """Same fields as a prepared item from worker.training.data."""

    name: str
    phoneme_ids: list[int]
    bert: np.ndarray
    ssl: np.ndarray
    wav32k: np.ndarray
    semantic: list[int]
    speaker: str = "synthetic"
    language: str = "en"


def synthetic_items(
    n: int, seed: int = 0, seconds: float = 0.6, n_codes: int = 64, n_phonemes: int = 40
) -> list[SyntheticItem]:
    """Utterances whose codes follow the phonemes and whose audio is a pitch set by the phonemes."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * 50)
    items = []
    for index in range(n):
        n_phones = int(rng.integers(6, 12))
        phones = rng.integers(1, n_phonemes, size=n_phones)
        # Each phoneme lasts an equal share of the 25 Hz code frames; its code is a function of it.
        codes = np.repeat(phones % n_codes, -(-(frames // 2) // n_phones))[: frames // 2]
        t = np.arange(frames * HOP) / SAMPLE_RATE
        pitch = 110.0 + 20.0 * float(phones[0] % 7)
        wav = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.1 * np.sin(2 * np.pi * 3 * pitch * t)
        ssl = np.repeat(rng.normal(size=(SSL_DIM, frames // 2)), 2, axis=1)
        items.append(
            SyntheticItem(
                name=f"synthetic_{index:04d}",
                phoneme_ids=[int(p) for p in phones],
                bert=np.zeros((BERT_DIM, n_phones), dtype=np.float32),
                ssl=ssl.astype(np.float32),
                wav32k=wav.astype(np.float32),
                semantic=[int(c) for c in codes],
            )
        )
    return items
