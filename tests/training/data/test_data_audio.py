from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.training.data.audio import AudioError, peak_mix, prepare_clip, read_pcm, write_pcm16


def _tone(seconds: float, rate: int, amplitude: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = amplitude * np.sin(2 * np.pi * 220 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def test_clip_is_resampled_to_both_rates_and_peak_mixed(tmp_path: Path) -> None:
    path = tmp_path / "stereo.flac"
    sf.write(str(path), _tone(1.0, 44100, amplitude=0.2, channels=2), 44100)
    clip = prepare_clip(path)
    assert abs(clip.wav32k.shape[0] - 32000) <= 1
    assert abs(clip.wav16k.shape[0] - 16000) <= 1
    # 0.5 * 0.95 (normalised half) + 0.5 * 0.2 (raw half)
    assert np.max(np.abs(clip.wav32k)) == pytest.approx(0.5 * 0.95 + 0.5 * 0.2, abs=0.01)


def test_peak_mix_matches_the_original_formula() -> None:
    audio = np.array([0.0, 0.1, -0.4], dtype=np.float32)
    mixed = peak_mix(audio, 0.4)
    expected = 0.5 * (audio / 0.4 * 0.95) + 0.5 * audio
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (np.zeros(32000), "silent"),
        (_tone(0.1, 32000), "too short"),
        (_tone(61.0, 8000), "too long"),
    ],
)
def test_unusable_clips_are_rejected_with_a_reason(
    tmp_path: Path, audio: np.ndarray, reason: str
) -> None:
    rate = 8000 if audio.shape[0] == int(61.0 * 8000) else 32000
    path = tmp_path / "bad.wav"
    sf.write(str(path), audio, rate)
    with pytest.raises(AudioError, match=reason) as caught:
        prepare_clip(path)
    assert "bad.wav" in str(caught.value)


def test_undecodable_file_is_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"not a wav file at all")
    with pytest.raises(AudioError, match="cannot decode"):
        prepare_clip(path)


def test_pcm16_round_trip_keeps_the_name_and_format(tmp_path: Path) -> None:
    audio = (0.5 * _tone(0.5, 32000)).astype(np.float32)
    path = tmp_path / "clip.flac"  # the original keeps the source name whatever the format
    write_pcm16(path, audio)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 32000)
    np.testing.assert_allclose(read_pcm(path), audio, atol=1 / 32768)
