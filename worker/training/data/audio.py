"""Audio loading, resampling and the original's peak-normalised mix for training clips."""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

TRAIN_SAMPLE_RATE = 32_000
SSL_SAMPLE_RATE = 16_000

# The original stores 0.5 * (x / peak * 0.95) + 0.5 * x: half peak-normalised,
# half untouched, so quiet takes are lifted without erasing loudness differences.
PEAK_TARGET = 0.95
NORMALISED_SHARE = 0.5
# The original drops clips whose decoded peak exceeds 2.2 (broken float files).
MAX_PEAK = 2.2
SILENCE_PEAK = 1e-3
MIN_SECONDS = 0.3
# S1 drops anything over 54 s of semantic tokens; keep a little headroom.
MAX_SECONDS = 60.0


class AudioError(ValueError):
    """A clip that cannot be used for training; the message names the file and why."""


@dataclass(frozen=True)
class PreparedAudio:
    """A clip after loading: the 32 kHz training wave and the 16 kHz SSL input."""

    wav32k: np.ndarray
    wav16k: np.ndarray


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D float signal."""
    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    divisor = gcd(source_rate, target_rate)
    out = resample_poly(audio.astype(np.float64), target_rate // divisor, source_rate // divisor)
    return out.astype(np.float32)


def load_mono(path: Path, target_rate: int = TRAIN_SAMPLE_RATE) -> np.ndarray:
    """Read wav/flac/ogg as float32 mono at `target_rate`."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"{path.name}: cannot decode audio ({exc})") from exc
    mono = data.mean(axis=1)
    return resample(mono, int(rate), target_rate)


def check_clip(
    audio: np.ndarray,
    name: str,
    rate: int = TRAIN_SAMPLE_RATE,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> float:
    """Validate a clip and return its peak; raises AudioError with the reason."""
    seconds = audio.shape[0] / rate
    if seconds < min_seconds:
        raise AudioError(f"{name}: too short ({seconds:.2f} s < {min_seconds} s)")
    if seconds > max_seconds:
        raise AudioError(f"{name}: too long ({seconds:.1f} s > {max_seconds} s)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name}: contains NaN or infinite samples")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: silent (peak {peak:.2e})")
    if peak > MAX_PEAK:
        raise AudioError(f"{name}: peak {peak:.2f} > {MAX_PEAK}, the file is probably corrupt")
    return peak


def peak_mix(audio: np.ndarray, peak: float) -> np.ndarray:
    """The original's mix of the peak-normalised and the raw signal, clipped to [-1, 1)."""
    mixed = NORMALISED_SHARE * (audio / peak * PEAK_TARGET) + (1.0 - NORMALISED_SHARE) * audio
    return np.clip(mixed, -1.0, 32767 / 32768).astype(np.float32)


def prepare_clip(path: Path, name: str | None = None) -> PreparedAudio:
    """Load, check and normalise one clip into its 32 kHz and 16 kHz forms."""
    label = name or path.name
    wav32k = load_mono(path, TRAIN_SAMPLE_RATE)
    peak = check_clip(wav32k, label)
    mixed = peak_mix(wav32k, peak)
    return PreparedAudio(wav32k=mixed, wav16k=resample(mixed, TRAIN_SAMPLE_RATE, SSL_SAMPLE_RATE))


def write_pcm16(path: Path, audio: np.ndarray, rate: int = TRAIN_SAMPLE_RATE) -> None:
    """Write 16-bit PCM wav whatever the file's extension (names keep the source's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(str(tmp), np.clip(audio, -1.0, 32767 / 32768), rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def read_pcm(path: Path, expected_rate: int = TRAIN_SAMPLE_RATE) -> np.ndarray:
    """Read a prepared wav as float32 mono, resampling if it is not at `expected_rate`."""
    return load_mono(path, expected_rate)
