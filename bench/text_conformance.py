"""How often our text front end writes the same phones as upstream GPT-SoVITS's, per language.

Runs upstream's own front-end modules from `../shared/reference` as the oracle where they
run here, and prints, for each language, the sentences whose phones match exactly and the
share of matching phones (by position) otherwise; a language whose upstream module cannot
run says why. Mandarin uses upstream's `text/chinese.py` (jieba + pypinyin + its tone
sandhi, the path upstream takes without a G2PW model); `jieba_fast` is stood in by `jieba`,
which has the same API and dictionary. Needs the `bench` extra (jieba, cn2an).

    python bench/text_conformance.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT.parent / "shared" / "reference" / "GPT-SoVITS" / "GPT_SoVITS"

MANDARIN = (
    "你好，世界！我们有3个人。",
    "这个模型在晚上训练，用的是清洁能源。",
    "谢谢你听这段简短的录音。",
    "今天的天气很好，我们去公园散步。",
    "一个人不知道该怎么办。",
    "我想看一看你写的东西。",
    "他们不去，我也不去。",
    "孩子们在院子里玩得很开心。",
    "请把窗户打开，屋里太热了。",
    "老李买了五把雨伞。",
    "电网在半夜最干净。",
    "这本书我已经看过了。",
    "我们明天早上八点出发。",
    "你吃饭了吗？",
    "第一次来北京，觉得很好玩。",
    "小朋友们都很喜欢这个游戏。",
    "展览馆里有很多古老的东西。",
    "他一边走一边唱歌。",
    "我很想念我的家乡。",
    "这件衣服不大不小，正合适。",
)
ENGLISH = (
    "Hello world, the GPU runs at 42 watts!",
    "Please schedule this training job for tonight.",
    "Every job says why it waits before it runs.",
)
JAPANESE = ("こんにちは、世界。", "今日はいい天気ですね。")


def _share(ours: list[str], theirs: list[str]) -> float:
    same = sum(a == b for a, b in zip(ours, theirs, strict=False))
    return same / max(len(ours), len(theirs), 1)


def _report(language: str, pairs: list[tuple[str, list[str], list[str]]]) -> None:
    exact = sum(ours == theirs for _, ours, theirs in pairs)
    phones = sum(_share(ours, theirs) for _, ours, theirs in pairs) / len(pairs)
    print(f"{language}: {exact}/{len(pairs)} sentences identical, {phones:.1%} phones in place")
    for sentence, ours, theirs in pairs:
        if ours != theirs:
            print(f"  {sentence}\n    upstream {' '.join(theirs)}\n    ours     {' '.join(ours)}")


def mandarin(g2p) -> None:  # type: ignore[no-untyped-def]
    """Upstream's chinese.py (no G2PW) against ours."""
    import jieba
    import jieba.posseg

    sys.modules.setdefault("jieba_fast", jieba)
    sys.modules.setdefault("jieba_fast.posseg", jieba.posseg)
    from text import chinese

    pairs = []
    for sentence in MANDARIN:
        theirs, _ = chinese.g2p(chinese.text_normalize(sentence))
        pairs.append((sentence, g2p(sentence, "zh").phones, theirs))
    _report("zh (upstream chinese.py, no G2PW)", pairs)


def other(language: str, module: str, sentences: tuple[str, ...], g2p) -> None:  # type: ignore[no-untyped-def]
    """A language whose upstream module may not run offline: compare, or say why not."""
    try:
        upstream = __import__(f"text.{module}", fromlist=[module])
        pairs = [
            (s, g2p(s, language).phones, upstream.g2p(upstream.text_normalize(s)))
            for s in sentences
        ]
    except Exception as exc:  # noqa: BLE001 - the reason is the result here
        print(f"{language}: upstream text.{module} cannot run here: {type(exc).__name__}: {exc}")
        return
    _report(language, pairs)


def main() -> None:
    """Print the conformance figures."""
    if not (UPSTREAM / "text" / "chinese.py").is_file():
        raise SystemExit(f"upstream reference not found at {UPSTREAM}")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(UPSTREAM))
    from worker.training.data.text import g2p

    try:
        mandarin(g2p)
    except ImportError as exc:
        print(f"zh: upstream text.chinese cannot run here: {exc} (install the bench extra)")
    other("en", "english", ENGLISH, g2p)
    other("ja", "japanese", JAPANESE, g2p)


if __name__ == "__main__":
    main()
