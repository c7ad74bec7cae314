from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker.training.data import layout


def test_name2text_round_trip_with_the_original_word2ph_format(tmp_path: Path) -> None:
    rows = [
        layout.TextRow("a.wav", ["n", "i3", "h", "ao3", "."], [2, 2, 1], "你好."),
        layout.TextRow("b.wav", ["HH", "AY1"], None, "Hi"),
    ]
    layout.write_name2text(tmp_path, rows)
    text = (tmp_path / layout.NAME2TEXT).read_text(encoding="utf-8")
    assert text.splitlines()[0] == "a.wav\tn i3 h ao3 .\t[2, 2, 1]\t你好."
    assert text.splitlines()[1] == "b.wav\tHH AY1\tNone\tHi"
    assert layout.read_name2text(tmp_path) == {row.name: row for row in rows}


def test_word2ph_reader_accepts_space_separated_lists() -> None:
    assert layout.parse_word2ph("2 2 1") == [2, 2, 1]
    assert layout.parse_word2ph("None") is None
    with pytest.raises(layout.LayoutError):
        layout.parse_word2ph("['a']")


def test_semantic_round_trip_has_the_header(tmp_path: Path) -> None:
    semantic = {"a.wav": [1, 2, 1023], "b.wav": [0]}
    layout.write_name2semantic(tmp_path, semantic)
    lines = (tmp_path / layout.NAME2SEMANTIC).read_text(encoding="utf-8").splitlines()
    assert lines == ["item_name\tsemantic_audio", "a.wav\t1 2 1023", "b.wav\t0"]
    assert layout.read_name2semantic(tmp_path) == semantic


def test_feature_tensors_round_trip_in_the_original_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ssl = rng.standard_normal((768, 33)).astype(np.float32)
    bert = rng.standard_normal((1024, 5)).astype(np.float32)
    layout.write_ssl(tmp_path, "a.wav", ssl)
    layout.write_bert(tmp_path, "a.wav", bert)
    saved = torch.load(tmp_path / "4-cnhubert" / "a.wav.pt", weights_only=True)
    assert tuple(saved.shape) == (1, 768, 33) and saved.dtype == torch.float32
    np.testing.assert_array_equal(layout.read_ssl(tmp_path, "a.wav"), ssl)
    np.testing.assert_array_equal(layout.read_bert(tmp_path, "a.wav", 5), bert)
    with pytest.raises(layout.LayoutError):
        layout.read_bert(tmp_path, "a.wav", 6)
    missing = layout.read_bert(tmp_path, "other.wav", 4)
    assert missing.shape == (1024, 4) and not missing.any()


def test_codebook_and_meta_round_trip(tmp_path: Path) -> None:
    assert layout.read_codebook(tmp_path) is None
    codebook = np.random.default_rng(1).standard_normal((16, 768)).astype(np.float32)
    layout.write_codebook(tmp_path, codebook)
    np.testing.assert_array_equal(layout.read_codebook(tmp_path), codebook)
    meta = {"a.wav": layout.Meta("alice", "zh"), "b.wav": layout.Meta("bob", "en")}
    layout.write_meta(tmp_path, meta)
    assert layout.read_meta(tmp_path) == meta


def test_per_part_files_are_merged_when_the_combined_file_is_missing(tmp_path: Path) -> None:
    (tmp_path / "6-name2semantic-0.tsv").write_text("a.wav\t1 2", encoding="utf-8")
    (tmp_path / "6-name2semantic-1.tsv").write_text("b.wav\t3", encoding="utf-8")
    (tmp_path / "2-name2text-0.txt").write_text("a.wav\tAA1\tNone\ta\n", encoding="utf-8")
    assert layout.read_name2semantic(tmp_path) == {"a.wav": [1, 2], "b.wav": [3]}
    assert list(layout.read_name2text(tmp_path)) == ["a.wav"]
