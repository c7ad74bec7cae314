"""Run the whole preparation: list -> text, wav32k, SSL, semantic tokens in the original layout.

Every step keeps what is already in the output directory and only fills gaps,
so a resumed job does not redo work. Files in the original layout shipped
inside the dataset (a `logs/<exp>/` directory from a GPT-SoVITS install, say)
are copied in first and used as they are: real cnhubert features, RoBERTa
features and semantic tokens then win over the built-in stand-ins.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.training.data import layout
from worker.training.data.annotations import Utterance, find_list, parse_list
from worker.training.data.audio import (
    SSL_SAMPLE_RATE,
    TRAIN_SAMPLE_RATE,
    AudioError,
    prepare_clip,
    read_pcm,
    resample,
    write_pcm16,
)
from worker.training.data.features import ssl_features
from worker.training.data.semantic import encode, fit_codebook, pool_frames
from worker.training.data.symbols import symbols_to_ids
from worker.training.data.text import TextError, g2p

if TYPE_CHECKING:
    from worker.training.data.upstream_features import UpstreamFeatures

log = logging.getLogger(__name__)
FEATURES_MARKER = "features.json"

ProgressFn = Callable[[str, int, int], None]
SKIPPED = "skipped.tsv"
_LAYOUT_MARKERS = (layout.NAME2TEXT, layout.HUBERT_DIR, layout.NAME2SEMANTIC, layout.WAV32K_DIR)


class PrepareError(RuntimeError):
    """No usable utterance came out of the dataset."""


@dataclass
class PreparedItem:
    """One training utterance with everything both stages read."""

    name: str
    phoneme_ids: list[int]
    bert: np.ndarray  # float32 [1024, n_phones]
    ssl: np.ndarray  # float32 [768, T50]
    wav32k: np.ndarray  # float32 [n_samples], 32 kHz
    semantic: list[int]  # 25 Hz codes
    speaker: str
    language: str


@dataclass
class PreparedDataset:
    """A prepared directory loaded into memory."""

    root: Path
    items: list[PreparedItem]
    codebook: np.ndarray | None
    skipped: dict[str, str] = field(default_factory=dict)

    def total_audio_seconds(self) -> float:
        """Seconds of 32 kHz training audio over all items."""
        return sum(item.wav32k.shape[0] for item in self.items) / TRAIN_SAMPLE_RATE

    @classmethod
    def load(cls, root: Path, names: list[str] | None = None) -> PreparedDataset:
        """Read a prepared directory (ours or the original's); `names` limits and orders items."""
        rows = layout.read_name2text(root)
        semantic = layout.read_name2semantic(root)
        meta = layout.read_meta(root)
        skipped = _read_skipped(root)
        order = names if names is not None else list(semantic)
        items: list[PreparedItem] = []
        for name in order:
            row, codes = rows.get(name), semantic.get(name)
            wav_path, ssl_path = layout.wav32k_path(root, name), layout.hubert_path(root, name)
            if row is None or codes is None or not wav_path.is_file() or not ssl_path.is_file():
                if name not in skipped:
                    skipped[name] = "incomplete in the prepared directory"
                continue
            item_meta = meta.get(name)
            language = item_meta.language if item_meta else _guess_language(root, name)
            items.append(
                PreparedItem(
                    name=name,
                    phoneme_ids=symbols_to_ids(row.phones),
                    bert=layout.read_bert(root, name, len(row.phones)),
                    ssl=layout.read_ssl(root, name),
                    wav32k=read_pcm(wav_path, TRAIN_SAMPLE_RATE),
                    semantic=codes,
                    speaker=item_meta.speaker if item_meta else "unknown",
                    language=language,
                )
            )
        if not items:
            raise layout.LayoutError(f"{root}: no complete prepared item")
        return cls(root=root, items=items, codebook=layout.read_codebook(root), skipped=skipped)


def features_label(features: UpstreamFeatures | None) -> str:
    """`upstream:<base>` or `stand-in`: what a prepared directory's features came from."""
    return f"upstream:{features.base}" if features is not None else "stand-in"


def _claim_features(out_dir: Path, features: UpstreamFeatures | None) -> None:
    marker = out_dir / FEATURES_MARKER
    label = features_label(features)
    if marker.is_file():
        found = json.loads(marker.read_text(encoding="utf-8")).get("features")
        if found != label:
            raise PrepareError(f"{out_dir} holds {found} features; this run wants {label}")
        return
    marker.write_text(json.dumps({"features": label}), encoding="utf-8")


def _guess_language(root: Path, name: str) -> str:
    # The original writes BERT files for Mandarin lines only.
    return "zh" if layout.bert_path(root, name).is_file() else "unknown"


def _read_skipped(root: Path) -> dict[str, str]:
    path = root / SKIPPED
    if not path.is_file():
        return {}
    pairs = (line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def _write_skipped(root: Path, skipped: dict[str, str]) -> None:
    text = "".join(f"{name}\t{reason}\n" for name, reason in skipped.items())
    (root / SKIPPED).write_text(text, encoding="utf-8")


def find_supplied_layout(dataset_dir: Path) -> Path | None:
    """The directory inside the dataset holding files in the original layout, if any."""
    for marker in _LAYOUT_MARKERS:
        found = sorted(dataset_dir.rglob(marker), key=lambda p: len(p.parts))
        if found:
            return found[0].parent
    return None


def import_supplied(supplied: Path, out_dir: Path, names: list[str]) -> None:
    """Copy the supplied layout's files for `names` into `out_dir` where it lacks them."""
    if supplied.resolve() == out_dir.resolve():
        return
    for name in names:
        for source, target in (
            (layout.bert_path(supplied, name), layout.bert_path(out_dir, name)),
            (layout.hubert_path(supplied, name), layout.hubert_path(out_dir, name)),
            (layout.wav32k_path(supplied, name), layout.wav32k_path(out_dir, name)),
        ):
            if source.is_file() and not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    wanted = set(names)
    rows = layout.read_name2text(out_dir)
    new_rows = {n: r for n, r in layout.read_name2text(supplied).items() if n in wanted}
    if any(n not in rows for n in new_rows):
        layout.write_name2text(out_dir, list({**new_rows, **rows}.values()))
    semantic = layout.read_name2semantic(out_dir)
    new_semantic = {n: s for n, s in layout.read_name2semantic(supplied).items() if n in wanted}
    if any(n not in semantic for n in new_semantic):
        layout.write_name2semantic(out_dir, {**new_semantic, **semantic})
    if (supplied / layout.CODEBOOK).is_file() and not (out_dir / layout.CODEBOOK).is_file():
        shutil.copy2(supplied / layout.CODEBOOK, out_dir / layout.CODEBOOK)


def _report(progress: ProgressFn | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def prepare_text(
    out_dir: Path, utterances: list[Utterance], skipped: dict[str, str], progress: ProgressFn | None
) -> None:
    """Fill `2-name2text.txt` for utterances that lack a row."""
    rows = layout.read_name2text(out_dir)
    added = False
    for index, utt in enumerate(utterances, 1):
        if utt.name not in rows:
            try:
                result = g2p(utt.text, utt.language)
            except TextError as exc:
                skipped[utt.name] = str(exc)
            else:
                rows[utt.name] = layout.TextRow(
                    utt.name, result.phones, result.word2ph, result.norm_text
                )
                added = True
        _report(progress, "text", index, len(utterances))
    if added:
        order = {utt.name: i for i, utt in enumerate(utterances)}
        ordered = sorted(rows.values(), key=lambda r: order.get(r.name, len(order)))
        layout.write_name2text(out_dir, ordered)


def prepare_bert(
    out_dir: Path,
    utterances: list[Utterance],
    skipped: dict[str, str],
    progress: ProgressFn | None,
    features: UpstreamFeatures,
) -> None:
    """Fill `3-bert/` for Mandarin lines that lack it (upstream writes it for zh only)."""
    rows = layout.read_name2text(out_dir)
    for index, utt in enumerate(utterances, 1):
        row = rows.get(utt.name)
        if (
            utt.language == "zh"
            and row is not None
            and utt.name not in skipped
            and not layout.bert_path(out_dir, utt.name).is_file()
        ):
            bert = features.bert(row.norm_text, row.word2ph or [])
            if bert is not None and bert.shape[1] == len(row.phones):
                layout.write_bert(out_dir, utt.name, bert)
            else:
                log.warning("%s: text and word2ph do not line up; BERT stays zeros", utt.name)
        _report(progress, "bert", index, len(utterances))


def prepare_audio(
    out_dir: Path,
    utterances: list[Utterance],
    skipped: dict[str, str],
    progress: ProgressFn | None,
    features: UpstreamFeatures | None = None,
) -> None:
    """Fill `5-wav32k/` and `4-cnhubert/` for utterances that lack them (HuBERT with a
    base's features, else the stand-in)."""
    extract = features.hubert if features is not None else ssl_features
    for index, utt in enumerate(utterances, 1):
        wav_path = layout.wav32k_path(out_dir, utt.name)
        ssl_path = layout.hubert_path(out_dir, utt.name)
        if utt.name in skipped or (wav_path.is_file() and ssl_path.is_file()):
            _report(progress, "audio", index, len(utterances))
            continue
        try:
            if wav_path.is_file():
                wav16k = resample(read_pcm(wav_path), TRAIN_SAMPLE_RATE, SSL_SAMPLE_RATE)
            else:
                clip = prepare_clip(utt.wav_path, utt.name)
                write_pcm16(wav_path, clip.wav32k)
                wav16k = clip.wav16k
            if not ssl_path.is_file():
                layout.write_ssl(out_dir, utt.name, extract(wav16k))
        except AudioError as exc:
            skipped[utt.name] = str(exc)
        _report(progress, "audio", index, len(utterances))


def prepare_semantic(
    out_dir: Path,
    names: list[str],
    progress: ProgressFn | None,
    *,
    codebook_size: int | None = None,
    seed: int = 0,
    features: UpstreamFeatures | None = None,
) -> None:
    """Fill `6-name2semantic.tsv`: with a base's quantizer, else a `codebook.npy` fitted here."""
    semantic = layout.read_name2semantic(out_dir)
    missing = [name for name in names if name not in semantic]
    if not missing:
        return
    if features is not None:
        for index, name in enumerate(missing, 1):
            semantic[name] = features.quantizer(layout.read_ssl(out_dir, name))
            _report(progress, "semantic", index, len(missing))
        order = {name: i for i, name in enumerate(names)}
        layout.write_name2semantic(
            out_dir, dict(sorted(semantic.items(), key=lambda kv: order.get(kv[0], len(order))))
        )
        return
    codebook = layout.read_codebook(out_dir)
    ssl = {name: layout.read_ssl(out_dir, name) for name in names}
    if codebook is None:
        if semantic:
            # Tokens supplied without their codebook cannot be extended consistently;
            # re-encode everything with one codebook instead of mixing two vocabularies.
            log.warning("semantic tokens for %d items lack a codebook; re-encoding", len(missing))
            missing, semantic = list(names), {}
        frames = np.concatenate([pool_frames(features) for features in ssl.values()], axis=0)
        if codebook_size is not None and codebook_size > frames.shape[0]:
            log.warning("only %d frames; codebook shrunk from %d", frames.shape[0], codebook_size)
            codebook_size = frames.shape[0]
        codebook = fit_codebook(frames, codebook_size, seed=seed)
        layout.write_codebook(out_dir, codebook)
    for index, name in enumerate(missing, 1):
        semantic[name] = encode(ssl[name], codebook)
        _report(progress, "semantic", index, len(missing))
    order = {name: i for i, name in enumerate(names)}
    layout.write_name2semantic(
        out_dir, dict(sorted(semantic.items(), key=lambda kv: order.get(kv[0], len(order))))
    )


def prepare_dataset(
    dataset_dir: Path,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    codebook_size: int | None = None,
    seed: int = 0,
    features: UpstreamFeatures | None = None,
) -> PreparedDataset:
    """Prepare `dataset_dir` (a `*.list` plus clips) into `out_dir` and load the result.

    With `features` (a base's HuBERT, RoBERTa and quantizer) the features are upstream's;
    without, the built-in stand-ins. One directory never mixes the two.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_features(out_dir, features)
    utterances = parse_list(find_list(dataset_dir), dataset_dir)
    names = [utt.name for utt in utterances]
    supplied = find_supplied_layout(dataset_dir)
    if supplied is not None:
        import_supplied(supplied, out_dir, names)
    skipped: dict[str, str] = {}
    prepare_text(out_dir, utterances, skipped, progress)
    if features is not None:
        prepare_bert(out_dir, utterances, skipped, progress, features)
    prepare_audio(out_dir, utterances, skipped, progress, features)
    for name, reason in skipped.items():
        log.warning("skipping %s: %s", name, reason)
    _write_skipped(out_dir, skipped)
    usable = [name for name in names if name not in skipped]
    if not usable:
        details = "; ".join(f"{n}: {r}" for n, r in skipped.items())
        raise PrepareError(f"no usable utterance in {dataset_dir}: {details}")
    prepare_semantic(
        out_dir, usable, progress, codebook_size=codebook_size, seed=seed, features=features
    )
    layout.write_meta(
        out_dir,
        {u.name: layout.Meta(u.speaker, u.language) for u in utterances if u.name in usable},
    )
    return PreparedDataset.load(out_dir, usable)
