from __future__ import annotations

import numpy as np
import pytest

from worker.training.data.features import bert_zeros, frame_count, projection, ssl_features
from worker.training.data.semantic import (
    default_codebook_size,
    encode,
    fit_codebook,
    nearest_codes,
    pool_frames,
)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(pitch) / 16000)
    return (0.3 * voiced + 0.02 * rng.standard_normal(t.shape[0])).astype(np.float32)


def test_ssl_features_are_768_dims_at_50_hz() -> None:
    features = ssl_features(_speechlike(1.0))
    assert features.shape == (768, frame_count(16000)) == (768, 49)
    assert features.dtype == np.float32
    assert ssl_features(_speechlike(3.0)).shape[1] == 149
    assert np.isfinite(features).all() and features.std() > 0


def test_ssl_features_are_deterministic_and_loudness_invariant() -> None:
    audio = _speechlike(1.5)
    first = ssl_features(audio)
    np.testing.assert_array_equal(first, ssl_features(audio.copy()))
    np.testing.assert_allclose(first, ssl_features(audio * 0.25), atol=1e-4)
    assert not np.allclose(first, ssl_features(audio[::-1].copy()), atol=1e-2)


def test_projection_preserves_distances() -> None:
    basis = projection()
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)


def test_bert_stand_in_is_zeros() -> None:
    bert = bert_zeros(17)
    assert bert.shape == (1024, 17) and bert.dtype == np.float32 and not bert.any()


def test_pooling_halves_the_frame_rate() -> None:
    ssl = np.arange(2 * 7, dtype=np.float32).reshape(2, 7)
    pooled = pool_frames(ssl)
    assert pooled.shape == (3, 2)
    np.testing.assert_allclose(pooled[:, 0], [0.5, 2.5, 4.5])


def test_kmeans_codes_are_in_range_deterministic_and_fit_clusters() -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 768)) * 10
    labels = rng.integers(0, 8, 800)
    frames = (centres[labels] + rng.standard_normal((800, 768)) * 0.1).astype(np.float32)
    codebook = fit_codebook(frames, 8, seed=5)
    assert codebook.shape == (8, 768) and codebook.dtype == np.float32
    np.testing.assert_array_equal(codebook, fit_codebook(frames, 8, seed=5))
    codes = nearest_codes(frames, codebook)
    assert codes.min() >= 0 and codes.max() < 8
    # Well-separated clusters: each true cluster maps to exactly one code.
    for cluster in range(8):
        assert len(set(codes[labels == cluster].tolist())) == 1
    assert len(set(codes.tolist())) == 8


def test_default_codebook_size_is_capped() -> None:
    assert default_codebook_size(10) == 2
    assert default_codebook_size(100_000) == 1024
    with pytest.raises(ValueError):
        fit_codebook(np.zeros((3, 768), dtype=np.float32), 4)


def test_encode_gives_25_hz_codes_below_1024() -> None:
    frames = ssl_features(_speechlike(2.0))
    codebook = fit_codebook(pool_frames(frames), seed=0)
    codes = encode(frames, codebook)
    assert len(codes) == frames.shape[1] // 2 == 49
    assert all(0 <= c < min(1024, codebook.shape[0]) for c in codes)
    assert codes == encode(frames, codebook)
