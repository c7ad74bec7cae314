"""Built-in stand-ins for the pretrained feature extractors (cnhubert SSL and RoBERTa BERT).

SSL: the original feeds 16 kHz audio to chinese-hubert-base and keeps its last
hidden state, 768 values every 320 samples (50 Hz). Those weights are not
bundled and are never downloaded at run time, so this module computes a
deterministic feature on the same grid: 80 log-mel bins with per-utterance mean
removed (so loudness and channel do not move the codes, as HuBERT's group-norm
front makes it roughly scale-invariant), plus deltas and delta-deltas, 240
values in all, mapped to 768 dims by a fixed seeded matrix with orthonormal
columns (DCT-based). Orthonormal columns keep every distance, so k-means on the
768-d frames is k-means on the log-mel frames, while the shapes are those the
real stage-2 model expects. Mel frames carry speaker timbre that HuBERT mostly drops, so this
is good for scheduling, tests and small fine-tunes, not a quality claim.
Precomputed cnhubert features in the original layout are used as they are.

BERT: zeros of shape [1024, n_phones]. The original writes RoBERTa features
only for Mandarin lines and its trainer uses zeros for every other line, so
zeros are what it trains on for most data anyway.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SSL_DIM = 768
BERT_DIM = 1024
SSL_RATE = 16_000
HOP = 320  # 50 frames per second at 16 kHz, HuBERT's stride
WINDOW = 400  # HuBERT's receptive field: 25 ms
N_FFT = 512
N_MELS = 80
F_MAX = 8000.0
LOG_FLOOR = 1e-5
DELTA_WIDTH = 2
PROJECTION_SEED = 732_768


def frame_count(n_samples_16k: int) -> int:
    """Frames HuBERT yields for a 16 kHz clip (a 400-sample window every 320 samples)."""
    if n_samples_16k < WINDOW:
        return 0
    return (n_samples_16k - WINDOW) // HOP + 1


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Triangular HTK-scale filters, [N_MELS, N_FFT // 2 + 1]."""
    bin_hz = np.linspace(0.0, SSL_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(F_MAX)), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


@lru_cache(maxsize=1)
def projection() -> np.ndarray:
    """Fixed [768, 240] matrix with orthonormal columns (seeded, so features are reproducible).

    Built from seeded-chosen columns of the orthonormal DCT-II basis with seeded
    row signs, which needs no LAPACK call (a QR here is slow on busy small hosts
    and its signs vary between builds).
    """
    rng = np.random.default_rng(PROJECTION_SEED)
    frequencies = np.sort(rng.choice(np.arange(1, SSL_DIM), 3 * N_MELS, replace=False))
    positions = np.arange(SSL_DIM)[:, None] + 0.5
    basis = np.sqrt(2.0 / SSL_DIM) * np.cos(np.pi / SSL_DIM * positions * frequencies[None, :])
    signs = rng.choice(np.array([-1.0, 1.0]), SSL_DIM)
    return signs[:, None] * basis


def log_mel(wav16k: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram [N_MELS, T] on HuBERT's 50 Hz grid."""
    frames = frame_count(wav16k.shape[0])
    if frames == 0:
        return np.zeros((N_MELS, 0))
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(frames)[:, None]
    windowed = wav16k.astype(np.float64)[index] * np.hanning(WINDOW + 2)[1:-1][None, :]
    power = np.abs(np.fft.rfft(windowed, n=N_FFT, axis=1)) ** 2
    return np.log(np.maximum(mel_filterbank() @ power.T, LOG_FLOOR))


def deltas(features: np.ndarray, width: int = DELTA_WIDTH) -> np.ndarray:
    """Regression deltas along time of a [D, T] array (edges repeated)."""
    padded = np.pad(features, ((0, 0), (width, width)), mode="edge")
    frames = features.shape[1]
    numerator = sum(
        n * (padded[:, width + n : width + n + frames] - padded[:, width - n : width - n + frames])
        for n in range(1, width + 1)
    )
    return numerator / (2 * sum(n * n for n in range(1, width + 1)))


def ssl_features(wav16k: np.ndarray) -> np.ndarray:
    """Deterministic 768-d, 50 Hz frames for a 16 kHz clip: float32 [768, T]."""
    mel = log_mel(wav16k)
    mel = mel - mel.mean(axis=1, keepdims=True) if mel.shape[1] else mel
    stacked = np.concatenate([mel, deltas(mel), deltas(deltas(mel))], axis=0)
    return (projection() @ stacked).astype(np.float32)


def bert_zeros(n_phones: int) -> np.ndarray:
    """The BERT stand-in: float32 zeros [1024, n_phones]."""
    return np.zeros((BERT_DIM, n_phones), dtype=np.float32)
