"""Mandarin tone changes in context, on jieba words, as upstream GPT-SoVITS's front end applies.

Upstream segments each run of Han characters with jieba (with parts of speech), regroups
some words (不 and 一 with what follows, reduplications, short runs of third tones, 儿),
reads each word with pypinyin and then changes tones per word:

- 不 reads bu2 before a fourth tone, and is neutral inside A不A;
- 一 reads yi2 before a fourth tone, yi4 before other tones, neutral inside A一A, and keeps
  its tone in numbers and after 第;
- neutral tone for sentence particles, 的/地/得, aspect 了/着/过, plural 们 and the suffix 子,
  locative 上/下/里, directional 来/去, the measure word 个 after numbers, and the second
  syllable of reduplicated nouns, verbs and adjectives;
- third-tone sandhi: a third tone before a third tone inside a word becomes a second.

Not here: upstream's list of words that are always read with a neutral last syllable
(东西, 衣服, 朋友 ...) and the few it exempts; see the README's text front-end notes.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

PARTICLES = set("吧呢哈啊呐噻嘛吖嗨哦哒额滴哩哟喽啰耶喔诶")
STRUCTURAL = set("的地得")
ASPECT = set("了着过")
ASPECT_POS = {"ul", "uz", "ug"}
LOCATIVE = set("上下里")
DIRECTIONAL = set("来去")
DIRECTION_VERBS = set("上下进出回过起开")
MEASURE_BEFORE_GE = set("几有两半多各整每做是")
PUNCTUATION = set("：，；。？！“”‘’':,;.?!")
MAX_MERGED_THIRD_TONES = 3


@lru_cache(maxsize=1)
def _jieba() -> tuple[Any, Any]:
    """jieba and jieba.posseg (untyped), loaded on first use."""
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    return jieba, jieba.posseg


def _syllables(word: str) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True)
    if len(syllables) != len(word):
        syllables = [
            lazy_pinyin(c, style=Style.TONE3, neutral_tone_with_five=True)[0] for c in word
        ]
    return syllables


def _tone(syllable: str) -> str:
    return syllable[-1] if syllable[-1:].isdigit() else "5"


def _retone(syllable: str, tone: str) -> str:
    return (syllable[:-1] if syllable[-1:].isdigit() else syllable) + tone


def _all_third(word: str) -> bool:
    return all(_tone(s) == "3" for s in _syllables(word))


# ---------------------------------------------------------------- regrouping


def _join_bu(words: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    carry = False
    for word, pos in words:
        if carry:
            word = "不" + word
        carry = word == "不"
        if not carry:
            out.append([word, pos])
    if carry:
        out.append(["不", "d"])
    return out


def _join_yi(words: list[list[str]]) -> list[list[str]]:
    # A verb, 一, the same verb (看一看) becomes one word...
    grouped: list[list[str]] = []
    index = 0
    while index < len(words):
        word, pos = words[index]
        if word == "一" and grouped and index + 1 < len(words):
            before, after = grouped[-1], words[index + 1]
            if before[0] == after[0] and before[1] == "v" and after[1] == "v":
                grouped[-1] = [before[0] + "一" + after[0], before[1]]
                index += 2
                continue
        grouped.append([word, pos])
        index += 1
    # ...and a lone 一 joins the word after it.
    out: list[list[str]] = []
    for word, pos in grouped:
        if out and out[-1][0] == "一":
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def _join_repeats(words: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for word, pos in words:
        if out and out[-1][0] == word:
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def _join_third_tones(words: list[list[str]], *, whole_words: bool) -> list[list[str]]:
    """Join short neighbours that meet in third tones (all syllables, or at the boundary)."""
    readings = [_syllables(word) for word, _ in words]
    out: list[list[str]] = []
    joined_previous = False
    for index, (word, pos) in enumerate(words):
        joined = False
        if index > 0 and not joined_previous:
            before, here = readings[index - 1], readings[index]
            if whole_words:
                meets = all(_tone(s) == "3" for s in before + here)
            else:
                meets = _tone(before[-1]) == "3" and _tone(here[0]) == "3"
            previous = words[index - 1][0]
            repeated = len(previous) == 2 and previous[0] == previous[1]
            if meets and not repeated and len(previous) + len(word) <= MAX_MERGED_THIRD_TONES:
                out[-1][0] += word
                joined = True
        if not joined:
            out.append([word, pos])
        joined_previous = joined
    return out


def _join_er(words: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for word, pos in words:
        if out and word == "儿":
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def regroup(words: list[tuple[str, str]]) -> list[list[str]]:
    """jieba's (word, part of speech) list regrouped into the units tones change within."""
    grouped = [[w, p] for w, p in words]
    for step in (_join_bu, _join_yi, _join_repeats):
        grouped = step(grouped)
    grouped = _join_third_tones(grouped, whole_words=True)
    grouped = _join_third_tones(grouped, whole_words=False)
    return _join_er(grouped)


# ---------------------------------------------------------------- tone changes


def _bu(word: str, tones: list[str]) -> None:
    if len(word) == 3 and word[1] == "不":
        tones[1] = "5"
        return
    for i, char in enumerate(word[:-1]):
        if char == "不" and tones[i + 1] == "4":
            tones[i] = "2"


def _yi(word: str, tones: list[str]) -> None:
    if "一" in word and all(c.isnumeric() for c in word if c != "一"):
        return  # a number: 一 keeps its first tone
    if len(word) == 3 and word[1] == "一" and word[0] == word[2]:
        tones[1] = "5"
    elif word.startswith("第一"):
        tones[1] = "1"
    else:
        for i, char in enumerate(word[:-1]):
            if char == "一":
                if tones[i + 1] == "4":
                    tones[i] = "2"
                elif word[i + 1] not in PUNCTUATION:
                    tones[i] = "4"


def _neutral(word: str, pos: str, tones: list[str]) -> None:
    for i in range(1, len(word)):
        if word[i] == word[i - 1] and pos[:1] in {"n", "v", "a"}:
            tones[i] = "5"
    ge = word.find("个")
    last = word[-1]
    if last in PARTICLES or last in STRUCTURAL:
        tones[-1] = "5"
    elif len(word) == 1 and word in ASPECT and pos in ASPECT_POS:
        tones[-1] = "5"
    elif len(word) > 1 and last in "们子" and pos in {"r", "n"}:
        tones[-1] = "5"
    elif len(word) > 1 and last in LOCATIVE and pos in {"s", "l", "f"}:
        tones[-1] = "5"
    elif len(word) > 1 and last in DIRECTIONAL and word[-2] in DIRECTION_VERBS:
        tones[-1] = "5"
    elif (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in MEASURE_BEFORE_GE)) or (
        word == "个"
    ):
        tones[ge] = "5"


def _halves(word: str) -> tuple[str, str]:
    """The word split at its shortest search-mode sub-word (kept at its own end)."""
    jieba, _ = _jieba()
    shortest = min(jieba.cut_for_search(word), key=len)
    if word.startswith(shortest):
        return shortest, word[len(shortest) :]
    return word[: len(word) - len(shortest)], shortest


def _third(word: str, tones: list[str]) -> None:
    def all_third(part: list[str]) -> bool:
        return all(t == "3" for t in part)

    if len(word) == 2 and all_third(tones):
        tones[0] = "2"
    elif len(word) == 3:
        first, _ = _halves(word)
        if all_third(tones):
            if len(first) == 2:
                tones[0] = tones[1] = "2"
            elif len(first) == 1:
                tones[1] = "2"
            return
        cut = len(first)
        head, tail = tones[:cut], tones[cut:]
        if len(head) == 2 and all_third(head):
            head[0] = "2"
        if len(tail) == 2 and all_third(tail):
            tail[0] = "2"
        elif tail and not all_third(tail) and tail[0] == "3" and head and head[-1] == "3":
            head[-1] = "2"
        tones[:] = head + tail
    elif len(word) == 4:
        for start in (0, 2):
            if all_third(tones[start : start + 2]):
                tones[start] = "2"


def word_syllables(word: str, pos: str) -> list[str]:
    """Tone-numbered pinyin of one regrouped word, tones changed in context."""
    syllables = _syllables(word)
    tones = [_tone(s) for s in syllables]
    _bu(word, tones)
    _yi(word, tones)
    _neutral(word, pos, tones)
    _third(word, tones)
    return [_retone(s, t) for s, t in zip(syllables, tones, strict=True)]


def sentence_syllables(han_run: str) -> list[str]:
    """Tone-numbered pinyin for a run of Han characters, one syllable per character."""
    _, posseg = _jieba()
    words = [(pair.word, pair.flag) for pair in posseg.lcut(han_run)]
    syllables: list[str] = []
    for word, pos in regroup(words):
        syllables += word_syllables(word, pos)
    return syllables
