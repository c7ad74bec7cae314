from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.training.data.annotations import ListParseError, find_list, parse_list


def _wav(path: Path, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


def test_parse_resolves_relative_absolute_and_foreign_paths(tmp_path: Path) -> None:
    _wav(tmp_path / "wavs" / "a.wav")
    _wav(tmp_path / "b.wav")
    _wav(tmp_path / "deep" / "nested" / "c.flac")
    (tmp_path / "train.list").write_text(
        "wavs/a.wav|spk|zh|你好。\n"
        f"{tmp_path / 'b.wav'}|spk|EN|Hello.\n"
        "C:\\Users\\someone\\dataset\\c.flac|spk|all_zh|再见\n"
        "\n",
        encoding="utf-8",
    )
    utterances = parse_list(tmp_path / "train.list")
    assert [u.name for u in utterances] == ["a.wav", "b.wav", "c.flac"]
    assert [u.language for u in utterances] == ["zh", "en", "zh"]
    assert utterances[2].wav_path == tmp_path / "deep" / "nested" / "c.flac"
    assert all(u.wav_path.is_file() for u in utterances)
    assert find_list(tmp_path) == tmp_path / "train.list"
    # macOS zip debris is not a second list.
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._train.list").write_bytes(b"\x00\x05")
    (tmp_path / "._train.list").write_bytes(b"\x00\x05")
    assert find_list(tmp_path) == tmp_path / "train.list"


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    _wav(tmp_path / "ok.wav")
    _wav(tmp_path / "dup.wav")
    (tmp_path / "bad.list").write_text(
        "ok.wav|spk|en|Fine line.\n"
        "only|three|fields\n"
        "dup.wav|spk|en|   \n"
        "dup.wav|spk|xx|Unknown language.\n"
        "missing.wav|spk|en|No audio for this one.\n"
        "dup.wav|spk|en|First use of dup.\n"
        "sub/dup.wav|spk|en|Second use of the same basename.\n",
        encoding="utf-8",
    )
    with pytest.raises(ListParseError) as caught:
        parse_list(tmp_path / "bad.list")
    problems = caught.value.problems
    assert len(problems) == 5
    assert problems[0].startswith("line 2:") and "4 fields" in problems[0]
    assert problems[1].startswith("line 3:") and "empty text" in problems[1]
    assert problems[2].startswith("line 4:") and "unknown language 'xx'" in problems[2]
    assert problems[3].startswith("line 5:") and "missing wav" in problems[3]
    assert problems[4].startswith("line 7:") and "line 6" in problems[4]
    assert "line 5: missing wav" in str(caught.value)


def test_empty_list_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.list").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ListParseError, match="no utterances"):
        parse_list(tmp_path / "empty.list")


def test_find_list_refuses_ambiguous_datasets(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_list(tmp_path)
    (tmp_path / "a.list").write_text("", encoding="utf-8")
    (tmp_path / "b.list").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="several"):
        find_list(tmp_path)


def test_package_exports_without_importing_torch_for_list_parsing() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import worker.training.data.annotations\n"
        "assert 'torch' not in sys.modules, 'annotations pulled in torch'\n"
        "from worker.training.data import PreparedDataset, prepare_dataset\n"
        "assert callable(prepare_dataset) and hasattr(PreparedDataset, 'load')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
