"""The phoneme symbol table: exactly 732 ids, the size of GPT-SoVITS v2's table.

Layout (our own ordering; ids are never shared with the original's files, which
store symbol strings, so only the strings must agree):

| ids       | block                                                        |
|-----------|--------------------------------------------------------------|
| 0         | padding `_`                                                  |
| 1-10      | punctuation `! ? … , . -` and the pauses `SP SP2 SP3`, `UNK` |
| 11-36     | Mandarin initials (with `AA EE OO` for zero-initial syllables)|
| 37-231    | Mandarin finals x tones 1-5 (5 = neutral), e.g. `ang4`      |
| 232-302   | English ARPAbet: consonants, vowels with stress 0/1/2, `ER IH`|
| 303-323   | Japanese phones not already present, and the pitch marks `[ ]`|
| 324-352   | Korean jamo                                                   |
| 353-731   | reserved block: any other symbol, hashed (CRC-32) into it     |

The Mandarin, English, Japanese and Korean strings are the ones the original
writes, so a `2-name2text.txt` prepared by its tools maps onto this table
(Cantonese and other unseen symbols land in the hashed block), and our zh/en
files (and Japanese kana) use only strings its table knows. Characters without
a phone-level front-end here (kanji, Hangul, Cantonese) are written as
themselves and hashed; collisions in the 379-id block are accepted.
"""

from __future__ import annotations

import zlib

VOCAB_SIZE = 732
PAD = "_"
PAD_ID = 0

PUNCTUATION = ("!", "?", "…", ",", ".", "-")
PAUSES = ("SP", "SP2", "SP3", "UNK")

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

JA_EXTRA = (
    "I", "U", "a", "by", "cl", "dy", "e", "gy", "hy", "i", "ky", "my", "ny",
    "o", "py", "ry", "ts", "u", "v", "[", "]",
)  # fmt: skip
KO_JAMO = tuple("ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎㅏㅐㅓㅔㅗㅜㅡㅣ空停")


def _fixed_symbols() -> tuple[str, ...]:
    symbols: list[str] = [PAD, *PUNCTUATION, *PAUSES, *ZH_INITIALS]
    symbols += [final + tone for tone in ZH_TONES for final in ZH_FINALS]
    symbols += list(ARPA_CONSONANTS)
    symbols += [vowel + stress for vowel in ARPA_VOWELS for stress in "012"]
    symbols += [*ARPA_BARE, *JA_EXTRA, *KO_JAMO]
    if len(set(symbols)) != len(symbols):
        raise AssertionError("duplicate symbol in the fixed table")
    return tuple(symbols)


FIXED_SYMBOLS = _fixed_symbols()
SYMBOL_TO_ID = {symbol: index for index, symbol in enumerate(FIXED_SYMBOLS)}
HASHED_OFFSET = len(FIXED_SYMBOLS)
HASHED_SIZE = VOCAB_SIZE - HASHED_OFFSET
assert HASHED_SIZE > 0


def symbol_to_id(symbol: str) -> int:
    """Id of any symbol string: its fixed id, else a stable hash into the reserved block."""
    fixed = SYMBOL_TO_ID.get(symbol)
    if fixed is not None:
        return fixed
    return HASHED_OFFSET + zlib.crc32(symbol.encode("utf-8")) % HASHED_SIZE


def symbols_to_ids(symbols: list[str]) -> list[int]:
    """Ids of a phone sequence."""
    return [symbol_to_id(symbol) for symbol in symbols]


def is_fixed(symbol: str) -> bool:
    """Whether the symbol has its own id (not hashed)."""
    return symbol in SYMBOL_TO_ID
