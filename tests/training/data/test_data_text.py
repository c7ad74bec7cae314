from __future__ import annotations

import pytest

from worker.training.data import symbols
from worker.training.data.text import TextError, en_number, g2p, pinyin_to_phones, zh_number


def test_symbol_table_has_the_v2_size_and_unknowns_are_unk() -> None:
    assert symbols.VOCAB_SIZE == len(symbols.SYMBOLS) == 732
    assert len(set(symbols.SYMBOLS)) == len(symbols.SYMBOLS)
    assert symbols.SYMBOLS[0] == "!" and symbols.SYMBOLS[322:324] == ("[", "]")
    assert symbols.SYMBOLS[353] == "Ya" and symbols.symbol_to_id("Yaa1") > 353
    # Strings outside the table (kana, kanji, anything) are UNK, as upstream writes them.
    for unknown in ("か", "世", "ßomething"):
        assert symbols.symbol_to_id(unknown) == symbols.symbol_to_id("UNK")


def test_english_sentence() -> None:
    result = g2p("Hello world, the GPU runs at 42 watts!", "en")
    assert result.phones[:8] == ["HH", "AH0", "L", "OW1", "W", "ER1", "L", "D"]
    assert "," in result.phones and result.phones[-1] == "!"
    assert "forty two" in result.norm_text
    assert sum(result.word2ph) == len(result.phones)
    assert all(symbols.is_fixed(p) for p in result.phones)
    assert all(0 <= i < 732 for i in result.ids)


def test_unknown_english_words_are_spelled_or_ruled() -> None:
    assert g2p("XQZ", "en").phones == ["EH1", "K", "S", "K", "Y", "UW1", "Z", "IY1"]
    ruled = g2p("blorfting", "en").phones
    assert ruled[:2] == ["B", "L"] and ruled[-1] == "NG"
    assert sum(p[-1] == "1" for p in ruled) == 1  # exactly one primary stress


def test_mandarin_sentence() -> None:
    result = g2p("你好，世界！我们有3个人。", "zh")
    assert result.norm_text == "你好,世界!我们有三个人."
    assert result.phones[:5] == ["n", "i2", "h", "ao3", ","]  # 3-3 tone sandhi on 你
    assert result.phones[5:9] == ["sh", "ir4", "j", "ie4"]
    # The original's invariant: one word2ph entry per character of the normalised text.
    assert len(result.word2ph) == len(result.norm_text)
    assert sum(result.word2ph) == len(result.phones)
    assert all(symbols.is_fixed(p) for p in result.phones)
    assert all(0 <= i < 732 for i in result.ids)


@pytest.mark.parametrize(
    ("syllable", "expected"),
    [
        ("ai4", ("AA", "ai4")),
        ("er2", ("EE", "er2")),
        ("yi1", ("y", "i1")),
        ("you3", ("y", "ou3")),
        ("yuan2", ("y", "van2")),
        ("wei4", ("w", "ei4")),
        ("yan2", ("y", "En2")),
        ("wo3", ("w", "o3")),
        ("ju4", ("j", "v4")),
        ("xue2", ("x", "ve2")),
        ("zhi1", ("zh", "ir1")),
        ("si4", ("s", "i04")),
        ("lve4", ("l", "ve4")),
        ("de5", ("d", "e5")),
        ("n2", ("EE", "en2")),
    ],
)
def test_pinyin_maps_to_table_symbols(syllable: str, expected: tuple[str, str]) -> None:
    assert pinyin_to_phones(syllable) == expected
    assert all(symbols.is_fixed(p) for p in expected)


def test_mixed_mandarin_and_english_is_split_by_script() -> None:
    result = g2p("我用Python训练模型", "zh")
    assert result.phones[:4] == ["w", "o3", "y", "ong4"]
    assert "P" in result.phones and "AY1" in result.phones
    assert result.word2ph[2] == len(g2p("Python", "en").phones)
    assert len(result.word2ph) == 7  # 我 用 Python 训 练 模 型
    english_line = g2p("Say 你好 twice", "en")
    assert english_line.phones[2:6] == ["n", "i2", "h", "ao3"]
    assert english_line.norm_text == "Say 你好 twice"


def test_kana_become_japanese_phones_and_kanji_hashed_characters() -> None:
    result = g2p("こんにちは、世界。", "ja")
    kana = ["k", "o", "N", "n", "i", "ch", "i", "h", "a"]
    assert result.phones == [*kana, ",", "UNK", "UNK", "."]
    assert all(symbols.is_fixed(p) for p in kana)
    assert g2p("キョーはちょっと", "ja").phones == [
        "ky", "o", "o", "h", "a", "ch", "o", "cl", "t", "o",
    ]  # fmt: skip
    assert g2p("キョー", "ja").word2ph == [2, 1]


def test_hangul_falls_back_to_unk() -> None:
    result = g2p("안녕하세요", "ko")
    assert result.phones == ["UNK"] * 5 and result.word2ph == [1] * 5
    assert set(result.ids) == {symbols.UNKNOWN_ID}


def test_numbers_are_read_in_the_line_language() -> None:
    assert zh_number("105") == "一百零五"
    assert zh_number("12") == "十二"
    assert zh_number("20300") == "二万零三百"
    assert zh_number("3.14") == "三点一四"
    assert en_number("1205") == "one thousand two hundred five"
    assert en_number("0.5") == "zero point five"


def test_text_without_sound_is_an_error() -> None:
    with pytest.raises(TextError):
        g2p("…!?", "en")
