"""The phoneme table against upstream's (`../shared/reference`, `text/symbols2.py`) as oracle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from worker.training.data import symbols
from worker.training.data.text import g2p

UPSTREAM = Path(__file__).resolve().parents[3].parent / "shared/reference/GPT-SoVITS/GPT_SoVITS"
pytestmark = pytest.mark.skipif(
    not (UPSTREAM / "text" / "symbols2.py").is_file(),
    reason="../shared/reference is not beside the checkout",
)

SENTENCES = (
    ("zh", "你好，世界！我们有3个人。"),
    ("zh", "这个模型在晚上训练，用的是清洁能源。"),
    ("en", "Hello world, the GPU runs at 42 watts!"),
    ("en", "Please schedule this training job for tonight."),
    ("ja", "こんにちは、キョーはちょっと。"),
    ("ko", "안녕하세요"),
)


@pytest.fixture(scope="module")
def upstream_text():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(UPSTREAM))
    try:
        import text  # upstream's package: its __init__ needs only the two symbol tables

        yield text
    finally:
        sys.path.remove(str(UPSTREAM))


def test_table_is_upstreams_v2_table_in_order(upstream_text) -> None:  # type: ignore[no-untyped-def]
    assert list(symbols.SYMBOLS) == upstream_text.symbols2.symbols


@pytest.mark.parametrize(("language", "sentence"), SENTENCES)
def test_ids_equal_cleaned_text_to_sequence_v2(upstream_text, language: str, sentence: str) -> None:  # type: ignore[no-untyped-def]
    phones = g2p(sentence, language).phones
    assert symbols.symbols_to_ids(phones) == upstream_text.cleaned_text_to_sequence(phones, "v2")
    # Every phone is upstream's (a phone outside the table is written UNK, as upstream does).
    assert all(phone in upstream_text.symbols2.symbols for phone in phones)


def test_every_pinyin_syllable_maps_as_upstreams_table() -> None:
    """Upstream's opencpop-strict.txt (pinyin -> initial and final) as oracle, all syllables."""
    from worker.training.data.text import pinyin_to_phones

    table = (UPSTREAM / "text" / "opencpop-strict.txt").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in table.splitlines() if line]
    assert len(rows) > 400
    for tone in "15":
        for syllable, phones in rows:
            initial, final = phones.split(" ")
            assert pinyin_to_phones(syllable + tone) == (initial, final + tone), syllable
