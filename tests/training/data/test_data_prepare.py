from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.io import wavfile

from worker.training.data import layout
from worker.training.data.prepare import PreparedDataset, PrepareError, prepare_dataset
from worker.training.data.symbols import symbol_to_id
from worker.training.sample import write_sample_dataset

HAS_ESPEAK = shutil.which("espeak-ng") is not None


def _check_prepared(dataset: PreparedDataset, n_items: int) -> None:
    assert len(dataset.items) == n_items
    assert dataset.codebook is not None and dataset.codebook.shape[1] == 768
    for item in dataset.items:
        n_phones = len(item.phoneme_ids)
        assert n_phones > 0 and all(0 <= i < 732 for i in item.phoneme_ids)
        assert item.bert.shape == (1024, n_phones) and item.bert.dtype == np.float32
        assert item.ssl.shape[0] == 768 and item.ssl.dtype == np.float32
        # 50 Hz SSL frames for the 32 kHz wave, 25 Hz semantic codes from them.
        assert abs(item.ssl.shape[1] - item.wav32k.shape[0] / 640) <= 2
        assert len(item.semantic) == item.ssl.shape[1] // 2
        assert all(0 <= c < dataset.codebook.shape[0] for c in item.semantic)
        assert np.max(np.abs(item.wav32k)) <= 1.0


def test_prepare_synthetic_sample_end_to_end_and_resume(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "dataset"
    write_sample_dataset(dataset_dir, n_utterances=6, engine="synthetic")
    seen: list[tuple[str, int, int]] = []
    out = tmp_path / "prepared"
    prepared = prepare_dataset(dataset_dir, out, progress=lambda *a: seen.append(a))
    _check_prepared(prepared, 6)
    assert {item.speaker for item in prepared.items} == {"synthetic"}
    assert {stage for stage, _, _ in seen} == {"text", "audio", "semantic"}
    assert ("audio", 6, 6) in seen
    assert 10.0 < prepared.total_audio_seconds() < 40.0
    assert (out / "5-wav32k" / "synthetic_000.wav").is_file()
    assert (out / "4-cnhubert" / "synthetic_000.wav.pt").is_file()

    # A second run reuses everything: files are untouched and results identical.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix != ".tsv"}
    seen.clear()
    again = prepare_dataset(dataset_dir, out, progress=lambda *a: seen.append(a))
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert not [s for s in seen if s[0] == "semantic"]
    assert [i.semantic for i in again.items] == [i.semantic for i in prepared.items]
    loaded = PreparedDataset.load(out)
    assert [i.name for i in loaded.items] == [i.name for i in prepared.items]
    np.testing.assert_array_equal(loaded.items[0].ssl, prepared.items[0].ssl)


@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng binary not installed")
def test_prepare_espeak_sample_end_to_end(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "dataset"
    write_sample_dataset(dataset_dir, engine="espeak")
    prepared = prepare_dataset(dataset_dir, tmp_path / "prepared", codebook_size=64)
    _check_prepared(prepared, 12)
    assert prepared.codebook is not None and prepared.codebook.shape == (64, 768)
    first = prepared.items[0]
    assert first.language == "en" and first.speaker.startswith("espeak-")
    # "The quick brown fox ..." starts with DH AH0.
    assert first.phoneme_ids[:2] == [symbol_to_id("DH"), symbol_to_id("AH0")]


def test_bad_clips_are_skipped_with_their_reason(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "dataset"
    list_path = write_sample_dataset(dataset_dir, n_utterances=3, engine="synthetic")
    sf.write(str(dataset_dir / "wavs" / "quiet.wav"), np.zeros(32000), 32000)
    with list_path.open("a", encoding="utf-8") as handle:
        handle.write("wavs/quiet.wav|synthetic|en|Nothing to hear.\n")
    prepared = prepare_dataset(dataset_dir, tmp_path / "prepared")
    assert len(prepared.items) == 3
    assert "silent" in prepared.skipped["quiet.wav"]
    assert "quiet.wav" in (tmp_path / "prepared" / "skipped.tsv").read_text(encoding="utf-8")


def test_all_clips_unusable_is_an_error(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "quiet.wav"), np.zeros(32000), 32000)
    (tmp_path / "x.list").write_text("quiet.wav|s|en|Hello there.\n", encoding="utf-8")
    with pytest.raises(PrepareError, match="silent"):
        prepare_dataset(tmp_path, tmp_path / "out")


def _original_layout(root: Path) -> dict[str, object]:
    """A directory as the original's tools write it: fp16 tensors, Python-list word2ph."""
    rng = np.random.default_rng(0)
    (root / "3-bert").mkdir(parents=True)
    (root / "4-cnhubert").mkdir()
    (root / "5-wav32k").mkdir()
    (root / "2-name2text.txt").write_text(
        "zh_1.wav\tn i2 h ao3 .\t[2, 2, 1]\t你好.\n"
        "en_1.wav\tHH AH0 L OW1 W ER1 L D\tNone\thello world\n"
        "yue_1.wav\tYn Yei5 Yh You2\t[2, 2]\t你好\n",
        encoding="utf-8",
    )
    bert = torch.from_numpy(rng.standard_normal((1024, 5)).astype(np.float16))
    torch.save(bert, root / "3-bert" / "zh_1.wav.pt")
    ssl: dict[str, np.ndarray] = {}
    for name, frames in (("zh_1.wav", 40), ("en_1.wav", 60), ("yue_1.wav", 30)):
        tensor = torch.from_numpy(rng.standard_normal((1, 768, frames)).astype(np.float16))
        torch.save(tensor, root / "4-cnhubert" / f"{name}.pt")
        ssl[name] = tensor[0].float().numpy()
        samples = (rng.standard_normal(frames * 640) * 3000).astype(np.int16)
        wavfile.write(str(root / "5-wav32k" / name), 32000, samples)
    (root / "6-name2semantic.tsv").write_text(
        "item_name\tsemantic_audio\nzh_1.wav\t5 6 7\nen_1.wav\t1023 0\nyue_1.wav\t9\n",
        encoding="utf-8",
    )
    return {"bert": bert.float().numpy(), "ssl": ssl}


def test_reading_a_directory_prepared_by_the_original(tmp_path: Path) -> None:
    expected = _original_layout(tmp_path)
    dataset = PreparedDataset.load(tmp_path)
    assert [i.name for i in dataset.items] == ["zh_1.wav", "en_1.wav", "yue_1.wav"]
    assert dataset.codebook is None
    zh, en, yue = dataset.items
    assert zh.phoneme_ids == [symbol_to_id(s) for s in ["n", "i2", "h", "ao3", "."]]
    np.testing.assert_array_equal(zh.bert, expected["bert"])
    assert zh.language == "zh" and en.language == "unknown"
    assert en.bert.shape == (1024, 8) and not en.bert.any()
    assert all(i < 732 for i in yue.phoneme_ids)
    np.testing.assert_array_equal(en.ssl, expected["ssl"]["en_1.wav"])
    assert en.semantic == [1023, 0] and en.wav32k.shape == (60 * 640,)
    assert en.wav32k.dtype == np.float32 and np.abs(en.wav32k).max() <= 1.0


def test_supplied_original_features_are_used_as_they_are(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "dataset"
    expected = _original_layout(dataset_dir / "logs" / "exp")
    (dataset_dir / "train.list").write_text(
        "D:\\GPT-SoVITS\\raw\\zh_1.wav|me|zh|你好。\nen_1.wav|me|en|Hello world.\n",
        encoding="utf-8",
    )
    out = tmp_path / "prepared"
    prepared = prepare_dataset(dataset_dir, out)
    assert [i.name for i in prepared.items] == ["zh_1.wav", "en_1.wav"]
    zh, en = prepared.items
    np.testing.assert_array_equal(zh.ssl, expected["ssl"]["zh_1.wav"])
    np.testing.assert_array_equal(zh.bert, expected["bert"])
    assert zh.semantic == [5, 6, 7] and en.semantic == [1023, 0]
    assert prepared.codebook is None  # the supplied tokens came without one
    assert (zh.speaker, zh.language, en.language) == ("me", "zh", "en")
    assert not (out / "4-cnhubert" / "yue_1.wav.pt").exists()  # not in the list


def test_our_directory_reads_like_the_original_expects(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "dataset"
    write_sample_dataset(dataset_dir, n_utterances=2, engine="synthetic")
    out = tmp_path / "prepared"
    prepare_dataset(dataset_dir, out)
    # The original's readers: tab-split rows of 4 fields, header then name<TAB>ids,
    # [1, 768, T] tensors loaded with torch.load, int16 wavs at 32 kHz.
    for line in (out / "2-name2text.txt").read_text(encoding="utf-8").splitlines():
        name, phones, word2ph, _ = line.split("\t")
        parsed = ast.literal_eval(word2ph)
        assert parsed is None or all(isinstance(n, int) for n in parsed)
        assert phones.split()
    semantic_lines = (out / "6-name2semantic.tsv").read_text(encoding="utf-8").splitlines()
    assert semantic_lines[0] == "item_name\tsemantic_audio"
    name = semantic_lines[1].split("\t")[0]
    assert tuple(torch.load(out / "4-cnhubert" / f"{name}.pt").shape)[:2] == (1, 768)
    rate, samples = wavfile.read(str(out / "5-wav32k" / name))
    assert rate == 32000 and samples.dtype == np.int16
    assert layout.read_codebook(out) is not None


def test_requested_codebook_larger_than_the_data_is_shrunk(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "dataset"
    write_sample_dataset(dataset_dir, n_utterances=1, engine="synthetic")
    prepared = prepare_dataset(dataset_dir, tmp_path / "prepared", codebook_size=1024)
    n_frames = len(prepared.items[0].semantic)
    assert prepared.codebook is not None and prepared.codebook.shape == (n_frames, 768)
    assert n_frames < 1024
    # One code per frame: only identical frames (the silent lead-in) may share a code.
    assert max(prepared.items[0].semantic) < n_frames
    assert len(set(prepared.items[0].semantic)) > 0.8 * n_frames
