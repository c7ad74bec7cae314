"""Spectrogram and mel features for stage 2, computed in fp32 on the training device."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from worker.training.models.sizes import AudioSize


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters [n_mels, n_fft // 2 + 1], fmin 0, fmax sr/2."""
    bin_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bin_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def linear_spectrogram(wav: torch.Tensor, audio: AudioSize) -> torch.Tensor:
    """Magnitude spectrogram [B, n_bins, n // hop] of wav [B, n] (reflect-padded, Hann window)."""
    with torch.autocast(wav.device.type, enabled=False):
        return _magnitude(wav, audio)


def _magnitude(wav: torch.Tensor, audio: AudioSize) -> torch.Tensor:
    pad = (audio.n_fft - audio.hop) // 2
    padded = F.pad(wav.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(audio.n_fft, device=wav.device)
    stft = torch.stft(
        padded, audio.n_fft, audio.hop, audio.n_fft, window, center=False, return_complex=True
    )
    return torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + 1e-6)


def log_mel(spec: torch.Tensor, audio: AudioSize) -> torch.Tensor:
    """Natural-log mel [B, n_mels, T] of a linear spectrogram [B, n_bins, T]."""
    filters = torch.from_numpy(mel_filterbank(audio.sample_rate, audio.n_fft, audio.n_mels))
    with torch.autocast(spec.device.type, enabled=False):
        mel = filters.to(spec.device) @ spec.float()
        return torch.log(mel.clamp(min=1e-5))
