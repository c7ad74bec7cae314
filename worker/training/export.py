"""Merged full weights in the original GPT-SoVITS inference formats.

A job ends with its adapters (`s1_lora.safetensors`, `s2_lora.safetensors`) and, beside them,
the base with those adapters merged in:
- `gpt_merged.ckpt`: what the original's stage-1 training exports (GPT_weights_v2/*.ckpt);
- `sovits_merged.pth`: what its `process_ckpt.savee` writes (SoVITS_weights_v2/*.pth).

`export_from_base` does the same offline from a models directory in the original's
`pretrained_models` layout (`greenwindow export`); with no adapters it writes the base back
tensor for tensor (fp16 where the original's formats are fp16).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

from safetensors import safe_open
from torch import nn

from worker.training.lora import apply_lora, load_adapter
from worker.training.models.sovits import SoVITSGenerator
from worker.training.models.t2s import Text2Semantic
from worker.training.pretrained import V2_PRETRAINED_DIR, V2_S1_FILE, V2_S2G_FILE
from worker.training.upstream import (
    UpstreamFormatError,
    load_s1_checkpoint,
    load_s2_generator,
    read_upstream_file,
    sovits_size_problems,
    write_gpt_ckpt,
    write_sovits_pth,
)

MERGED_GPT = "gpt_merged.ckpt"
MERGED_SOVITS = "sovits_merged.pth"
BASES = {"v2": V2_PRETRAINED_DIR}


@overload
def export_merged_stage(
    stage: Literal["s1"],
    model: nn.Module,
    outputs_dir: Path,
    info: str,
    config: dict[str, Any] | None = None,
) -> Path: ...
@overload
def export_merged_stage(
    stage: str,
    model: nn.Module,
    outputs_dir: Path,
    info: str,
    config: dict[str, Any] | None = None,
) -> Path | None: ...
def export_merged_stage(
    stage: str,
    model: nn.Module,
    outputs_dir: Path,
    info: str,
    config: dict[str, Any] | None = None,
) -> Path | None:
    """Write one trained stage (adapters merged) in the original's format.

    Returns None for a stage-2 size the original cannot build (the demo `tiny` size), whose
    adapters remain the only result.
    """
    if stage == "s1":
        assert isinstance(model, Text2Semantic)
        return write_gpt_ckpt(model, outputs_dir / MERGED_GPT, info, config)
    assert isinstance(model, SoVITSGenerator)
    if sovits_size_problems(model.size):
        return None
    return write_sovits_pth(model, outputs_dir / MERGED_SOVITS, info)


def adapter_metadata(path: Path) -> dict[str, Any]:
    """The greenwindow metadata of an adapter file (stage, size, rank, alpha, ffn)."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if "greenwindow" not in meta:
        raise ValueError(f"{path}: not a greenwindow adapter file")
    return json.loads(meta["greenwindow"])


def _apply_adapter(model: nn.Module, stage: str, path: Path, meta: dict[str, Any]) -> None:
    from worker.training.stages import S1_ATTENTION, S1_FFN, S2_ATTENTION, S2_FFN

    rank = int(meta.get("lora_rank", 0))
    if rank > 0:
        attention, ffn = (S1_ATTENTION, S1_FFN) if stage == "s1" else (S2_ATTENTION, S2_FFN)
        targets = attention + (ffn if meta.get("lora_ffn") else ())
        apply_lora(model, rank, float(meta["lora_alpha"]), targets)
    load_adapter(model, path)


def export_from_base(
    models_dir: Path, base: str, adapters: Sequence[Path], out_dir: Path
) -> list[Path]:
    """Load a base from models_dir, merge the adapters, write the original's inference files.

    Each adapter names its stage in its metadata; a stage without an adapter is written from
    the base alone, so with no adapters the base is written back unchanged.
    """
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; known: {sorted(BASES)}")
    base_dir = Path(models_dir) / BASES[base]
    by_stage: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in adapters:
        meta = adapter_metadata(Path(path))
        stage = meta.get("stage")
        if stage not in ("s1", "s2"):
            raise ValueError(f"{path}: unknown stage {stage!r}")
        if stage in by_stage:
            raise ValueError(f"two adapters for stage {stage}: {by_stage[stage][0]} and {path}")
        if meta.get("model_size") != base:
            raise ValueError(f"{path}: trained on size {meta.get('model_size')!r}, not {base!r}")
        by_stage[stage] = (Path(path), meta)

    written: list[Path] = []
    s1_path = base_dir / V2_S1_FILE
    t2s = load_s1_checkpoint(s1_path)
    s1_raw = read_upstream_file(s1_path)
    if "s1" in by_stage:
        _apply_adapter(t2s, "s1", *by_stage["s1"])
    info = f"GPT-greenwindow-{by_stage['s1'][0].stem}" if "s1" in by_stage else s1_raw.get("info")
    config = s1_raw.get("config") if isinstance(s1_raw.get("config"), dict) else None
    written.append(export_merged_stage("s1", t2s.eval(), Path(out_dir), str(info), config))

    generator = load_s2_generator(base_dir / V2_S2G_FILE)
    if "s2" in by_stage:
        _apply_adapter(generator, "s2", *by_stage["s2"])
    info = f"greenwindow-{by_stage['s2'][0].stem}" if "s2" in by_stage else "base"
    s2_path = export_merged_stage("s2", generator.eval(), Path(out_dir), info)
    if s2_path is None:
        raise UpstreamFormatError("the base's stage-2 size cannot be written for the original")
    written.append(s2_path)
    return written
