"""Read and write the original's prepared-dataset layout (`logs/<exp>/` in GPT-SoVITS).

- `2-name2text.txt`: `name<TAB>phones<TAB>word2ph<TAB>norm_text`, phones space-separated,
  word2ph as the original prints it (a Python list such as `[2, 2, 1]`, or `None`).
- `3-bert/<name>.pt`: torch float tensor [1024, n_phones]; absent means zeros.
- `4-cnhubert/<name>.pt`: torch float tensor [1, 768, T] at 50 Hz.
- `5-wav32k/<name>`: 16-bit PCM mono wav at 32 kHz, named like the source clip.
- `6-name2semantic.tsv`: header `item_name<TAB>semantic_audio`, then name and
  space-separated ids.
- `codebook.npy` (ours): float32 [K, 768] k-means codebook of the tokens.
- `name2meta.tsv` (ours): name, speaker, language, which the layout itself drops.

`name` is the wav basename with its extension, so `a.wav` has `4-cnhubert/a.wav.pt`.
The original saves its tensors in fp16 when run in half precision; they are read as float32.
Its per-part files (`2-name2text-0.txt`, `6-name2semantic-0.tsv`, ...) are merged when the
combined file is missing.
"""

from __future__ import annotations

import ast
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NAME2TEXT = "2-name2text.txt"
BERT_DIR = "3-bert"
HUBERT_DIR = "4-cnhubert"
WAV32K_DIR = "5-wav32k"
NAME2SEMANTIC = "6-name2semantic.tsv"
CODEBOOK = "codebook.npy"
NAME2META = "name2meta.tsv"
SEMANTIC_HEADER = "item_name\tsemantic_audio"


@dataclass(frozen=True)
class TextRow:
    """One row of `2-name2text.txt`."""

    name: str
    phones: list[str]
    word2ph: list[int] | None
    norm_text: str


@dataclass(frozen=True)
class Meta:
    """Speaker and language of one item (kept beside the original layout)."""

    speaker: str
    language: str


class LayoutError(ValueError):
    """A prepared file that does not have the expected format."""


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
        file.write(text)
    os.replace(tmp, path)


def _lines_with_parts(root: Path, combined: str, part_glob: str) -> list[str]:
    paths = [root / combined] if (root / combined).is_file() else sorted(root.glob(part_glob))
    lines: list[str] = []
    for path in paths:
        lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def format_word2ph(word2ph: list[int] | None) -> str:
    """word2ph as the original prints it: `[2, 2, 1]` or `None`."""
    return "None" if word2ph is None else str([int(n) for n in word2ph])


def parse_word2ph(field: str) -> list[int] | None:
    """Read a word2ph field: a Python list, `None`, or space-separated ints."""
    field = field.strip()
    if field in ("", "None"):
        return None
    if field.startswith("["):
        value = ast.literal_eval(field)
        if not isinstance(value, list) or not all(isinstance(n, int) for n in value):
            raise LayoutError(f"word2ph is not a list of ints: {field!r}")
        return value
    return [int(n) for n in field.split()]


def write_name2text(root: Path, rows: list[TextRow]) -> None:
    """Write `2-name2text.txt` (tab-separated, one row per item)."""
    lines = []
    for row in rows:
        if "\t" in row.norm_text or "\n" in row.norm_text:
            raise LayoutError(f"{row.name}: normalised text holds a tab or newline")
        lines.append(
            f"{row.name}\t{' '.join(row.phones)}\t{format_word2ph(row.word2ph)}\t{row.norm_text}"
        )
    _atomic_write_text(root / NAME2TEXT, "\n".join(lines) + "\n")


def read_name2text(root: Path) -> dict[str, TextRow]:
    """Rows of `2-name2text.txt` by name (empty when absent)."""
    rows: dict[str, TextRow] = {}
    for number, line in enumerate(_lines_with_parts(root, NAME2TEXT, "2-name2text-*.txt"), 1):
        fields = line.split("\t")
        if len(fields) != 4:
            raise LayoutError(f"{NAME2TEXT} line {number}: expected 4 tab-separated fields")
        name, phones, word2ph, norm_text = fields
        rows[name] = TextRow(name, phones.split(), parse_word2ph(word2ph), norm_text)
    return rows


def write_name2semantic(root: Path, semantic: dict[str, list[int]]) -> None:
    """Write `6-name2semantic.tsv` with the original's header line."""
    rows = [f"{name}\t{' '.join(map(str, ids))}" for name, ids in semantic.items()]
    lines = [SEMANTIC_HEADER, *rows]
    _atomic_write_text(root / NAME2SEMANTIC, "\n".join(lines) + "\n")


def read_name2semantic(root: Path) -> dict[str, list[int]]:
    """Semantic ids by name from `6-name2semantic.tsv` (empty when absent)."""
    semantic: dict[str, list[int]] = {}
    for line in _lines_with_parts(root, NAME2SEMANTIC, "6-name2semantic-*.tsv"):
        if line.startswith("item_name\t"):
            continue
        name, _, ids = line.partition("\t")
        try:
            semantic[name] = [int(n) for n in ids.split()]
        except ValueError as exc:
            raise LayoutError(f"{NAME2SEMANTIC}: bad ids for {name!r}") from exc
    return semantic


def _save_tensor(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), tmp)
    os.replace(tmp, path)


def _load_tensor(path: Path) -> np.ndarray:
    tensor = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(tensor, torch.Tensor):
        raise LayoutError(f"{path}: not a tensor")
    return tensor.detach().float().numpy()


def bert_path(root: Path, name: str) -> Path:
    """Path of an item's BERT feature file."""
    return root / BERT_DIR / f"{name}.pt"


def hubert_path(root: Path, name: str) -> Path:
    """Path of an item's SSL feature file."""
    return root / HUBERT_DIR / f"{name}.pt"


def wav32k_path(root: Path, name: str) -> Path:
    """Path of an item's 32 kHz training wav."""
    return root / WAV32K_DIR / name


def write_bert(root: Path, name: str, bert: np.ndarray) -> None:
    """Save a [1024, n_phones] BERT feature."""
    if bert.ndim != 2:
        raise LayoutError(f"{name}: BERT feature must be [1024, n_phones], got {bert.shape}")
    _save_tensor(bert_path(root, name), bert)


def read_bert(root: Path, name: str, n_phones: int) -> np.ndarray:
    """An item's BERT feature, or zeros [1024, n_phones] when absent (as the original)."""
    path = bert_path(root, name)
    if not path.is_file():
        return np.zeros((1024, n_phones), dtype=np.float32)
    bert = _load_tensor(path)
    if bert.shape != (1024, n_phones):
        raise LayoutError(f"{path}: shape {bert.shape}, expected (1024, {n_phones})")
    return bert


def write_ssl(root: Path, name: str, ssl: np.ndarray) -> None:
    """Save [768, T] SSL frames as the original's [1, 768, T] tensor."""
    if ssl.ndim != 2:
        raise LayoutError(f"{name}: SSL features must be [768, T], got {ssl.shape}")
    _save_tensor(hubert_path(root, name), ssl[None, :, :])


def read_ssl(root: Path, name: str) -> np.ndarray:
    """An item's SSL frames as float32 [768, T]."""
    path = hubert_path(root, name)
    ssl = _load_tensor(path)
    if ssl.ndim == 3 and ssl.shape[0] == 1:
        ssl = ssl[0]
    if ssl.ndim != 2:
        raise LayoutError(f"{path}: shape {ssl.shape}, expected (1, 768, T)")
    return ssl


def write_codebook(root: Path, codebook: np.ndarray) -> None:
    """Save the k-means codebook [K, 768]."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (CODEBOOK + ".tmp.npy")
    np.save(tmp, codebook.astype(np.float32))
    os.replace(tmp, root / CODEBOOK)


def read_codebook(root: Path) -> np.ndarray | None:
    """The codebook, or None when the tokens came from elsewhere."""
    path = root / CODEBOOK
    return np.load(path).astype(np.float32) if path.is_file() else None


def write_meta(root: Path, meta: dict[str, Meta]) -> None:
    """Save speaker and language per item."""
    lines = ["name\tspeaker\tlanguage"] + [
        f"{name}\t{m.speaker}\t{m.language}" for name, m in meta.items()
    ]
    _atomic_write_text(root / NAME2META, "\n".join(lines) + "\n")


def read_meta(root: Path) -> dict[str, Meta]:
    """Speaker and language per item (empty when the directory came from the original)."""
    path = root / NAME2META
    if not path.is_file():
        return {}
    meta: dict[str, Meta] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) == 3:
            meta[fields[0]] = Meta(speaker=fields[1], language=fields[2])
    return meta
