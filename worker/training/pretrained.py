"""Base weights from a local file: our own exports or the original GPT-SoVITS checkpoints."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from worker.training.checkpoint import safe_torch_load

log = logging.getLogger(__name__)

# Original stage-1 names -> ours (the original keeps torch's packed MultiheadAttention layout).
_S1_RENAMES = [
    (r"^ar_text_embedding\.word_embeddings\.", "text_embedding."),
    (r"^ar_audio_embedding\.word_embeddings\.", "audio_embedding."),
    (r"^ar_text_position\.", "text_position."),
    (r"^ar_audio_position\.", "audio_position."),
    (r"^ar_predict_layer\.", "head."),
    (r"^h\.layers\.(\d+)\.self_attn\.in_proj_weight$", r"layers.\1.in_proj.weight"),
    (r"^h\.layers\.(\d+)\.self_attn\.in_proj_bias$", r"layers.\1.in_proj.bias"),
    (r"^h\.layers\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.out_proj."),
    (r"^h\.layers\.(\d+)\.", r"layers.\1."),
]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch checkpoint (unwrapping `weight`/`model` keys).

    Torch files load with ``weights_only=True``: a file holding anything but tensors and
    plain containers is refused (UnsafeCheckpoint) before any of its code could run.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    raw = safe_torch_load(path)
    for key in ("weight", "model", "state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def _rename_s1(key: str) -> str:
    key = key.removeprefix("model.")
    for pattern, replacement in _S1_RENAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def _rename_weight_norm(key: str) -> str:
    # Old-style weight_norm stores weight_g / weight_v; parametrizations use original0 / 1.
    key = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", key)
    return re.sub(r"\.weight_v$", ".parametrizations.weight.original1", key)


def _load(model: nn.Module, state: dict[str, torch.Tensor], label: str) -> None:
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = model.load_state_dict(usable, strict=False)
    skipped = len(state) - len(usable)
    log.info(
        "%s: loaded %d tensors, %d left at init, %d skipped",
        label,
        len(usable),
        len(result.missing_keys),
        skipped,
    )
    if not usable:
        raise ValueError(f"{label}: no tensor of the file matches the model")


def load_pretrained_s1(model: nn.Module, path: str | Path) -> None:
    """Load stage-1 base weights (ours, or an original `s1*.ckpt`)."""
    state = {_rename_s1(k): v.float() for k, v in read_state_dict(path).items()}
    _load(model, state, f"stage 1 base {path}")


def load_pretrained_s2(generator: nn.Module, discriminator: nn.Module, path: str | Path) -> None:
    """Load stage-2 generator weights; an `s2D` sibling of an original `s2G` file loads into D."""
    path = Path(path)
    state = {_rename_weight_norm(k): v.float() for k, v in read_state_dict(path).items()}
    state = {
        k.replace("quantizer.vq.layers.0._codebook.embed", "quantizer.codebook"): v.squeeze(0)
        if "_codebook.embed" in k
        else v
        for k, v in state.items()
    }
    _load(generator, state, f"stage 2 generator {path}")
    sibling = path.with_name(path.name.replace("s2G", "s2D"))
    if sibling != path and sibling.exists():
        d_state = {_rename_weight_norm(k): v.float() for k, v in read_state_dict(sibling).items()}
        _load(discriminator, d_state, f"stage 2 discriminator {sibling}")
