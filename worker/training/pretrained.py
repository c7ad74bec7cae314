"""Base weights from local files, loaded exactly: the original GPT-SoVITS checkpoints or
our own safetensors exports.

Every load fails with `UpstreamFormatError` naming the tensors that have no place and the
parameters that would stay at init; nothing is skipped silently.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from worker.training.models.hifigan import Discriminator
from worker.training.models.sovits import SoVITSGenerator
from worker.training.models.t2s import Text2Semantic
from worker.training.upstream import (
    UpstreamFormatError,
    load_exact,
    load_s1_state,
    load_s2_discriminator_state,
    load_s2_generator_state,
)

# The original's v2 base: `GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/`.
V2_PRETRAINED_DIR = "gsv-v2final-pretrained"
V2_S1_FILE = "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
V2_S2G_FILE = "s2G2333k.pth"
V2_S2D_FILE = "s2D2333k.pth"


def _load_safetensors(model: nn.Module, path: Path, label: str) -> None:
    load_exact(model, load_file(str(path)), f"{label} {path}")


def load_pretrained_s1(model: Text2Semantic, path: str | Path) -> None:
    """Load stage-1 base weights: an original GPT `.ckpt`, or our safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        _load_safetensors(model, path, "stage 1")
    else:
        load_s1_state(model, path)


def discriminator_sibling(generator_path: Path) -> Path:
    """The `s2D` file that belongs to an `s2G` file (same directory, s2G -> s2D)."""
    if "s2G" not in generator_path.name:
        raise UpstreamFormatError(f"{generator_path}: not an s2G file, cannot find its s2D")
    return generator_path.with_name(generator_path.name.replace("s2G", "s2D"))


def load_pretrained_s2(
    generator: SoVITSGenerator, discriminator: Discriminator, path: str | Path
) -> None:
    """Load an original `s2G*.pth` into the generator and its `s2D*.pth` sibling into D.

    Both files are required: a discriminator left at random init would undo the fine-tune's
    first steps, so its absence is an error like any other missing tensor.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        _load_safetensors(generator, path, "stage 2 generator")
        return
    sibling = discriminator_sibling(path)
    if not sibling.is_file():
        raise UpstreamFormatError(f"{path}: its discriminator {sibling.name} is missing")
    load_s2_generator_state(generator, path)
    load_s2_discriminator_state(discriminator, sibling)
