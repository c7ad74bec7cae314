"""Named model sizes for both stages: `tiny` for CPU tests, `v2` for the original GPT-SoVITS v2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelSize = Literal["tiny", "v2"]

PHONEME_VOCAB = 732
SEMANTIC_CODES = 1024
BERT_DIM = 1024
SSL_DIM = 768


@dataclass(frozen=True)
class T2SSize:
    """Shape of the stage-1 decoder-only transformer."""

    d_model: int
    n_heads: int
    n_layers: int
    ffn_dim: int
    dropout: float = 0.1
    phoneme_vocab: int = PHONEME_VOCAB
    semantic_codes: int = SEMANTIC_CODES
    bert_dim: int = BERT_DIM

    @property
    def eos(self) -> int:
        """Id of the end-of-speech token, appended after the codes."""
        return self.semantic_codes


@dataclass(frozen=True)
class AudioSize:
    """Signal settings of stage 2 (frames must stay at 50 Hz to line up with the SSL features)."""

    sample_rate: int = 32_000
    n_fft: int = 2048
    hop: int = 640
    n_mels: int = 128
    ref_bins: int = 704
    segment_frames: int = 32

    @property
    def n_bins(self) -> int:
        """Number of linear-spectrogram bins."""
        return self.n_fft // 2 + 1


@dataclass(frozen=True)
class SoVITSSize:
    """Shape of the stage-2 generator and discriminator."""

    audio: AudioSize
    ssl_dim: int = SSL_DIM
    codebook_size: int = SEMANTIC_CODES
    phoneme_vocab: int = PHONEME_VOCAB
    hidden: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    ssl_layers: int = 3
    text_layers: int = 6
    post_layers: int = 3
    rel_window: int = 4
    dropout: float = 0.1
    mrte_hidden: int = 512
    mrte_heads: int = 4
    gin: int = 512
    style_hidden: int = 128
    posterior_layers: int = 16
    flow_steps: int = 4
    flow_layers: int = 4
    wn_kernel: int = 5
    upsample_initial: int = 512
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_kernels: tuple[int, ...] = (16, 16, 8, 2, 2)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    disc_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    disc_width_divisor: int = 1


T2S_SIZES: dict[str, T2SSize] = {
    "tiny": T2SSize(d_model=64, n_heads=4, n_layers=2, ffn_dim=256),
    "v2": T2SSize(d_model=512, n_heads=16, n_layers=24, ffn_dim=2048),
}

SOVITS_SIZES: dict[str, SoVITSSize] = {
    # Keeps 32 kHz and 50 frames/s so the real prepared features fit; everything else shrinks.
    "tiny": SoVITSSize(
        audio=AudioSize(n_fft=1024, n_mels=32, ref_bins=352, segment_frames=8),
        hidden=32,
        filter_channels=64,
        ssl_layers=1,
        text_layers=2,
        post_layers=1,
        mrte_hidden=64,
        mrte_heads=2,
        gin=64,
        style_hidden=32,
        posterior_layers=4,
        flow_steps=2,
        flow_layers=2,
        upsample_initial=64,
        upsample_rates=(10, 8, 8),
        upsample_kernels=(20, 16, 16),
        resblock_kernels=(3,),
        disc_periods=(2, 3),
        disc_width_divisor=8,
    ),
    "v2": SoVITSSize(audio=AudioSize()),
}


def t2s_size(name: str) -> T2SSize:
    """Stage-1 size by name."""
    return T2S_SIZES[name]


def sovits_size(name: str) -> SoVITSSize:
    """Stage-2 size by name."""
    return SOVITS_SIZES[name]
