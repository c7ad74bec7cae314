"""25 Hz semantic tokens: pool 50 Hz SSL frames by two and quantise with a k-means codebook.

The original derives its tokens from a pretrained stage-2 model (`ssl_proj`, a
stride-2 convolution, then a 1024-entry VQ). Without those weights, a codebook
fitted on this dataset's own frames gives tokens on the same 25 Hz grid and in
the same 0..1023 range; the stage-2 quantiser can start from the saved codebook.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

MAX_CODES = 1024
# Fewer points per code than this and most codes would model a single frame.
MIN_FRAMES_PER_CODE = 4
FIT_SAMPLE_LIMIT = 20_000
# k-means++ seeding is sequential in K; a subsample keeps it to seconds at K = 1024.
INIT_SAMPLE_LIMIT = 8192
DISTANCE_CHUNK = 8192
STABLE_FRACTION = 1e-3
SEED_ROUNDS = 64


def pool_frames(ssl: np.ndarray) -> np.ndarray:
    """Average non-overlapping pairs of frames: [D, T50] -> [T50 // 2, D] at 25 Hz."""
    pairs = ssl.shape[1] // 2
    trimmed = ssl[:, : pairs * 2].astype(np.float32)
    return trimmed.reshape(ssl.shape[0], pairs, 2).mean(axis=2).T


def default_codebook_size(n_frames: int) -> int:
    """K for a dataset of `n_frames` pooled frames: up to 1024, at least 4 frames per code."""
    return int(max(1, min(MAX_CODES, n_frames // MIN_FRAMES_PER_CODE)))


def _squared_distances(points: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return (
        np.sum(points * points, axis=1, keepdims=True)
        - 2.0 * points @ codes.T
        + np.sum(codes * codes, axis=1)[None, :]
    )


def nearest_codes(points: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook row for each point (chunked to bound memory)."""
    out = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], DISTANCE_CHUNK):
        chunk = points[start : start + DISTANCE_CHUNK]
        out[start : start + DISTANCE_CHUNK] = np.argmin(_squared_distances(chunk, codebook), axis=1)
    return out


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    # Seeding in rounds of several centres (each drawn with probability proportional to
    # its squared distance, as in k-means++) turns K matrix-vector products into
    # K / SEED_ROUND_SIZE matrix products; Lloyd's passes then refine the start.
    if points.shape[0] > INIT_SAMPLE_LIMIT:
        points = points[rng.choice(points.shape[0], INIT_SAMPLE_LIMIT, replace=False)]
    norms = np.sum(points * points, axis=1)
    chosen = [int(rng.integers(points.shape[0]))]
    closest = np.full(points.shape[0], np.inf)
    new = np.array(chosen)
    while True:
        block = points[new]
        distances = norms[:, None] - 2.0 * (points @ block.T) + norms[new][None, :]
        closest = np.minimum(closest, np.maximum(distances, 0.0).min(axis=1))
        remaining = k - len(chosen)
        if remaining == 0:
            break
        draw = min(remaining, max(1, k // SEED_ROUNDS))
        cumulative = np.cumsum(closest)
        if cumulative[-1] > 0.0:
            targets = rng.random(draw) * cumulative[-1]
            picks = np.searchsorted(cumulative, targets, side="right")
            new = np.minimum(picks, points.shape[0] - 1)
        else:
            new = rng.integers(points.shape[0], size=draw)
        chosen += new.tolist()
    return points[np.array(chosen)].copy()


def _cluster_sums(labels: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    # A sparse one-hot product is far faster than np.add.at for this scatter.
    one_hot = sparse.csr_matrix(
        (np.ones(labels.shape[0]), (labels, np.arange(labels.shape[0]))),
        shape=(k, labels.shape[0]),
    )
    return np.asarray(one_hot @ points)


def fit_codebook(
    frames: np.ndarray, k: int | None = None, *, seed: int = 0, iterations: int = 20
) -> np.ndarray:
    """Seeded k-means++ then Lloyd iterations over [N, D] frames; returns float32 [K, D]."""
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise ValueError(f"need a non-empty [N, D] frame matrix, got shape {frames.shape}")
    k = default_codebook_size(frames.shape[0]) if k is None else k
    if not 1 <= k <= frames.shape[0]:
        raise ValueError(f"codebook size {k} must be in 1..{frames.shape[0]} (frames available)")
    rng = np.random.default_rng(seed)
    points = frames.astype(np.float32)
    if points.shape[0] > FIT_SAMPLE_LIMIT:
        points = points[np.sort(rng.choice(points.shape[0], FIT_SAMPLE_LIMIT, replace=False))]
    centres = _kmeans_plus_plus(points, k, rng)
    previous: np.ndarray | None = None
    for _ in range(iterations):
        labels = nearest_codes(points, centres)
        # Stop once almost no frame changes code; later passes barely move the centres.
        if previous is not None and np.mean(labels != previous) < STABLE_FRACTION:
            break
        previous = labels
        counts = np.bincount(labels, minlength=k)
        sums = _cluster_sums(labels, points.astype(np.float64), k)
        moved = centres.copy()
        filled = counts > 0
        moved[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if empty.size:
            # Restart dead codes on the points worst served by the current codebook.
            errors = np.sum((points - moved[labels]) ** 2, axis=1)
            moved[empty] = points[np.argsort(errors, kind="stable")[::-1][: empty.size]]
        centres = moved
    return centres.astype(np.float32)


def encode(ssl: np.ndarray, codebook: np.ndarray) -> list[int]:
    """25 Hz code ids of one utterance's [768, T50] SSL frames."""
    pooled = pool_frames(ssl)
    if pooled.shape[0] == 0:
        return []
    return nearest_codes(pooled, codebook.astype(np.float32)).tolist()
