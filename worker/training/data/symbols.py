"""The phoneme symbol table: upstream GPT-SoVITS v2's 732 symbols, in upstream's id order.

Ids equal upstream's `cleaned_text_to_sequence(phones, "v2")`, so the text-embedding rows of
an upstream base belong to the same phonemes here. The order is upstream's rule:

| ids     | block                                                                     |
|---------|---------------------------------------------------------------------------|
| 0-321   | sorted: pad `_`, punctuation, pauses, Mandarin initials and toned finals,  |
|         | Japanese phones, ARPAbet (a symbol in several inventories appears once)    |
| 322-323 | the Japanese pitch marks `[` `]`                                           |
| 324-352 | Korean jamo and `空 停`, sorted                                            |
| 353-731 | Cantonese phones (`Y` + jyutping initial or final, with tones 1-6), sorted |

A symbol outside the table is `UNK`, as upstream's `clean_text` writes it.
"""

from __future__ import annotations

VOCAB_SIZE = 732
PAD = "_"
# Upstream pads phoneme sequences with id 0 (which is "!", not "_"); padding is masked.
PAD_ID = 0
UNKNOWN = "UNK"

PUNCTUATION = ("!", "?", "…", ",", ".", "-")
PAUSES = ("SP", "SP2", "SP3", UNKNOWN)

ZH_INITIALS = (
    "AA", "EE", "OO", "b", "c", "ch", "d", "f", "g", "h", "j", "k", "l",
    "m", "n", "p", "q", "r", "s", "sh", "t", "w", "x", "y", "z", "zh",
)  # fmt: skip
ZH_FINALS = (
    "E", "En", "a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "er", "i",
    "i0", "ia", "ian", "iang", "iao", "ie", "in", "ing", "iong", "ir", "iu", "o",
    "ong", "ou", "u", "ua", "uai", "uan", "uang", "ui", "un", "uo", "v", "van",
    "ve", "vn",
)  # fmt: skip
ZH_TONES = ("1", "2", "3", "4", "5")

ARPA_CONSONANTS = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG",
    "P", "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
ARPA_VOWELS = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
)  # fmt: skip
# Two unstressed spellings the original's table also carries.
ARPA_BARE = ("ER", "IH")

# The phones upstream's Japanese front end writes (OpenJTalk's, with `cl` and `N`).
JA_PHONES = (
    "I", "N", "U", "a", "b", "by", "ch", "cl", "d", "dy", "e", "f", "g", "gy", "h",
    "hy", "i", "j", "k", "ky", "m", "my", "n", "ny", "o", "p", "py", "r", "ry", "s",
    "sh", "t", "ts", "u", "v", "w", "y", "z",
)  # fmt: skip
JA_PITCH = ("[", "]")
KO_JAMO = tuple("ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停")

# Cantonese: jyutping initials and a few finals without tone, and finals with tones 1-6,
# each written with a leading `Y` (the inventory upstream's Cantonese front end uses).
YUE_UNTONED = (
    "b", "c", "d", "f", "g", "gw", "h", "j", "k", "kw", "l", "m", "n", "ng", "p",
    "s", "t", "w", "z", "a", "aa", "ai", "ak", "au", "e", "o", "oi", "ok", "on",
    "ou", "uk",
)  # fmt: skip
YUE_TONED = (
    "a", "aa", "aai", "aak", "aam", "aan", "aang", "aap", "aat", "aau", "ai", "ak",
    "am", "an", "ang", "ap", "at", "au", "e", "ei", "ek", "eng", "eoi", "eon",
    "eot", "g", "i", "ik", "im", "in", "ing", "ip", "it", "iu", "k", "m", "n", "o",
    "oe", "oek", "oeng", "oi", "ok", "on", "ong", "ot", "ou", "p", "t", "u", "ui",
    "uk", "un", "ung", "ut", "yu", "yun", "yut",
)  # fmt: skip
YUE_TONES = ("1", "2", "3", "4", "5", "6")


def _table() -> tuple[str, ...]:
    shared = {PAD, *PUNCTUATION, *PAUSES, *ZH_INITIALS, *JA_PHONES, *ARPA_CONSONANTS}
    shared |= {final + tone for final in ZH_FINALS for tone in ZH_TONES}
    shared |= {vowel + stress for vowel in ARPA_VOWELS for stress in "012"} | set(ARPA_BARE)
    yue = {"Y" + unit for unit in YUE_UNTONED}
    yue |= {"Y" + final + tone for final in YUE_TONED for tone in YUE_TONES}
    table = (*sorted(shared), *JA_PITCH, *sorted(KO_JAMO), *sorted(yue))
    if len(set(table)) != len(table) or len(table) != VOCAB_SIZE:
        raise AssertionError(f"symbol table has {len(table)} entries, duplicates or not 732")
    return table


SYMBOLS = _table()
SYMBOL_TO_ID = {symbol: index for index, symbol in enumerate(SYMBOLS)}
UNKNOWN_ID = SYMBOL_TO_ID[UNKNOWN]
# Kept for readers of the old name: the whole table is fixed now.
FIXED_SYMBOLS = SYMBOLS


def symbol_to_id(symbol: str) -> int:
    """Upstream v2 id of a symbol; a symbol outside the table is `UNK`."""
    return SYMBOL_TO_ID.get(symbol, UNKNOWN_ID)


def symbols_to_ids(symbols: list[str]) -> list[int]:
    """Ids of a phone sequence (upstream's `cleaned_text_to_sequence(..., "v2")`)."""
    return [symbol_to_id(symbol) for symbol in symbols]


def is_fixed(symbol: str) -> bool:
    """Whether the symbol is in the table (else it becomes `UNK`)."""
    return symbol in SYMBOL_TO_ID
