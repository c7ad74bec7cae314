"""Parse a GPT-SoVITS annotation list (`wav_path|speaker|language|text` per line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

# Codes the original accepts in training lists and at inference, mapped to the
# language that picks our text front-end. The v1 upper-case codes are kept
# because older lists written by the original's ASR tools still use them.
LANGUAGE_ALIASES: dict[str, str] = {
    "zh": "zh",
    "all_zh": "zh",
    "auto": "zh",
    "en": "en",
    "all_en": "en",
    "ja": "ja",
    "jp": "ja",
    "all_ja": "ja",
    "ko": "ko",
    "all_ko": "ko",
    "yue": "yue",
    "all_yue": "yue",
    "auto_yue": "yue",
}

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class Utterance:
    """One annotated clip; `name` is the wav basename, the item key of every prepared file."""

    name: str
    wav_path: Path
    speaker: str
    language: str
    text: str


class ListParseError(ValueError):
    """An annotation list with one or more bad lines; `problems` holds `line N: ...` strings."""

    def __init__(self, list_path: Path, problems: list[str]) -> None:
        self.list_path = list_path
        self.problems = problems
        super().__init__(f"{list_path}: {len(problems)} bad line(s):\n" + "\n".join(problems))


def normalise_language(code: str) -> str | None:
    """Map a list's language code to zh/en/ja/ko/yue, or None when it is unknown."""
    return LANGUAGE_ALIASES.get(code.strip().lower())


def wav_basename(raw_path: str) -> str:
    """Basename of a path written on any OS (lists often carry Windows paths)."""
    return PureWindowsPath(raw_path.strip()).name


class AudioResolver:
    """Find a list's wav files: as written, next to the list, or by basename in the dataset."""

    def __init__(self, dataset_dir: Path, list_dir: Path) -> None:
        self.dataset_dir = dataset_dir
        self.list_dir = list_dir
        self._by_name: dict[str, Path] | None = None

    def _index(self) -> dict[str, Path]:
        # Built lazily: most lists resolve directly and never need the walk.
        if self._by_name is None:
            index: dict[str, Path] = {}
            for path in sorted(self.dataset_dir.rglob("*")):
                if path.is_file():
                    index.setdefault(path.name, path)
            self._by_name = index
        return self._by_name

    def resolve(self, raw_path: str) -> Path | None:
        """Return the existing file for `raw_path`, or None."""
        raw = raw_path.strip()
        direct = Path(raw)
        candidates = [direct] if direct.is_absolute() else [self.list_dir / direct]
        candidates.append(self.list_dir / wav_basename(raw))
        root = self.dataset_dir.resolve()
        for candidate in candidates:
            # A list names clips of its own dataset, never another file on the host.
            if candidate.is_file() and candidate.resolve().is_relative_to(root):
                return candidate
        return self._index().get(wav_basename(raw))


def parse_line(line: str) -> tuple[str, str, str, str]:
    """Split one list line into its four fields; raises ValueError naming the problem."""
    fields = line.split("|")
    if len(fields) != 4:
        raise ValueError(f"expected 4 fields 'wav_path|speaker|language|text', got {len(fields)}")
    wav, speaker, language, text = (field.strip() for field in fields)
    if not wav:
        raise ValueError("empty wav path")
    if not text:
        raise ValueError("empty text")
    if normalise_language(language) is None:
        known = ", ".join(sorted(LANGUAGE_ALIASES))
        raise ValueError(f"unknown language {language!r} (known: {known})")
    return wav, speaker, language, text


def parse_list(
    list_path: Path, dataset_dir: Path | None = None, *, require_audio: bool = True
) -> list[Utterance]:
    """Parse `list_path`; every bad line is reported at once in a ListParseError."""
    dataset_dir = dataset_dir if dataset_dir is not None else list_path.parent
    resolver = AudioResolver(dataset_dir, list_path.parent)
    utterances: list[Utterance] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    text = list_path.read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            wav, speaker, language, utterance_text = parse_line(line)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        name = wav_basename(wav)
        if name in seen:
            # Every prepared file is keyed by basename, so two clips with one name collide.
            problems.append(f"line {number}: wav name {name!r} already used on line {seen[name]}")
            continue
        seen[name] = number
        resolved = resolver.resolve(wav)
        if resolved is None and require_audio:
            problems.append(f"line {number}: missing wav {wav!r} (looked for {name!r} in dataset)")
            continue
        language_code = normalise_language(language)
        assert language_code is not None
        utterances.append(
            Utterance(
                name=name,
                wav_path=resolved if resolved is not None else dataset_dir / name,
                speaker=speaker,
                language=language_code,
                text=utterance_text,
            )
        )
    if problems:
        raise ListParseError(list_path, problems)
    if not utterances:
        raise ListParseError(list_path, ["no utterances in the list"])
    return utterances


def _is_archive_debris(path: Path) -> bool:
    # Zips made on macOS carry `__MACOSX/` copies and `._name` resource forks.
    return path.name.startswith("._") or "__MACOSX" in path.parts


def find_list(dataset_dir: Path) -> Path:
    """The dataset's single `*.list` file (searched recursively); raises if none or several."""
    lists = [p for p in sorted(dataset_dir.rglob("*.list")) if not _is_archive_debris(p)]
    if not lists:
        raise FileNotFoundError(f"no *.list annotation file in {dataset_dir}")
    if len(lists) > 1:
        names = ", ".join(str(p.relative_to(dataset_dir)) for p in lists)
        raise ValueError(f"several *.list files in {dataset_dir}: {names}")
    return lists[0]
