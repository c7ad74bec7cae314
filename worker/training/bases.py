"""Base models on a worker: upstream GPT-SoVITS's `pretrained_models` layout.

A worker started with `--models DIR` (or `GREENWINDOW_MODELS_DIR`) holds a base when DIR has
every file that base needs, laid out as upstream's `GPT_SoVITS/pretrained_models`:

    DIR/gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt  (any s1*.ckpt)
    DIR/gsv-v2final-pretrained/s2G2333k.pth
    DIR/gsv-v2final-pretrained/s2D2333k.pth
    DIR/chinese-hubert-base/            (Hugging Face directory: config.json + weights)
    DIR/chinese-roberta-wwm-ext-large/  (Hugging Face directory: config.json + weights + vocab)

The check at start is about presence and shape of the layout (files there, HF configs of the
right model type); whether every tensor fits is checked when a job loads the weights.
Importing this module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.training.config import BASE_NONE, BASE_V2

if TYPE_CHECKING:
    from torch import nn

MODELS_DIR_ENV = "GREENWINDOW_MODELS_DIR"
V2_DIR = "gsv-v2final-pretrained"
V2_S1_NAME = "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
V2_S2G_NAME = "s2G2333k.pth"
V2_S2D_NAME = "s2D2333k.pth"
HUBERT_DIR = "chinese-hubert-base"
ROBERTA_DIR = "chinese-roberta-wwm-ext-large"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
BERT_VOCAB = ("vocab.txt", "tokenizer.json")


class BaseModelsError(ValueError):
    """A base is not usable from the models directory (the message names what is missing)."""


@dataclass(frozen=True)
class BaseFiles:
    """The files of one base a worker holds."""

    name: str
    s1: Path
    s2_generator: Path
    s2_discriminator: Path
    hubert_dir: Path
    roberta_dir: Path


def _hf_problems(directory: Path, model_types: tuple[str, ...], needs_vocab: bool) -> list[str]:
    if not directory.is_dir():
        return [f"{directory} (directory) is missing"]
    problems = []
    config_path = directory / "config.json"
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        problems.append(f"{config_path} is missing or not a JSON object ({exc})")
    else:
        if model_type not in model_types:
            problems.append(f"{config_path}: model_type {model_type!r}, expected {model_types}")
    if not any((directory / name).is_file() for name in HF_WEIGHTS):
        problems.append(f"{directory} has no weights ({' or '.join(HF_WEIGHTS)})")
    if needs_vocab and not any((directory / name).is_file() for name in BERT_VOCAB):
        problems.append(f"{directory} has no tokenizer vocabulary ({' or '.join(BERT_VOCAB)})")
    return problems


def _v2_s1(directory: Path) -> Path | list[str]:
    exact = directory / V2_S1_NAME
    if exact.is_file():
        return exact
    found = sorted(p for p in directory.glob("s1*.ckpt") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        return [f"{directory}/{V2_S1_NAME} (or one s1*.ckpt) is missing"]
    names = ", ".join(p.name for p in found)
    return [f"{directory} holds several s1*.ckpt ({names}); keep one or name it {V2_S1_NAME}"]


def check_v2(models_dir: Path) -> BaseFiles | list[str]:
    """The v2 base's files, or the list of what is missing or wrong."""
    directory = models_dir / V2_DIR
    problems: list[str] = []
    s1 = _v2_s1(directory)
    if isinstance(s1, list):
        problems += s1
    for name in (V2_S2G_NAME, V2_S2D_NAME):
        path = directory / name
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{path} is missing or empty")
    problems += _hf_problems(models_dir / HUBERT_DIR, ("hubert",), needs_vocab=False)
    problems += _hf_problems(models_dir / ROBERTA_DIR, ("bert", "roberta"), needs_vocab=True)
    if problems:
        return problems
    assert isinstance(s1, Path)
    return BaseFiles(
        name=BASE_V2,
        s1=s1,
        s2_generator=directory / V2_S2G_NAME,
        s2_discriminator=directory / V2_S2D_NAME,
        hubert_dir=models_dir / HUBERT_DIR,
        roberta_dir=models_dir / ROBERTA_DIR,
    )


@dataclass(frozen=True)
class HeldBases:
    """What a models directory offers: usable bases, and why the others are not."""

    files: dict[str, BaseFiles]
    problems: dict[str, list[str]]

    @property
    def names(self) -> list[str]:
        """Base names to register: `none` plus every complete base."""
        return sorted({BASE_NONE, *self.files})


def scan_models_dir(models_dir: Path | None) -> HeldBases:
    """Check a `--models` directory; no directory means only the random-init base."""
    if models_dir is None:
        return HeldBases({}, {})
    if not models_dir.is_dir():
        raise BaseModelsError(f"models directory {models_dir} does not exist")
    found = check_v2(models_dir)
    if isinstance(found, BaseFiles):
        return HeldBases({BASE_V2: found}, {})
    return HeldBases({}, {BASE_V2: found})


def base_files(models_dir: Path | None, base: str) -> BaseFiles | None:
    """The files of `base` (None for `none`); raises naming what is missing."""
    if base == BASE_NONE:
        return None
    if models_dir is None:
        raise BaseModelsError(f"base {base!r} needs a models directory (--models)")
    held = scan_models_dir(models_dir)
    if base not in held.files:
        details = "; ".join(held.problems.get(base, [f"unknown base {base!r}"]))
        raise BaseModelsError(f"base {base!r} is not usable from {models_dir}: {details}")
    return held.files[base]


def load_base_weights(
    stage: str,
    files: BaseFiles,
    model: nn.Module,
    discriminator: nn.Module | None = None,
) -> None:
    """Load a base's upstream weights into a stage's freshly built models.

    The one place training reads base weights, so the loader behind it can change without
    touching the stages.
    """
    from worker.training.models.hifigan import Discriminator
    from worker.training.models.sovits import SoVITSGenerator
    from worker.training.models.t2s import Text2Semantic
    from worker.training.pretrained import load_pretrained_s1, load_pretrained_s2

    if stage == "s1":
        assert isinstance(model, Text2Semantic)
        load_pretrained_s1(model, files.s1)
        return
    if stage != "s2":
        raise ValueError(f"unknown stage {stage!r}")
    if discriminator is None:
        raise ValueError("stage s2 loads a generator and a discriminator")
    assert isinstance(model, SoVITSGenerator) and isinstance(discriminator, Discriminator)
    # The existing loader finds the discriminator as the generator's `s2D` sibling.
    load_pretrained_s2(model, discriminator, files.s2_generator)
