"""Low-rank adapters on Linear and Conv1d layers, plus export, reload and merging.

A small wrapper of our own rather than peft: the adapter is a child module (`<layer>.lora.a/.b`)
whose output a forward hook adds to the layer's, so the base weights keep their original
state-dict keys (pretrained checkpoints load before or after adapting), kernel-k Conv1d layers of
the SoVITS encoders are covered, and the models stay plain modules for DDP, gradient
checkpointing and weight-norm parametrizations.

peft would buy no compatibility: GPT-SoVITS uses it only for its v3/v4 SoVITS (CFM blocks), and
its v2 models are fine-tuned and shipped as full weights. Results therefore leave greenwindow as
merged full weights (`merged_state_dict`, written by `worker.training.upstream`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypedDict, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


class _ConvGeometry(TypedDict):
    """The base Conv1d's geometry, applied to the update's first convolution."""

    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]


class LoRADelta(nn.Module):
    """Low-rank update B(A(x)) * alpha / rank for one Linear or Conv1d layer."""

    def __init__(self, base: nn.Linear | nn.Conv1d, rank: int, alpha: float) -> None:
        super().__init__()
        self.scale = alpha / rank
        if isinstance(base, nn.Linear):
            self.a = nn.Parameter(torch.empty(rank, base.in_features))
            self.b = nn.Parameter(torch.zeros(base.out_features, rank))
            self.conv: _ConvGeometry | None = None
        else:
            if base.groups != 1:
                raise ValueError("LoRA on grouped convolutions is not supported")
            kernel = base.kernel_size[0]
            self.a = nn.Parameter(torch.empty(rank, base.in_channels, kernel))
            self.b = nn.Parameter(torch.zeros(base.out_channels, rank, 1))
            self.conv = _ConvGeometry(
                stride=base.stride, padding=base.padding, dilation=base.dilation
            )
        # B starts at zero so an adapted model starts exactly at its base.
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update to add to the base layer's output for input x."""
        a, b = self.a.to(x.dtype), self.b.to(x.dtype)
        if self.conv is None:
            return F.linear(F.linear(x, a), b) * self.scale
        geometry = self.conv
        stride, padding, dilation = geometry["stride"], geometry["padding"], geometry["dilation"]
        # conv1d's overloads take a padding string or padding sizes, not either.
        if isinstance(padding, str):
            hidden = F.conv1d(x, a, stride=stride, padding=padding, dilation=dilation)
        else:
            hidden = F.conv1d(x, a, stride=stride, padding=padding, dilation=dilation)
        return F.conv1d(hidden, b) * self.scale


def _add_lora(
    module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    # nn.Module types its attributes as Tensor | Module; `lora` is the LoRADelta added beside it.
    delta = cast(LoRADelta, module.lora)
    return output + delta(args[0]).to(output.dtype)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.endswith("." + p) or name.startswith(p + ".") for p in patterns)


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Iterable[str],
    trainable: Iterable[str] = (),
    frozen: Iterable[str] = (),
) -> list[str]:
    """Freeze the base and adapt layers whose names end with a target; rank 0 trains everything.

    `trainable` names modules kept fully trainable; `frozen` names modules that stay frozen
    even in full fine-tuning. Returns the names of the adapted layers.
    """
    targets, trainable, frozen = list(targets), list(trainable), list(frozen)
    for name, param in model.named_parameters():
        full = rank == 0 or _matches(name, trainable)
        param.requires_grad_(full and not _matches(name, frozen))
    if rank == 0:
        return []
    adapted = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear | nn.Conv1d) or not _matches(name, targets):
            continue
        if isinstance(module, nn.Conv1d) and module.groups != 1:
            continue
        delta = LoRADelta(module, rank, alpha)
        delta.to(next(module.parameters()).device)
        module.add_module("lora", delta)
        module.register_forward_hook(_add_lora)
        adapted.append(name)
    if not adapted:
        raise ValueError(f"no layer matches the LoRA targets {targets}")
    return adapted


def _merged_weight(module: nn.Linear | nn.Conv1d, delta: LoRADelta) -> torch.Tensor:
    """The base weight with the low-rank update folded in (same result for every input)."""
    a, b = delta.a.detach().float(), delta.b.detach().float()
    if delta.conv is None:
        update = b @ a
    else:
        update = torch.einsum("or,rik->oik", b[:, :, 0], a)
    return (module.weight.detach().float() + update * delta.scale).to(module.weight.dtype)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every adapter merged into its layer and its keys removed.

    The result has exactly the keys of the unadapted model, so it loads into the base
    architecture (ours, or the original's after renaming).
    """
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        delta = getattr(module, "lora", None)
        if not isinstance(delta, LoRADelta):
            continue
        if nn.utils.parametrize.is_parametrized(module):
            raise ValueError(f"cannot merge an adapter into the parametrized layer {name}")
        prefix = f"{name}." if name else ""
        state[f"{prefix}weight"] = _merged_weight(module, delta)
        state.pop(f"{prefix}lora.a")
        state.pop(f"{prefix}lora.b")
    return state


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the parameters that require gradients, by state-dict key."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy saved trainable weights into model; every saved key must exist in it."""
    params = dict(model.named_parameters())
    missing = [key for key in state if key not in params]
    if missing:
        raise KeyError(f"weights for unknown parameters: {missing[:5]}")
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value.to(params[key].dtype))


def export_adapter(model: nn.Module, path: Path, metadata: Mapping[str, object]) -> Path:
    """Write the trainable weights as fp16 safetensors with JSON metadata."""
    tensors = {k: v.to(torch.float16).contiguous().cpu() for k, v in trainable_state(model).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"greenwindow": json.dumps(dict(metadata))})
    return path


def load_adapter(model: nn.Module, path: Path) -> dict[str, object]:
    """Load exported trainable weights onto an (already adapted) base model; returns metadata."""
    load_trainable_state(model, load_file(str(path)))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta.get("greenwindow", "{}"))
