"""Japanese kana to the original's Japanese phone symbols (`k a`, `sh i`, `cl`, `N`, ...).

Kana spell their sounds, so a table gives the phones pyopenjtalk would write
for them; kanji need a dictionary and become `UNK` here.
"""

from __future__ import annotations

_VOWELS = "aiueo"
# Hiragana rows in あいうえお order with the consonant they start with.
_ROWS = {
    "あいうえお": "",
    "かきくけこ": "k",
    "さしすせそ": "s",
    "たちつてと": "t",
    "なにぬねの": "n",
    "はひふへほ": "h",
    "まみむめも": "m",
    "らりるれろ": "r",
    "がぎぐげご": "g",
    "ざじずぜぞ": "z",
    "だぢづでど": "d",
    "ばびぶべぼ": "b",
    "ぱぴぷぺぽ": "p",
}
# Kana whose consonant differs from its row's.
_IRREGULAR = {
    "し": ("sh", "i"),
    "ち": ("ch", "i"),
    "つ": ("ts", "u"),
    "ふ": ("f", "u"),
    "じ": ("j", "i"),
    "ぢ": ("j", "i"),
    "づ": ("z", "u"),
    "や": ("y", "a"),
    "ゆ": ("y", "u"),
    "よ": ("y", "o"),
    "わ": ("w", "a"),
    "を": ("", "o"),
    "ゔ": ("v", "u"),
}
# The i-row kana that merge with a following small ゃゅょ, and the merged consonant.
_PALATAL = {
    "き": "ky", "ぎ": "gy", "し": "sh", "じ": "j", "ち": "ch", "に": "ny",
    "ひ": "hy", "び": "by", "ぴ": "py", "み": "my", "り": "ry",
}  # fmt: skip
_SMALL_Y = {"ゃ": "a", "ゅ": "u", "ょ": "o"}
_SMALL_VOWELS = {"ぁ": "a", "ぃ": "i", "ぅ": "u", "ぇ": "e", "ぉ": "o"}


def _mora_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for row, consonant in _ROWS.items():
        for kana, vowel in zip(row, _VOWELS, strict=True):
            table[kana] = (consonant, vowel) if consonant else (vowel,)
    for kana, (consonant, vowel) in _IRREGULAR.items():
        table[kana] = (consonant, vowel) if consonant else (vowel,)
    table["ん"] = ("N",)
    table["っ"] = ("cl",)
    table.update({small: (vowel,) for small, vowel in _SMALL_VOWELS.items()})
    return table


_MORAE = _mora_table()


def to_hiragana(char: str) -> str:
    """Katakana to hiragana (other characters unchanged)."""
    code = ord(char)
    return chr(code - 0x60) if 0x30A1 <= code <= 0x30F6 else char


def is_kana(char: str) -> bool:
    """Whether the character is a hiragana or katakana letter (or the long-vowel mark)."""
    return char == "ー" or to_hiragana(char) in _MORAE or to_hiragana(char) in _SMALL_Y


def kana_units(run: str) -> list[tuple[str, list[str]]]:
    """Split a kana run into (text, phones) units; a kana plus a small ゃゅょ is one unit."""
    units: list[tuple[str, list[str]]] = []
    index = 0
    while index < len(run):
        char, hira = run[index], to_hiragana(run[index])
        following = to_hiragana(run[index + 1]) if index + 1 < len(run) else ""
        if hira in _PALATAL and following in _SMALL_Y:
            units.append((run[index : index + 2], [_PALATAL[hira], _SMALL_Y[following]]))
            index += 2
            continue
        if char == "ー":
            # The long mark repeats the previous vowel.
            previous = units[-1][1][-1] if units and units[-1][1][-1] in _VOWELS else None
            if previous is not None:
                units.append((char, [previous]))
        elif hira in _MORAE:
            units.append((char, list(_MORAE[hira])))
        elif hira in _SMALL_Y:
            units.append((char, ["y", _SMALL_Y[hira]]))
        index += 1
    return units
