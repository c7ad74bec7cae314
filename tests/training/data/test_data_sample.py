from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from worker.training.data.annotations import parse_list
from worker.training.sample import audio_seconds, write_sample_dataset, zip_dataset

HAS_ESPEAK = shutil.which("espeak-ng") is not None


def test_synthetic_fallback_is_labelled_and_sized(tmp_path: Path) -> None:
    list_path = write_sample_dataset(tmp_path, engine="synthetic")
    utterances = parse_list(list_path)
    assert len(utterances) == 12
    assert {u.speaker for u in utterances} == {"synthetic"}
    assert "SYNTHETIC" in (tmp_path / "README.txt").read_text(encoding="utf-8")
    assert 20.0 <= audio_seconds(list_path) <= 60.0
    info = sf.info(str(utterances[0].wav_path))
    assert (info.samplerate, info.channels, info.subtype) == (32000, 1, "PCM_16")


def test_synthetic_fallback_is_reproducible(tmp_path: Path) -> None:
    first = write_sample_dataset(tmp_path / "a", n_utterances=2, seed=7, engine="synthetic")
    second = write_sample_dataset(tmp_path / "b", n_utterances=2, seed=7, engine="synthetic")
    assert first.read_text() == second.read_text()
    for name in ("synthetic_000.wav", "synthetic_001.wav"):
        a = (first.parent / "wavs" / name).read_bytes()
        assert a == (second.parent / "wavs" / name).read_bytes()


@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng binary not installed")
def test_espeak_dataset_is_real_speech_with_its_list(tmp_path: Path) -> None:
    list_path = write_sample_dataset(tmp_path, engine="espeak")
    utterances = parse_list(list_path)
    assert len(utterances) == 12
    assert all(u.speaker.startswith("espeak-") for u in utterances)
    assert {u.language for u in utterances} <= {"en", "zh"}
    assert not (tmp_path / "README.txt").exists()
    assert 20.0 <= audio_seconds(list_path) <= 60.0
    assert sf.info(str(utterances[0].wav_path)).samplerate == 32000


def test_zip_dataset_holds_the_list_and_clips(tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    write_sample_dataset(dataset, n_utterances=3, engine="synthetic")
    archive = zip_dataset(dataset, tmp_path / "ds.zip")
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
    assert names == sorted(names)
    assert {"sample.list", "wavs/synthetic_000.wav"} <= set(names)
    # The service refuses members other than the list and audio; the README stays home.
    assert "README.txt" not in names
    assert len([n for n in names if n.endswith(".wav")]) == 3
