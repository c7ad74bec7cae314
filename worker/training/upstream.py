"""Original GPT-SoVITS files in and out: strict loading of its checkpoints, and writers of its
inference formats.

Reading:
- `load_s1_checkpoint` reads a GPT `.ckpt` (`{"weight", "config", "info"}`, keys `model.*`),
  the layout of both the pretrained `s1*.ckpt` and the original's per-epoch exports.
- `load_s2_generator` / `load_s2_discriminator` read the pretrained `s2G*.pth` / `s2D*.pth`
  (`{"weight": state_dict, ...}`; the original's `s2_train.py` loads their `weight`), its
  resumable `G_*.pth` / `D_*.pth` training checkpoints (`{"model": state_dict, ...}`) and
  `process_ckpt.py` exports (`{"weight", "config", "info"}`, optionally behind a two-byte
  version header).

Every load is exact: each tensor of the file must land on a parameter or buffer of the same
shape and every parameter and buffer must be filled, otherwise `UpstreamFormatError` names the
offending keys. The one deliberate exception is opt-in: `process_ckpt` exports drop the
posterior encoder `enc_q` (inference never runs it), so `allow_missing_posterior=True` accepts
such a file and leaves `enc_q` at its initial values.

Every file is read with `torch.load(weights_only=True)`. The only non-tensor object the original
pickles is its `utils.HParams` config holder; it is admitted through an inert stand-in that
only collects attributes, and converted to plain dicts.

Writing: `write_gpt_ckpt` and `write_sovits_pth` produce what the original's s1 export and
`process_ckpt.savee` write (fp16 weights, a plain-dict config, an `info` string; SoVITS files
get the version header `01` = v2 from the original's `head2version` table, which its loader
strips), so `inference_webui.py` and `TTS_infer_pack` load them unchanged.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import torch
from torch import nn

from worker.training.lora import merged_state_dict
from worker.training.models.hifigan import Discriminator
from worker.training.models.sizes import (
    AudioSize,
    SoVITSSize,
    T2SSize,
    sovits_size,
)
from worker.training.models.sovits import SoVITSGenerator, build_discriminator
from worker.training.models.t2s import Text2Semantic

# First two bytes of a process_ckpt file -> model version (the original's head2version table).
SOVITS_HEADERS = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3",
    b"04": "v4",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
}
ZIP_MAGIC = b"PK"
V2_HEADER = b"01"


class _FixedS2(TypedDict):
    posterior_layers: int
    flow_steps: int
    flow_layers: int
    wn_kernel: int
    rel_window: int
    mrte_hidden: int
    mrte_heads: int
    style_hidden: int


# Sizes the original hard-codes, whatever its config says.
_FIXED_S2: _FixedS2 = {
    "posterior_layers": 16,
    "flow_steps": 4,
    "flow_layers": 4,
    "wn_kernel": 5,
    "rel_window": 4,
    "mrte_hidden": 512,
    "mrte_heads": 4,
    "style_hidden": 128,
}
_LISTED = 8
M = TypeVar("M", bound=nn.Module)


class UpstreamFormatError(ValueError):
    """A file that does not map exactly onto the model, or that cannot be read safely."""


class _HParamsStandIn:
    """Receives the attributes of a pickled `utils.HParams`; runs no code of the file's."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _plain(value: Any) -> Any:
    if isinstance(value, _HParamsStandIn):
        return {k: _plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, Mapping) and not isinstance(value, torch.Tensor):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def read_upstream_file(path: str | Path) -> dict[str, Any]:
    """The dict of an original checkpoint or export, safely unpickled (tensors and plain data)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(2)
    source: Path | io.BytesIO = path
    if head != ZIP_MAGIC:
        if head not in SOVITS_HEADERS:
            raise UpstreamFormatError(f"{path}: neither a torch file nor a known version header")
        source = io.BytesIO(ZIP_MAGIC + path.read_bytes()[2:])
    try:
        with torch.serialization.safe_globals([(_HParamsStandIn, "utils.HParams")]):
            # A plain torch file is memory-mapped: a v2 generator is hundreds of MB.
            raw = torch.load(
                source, map_location="cpu", weights_only=True, mmap=isinstance(source, Path)
            )
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal is a format error here
        raise UpstreamFormatError(f"{path}: not loadable as plain tensors and data: {exc}") from exc
    if not isinstance(raw, dict):
        raise UpstreamFormatError(f"{path}: top level is {type(raw).__name__}, not a dict")
    return _plain(raw)


def sovits_version(path: str | Path) -> str | None:
    """Model version named by a process_ckpt header, or None for a headerless torch file."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return None if head == ZIP_MAGIC else SOVITS_HEADERS.get(head)


def _tensors(raw: Mapping[str, Any], keys: tuple[str, ...], path: Path) -> dict[str, torch.Tensor]:
    for key in keys:
        value = raw.get(key)
        if isinstance(value, Mapping):
            bad = [k for k, v in value.items() if not isinstance(v, torch.Tensor)]
            if bad:
                raise UpstreamFormatError(f"{path}: non-tensor entries under {key!r}: {bad[:5]}")
            return dict(value)
    raise UpstreamFormatError(f"{path}: no state dict under any of {list(keys)}")


# --- key names ----------------------------------------------------------------------------

_S1_FROM_UPSTREAM = [
    (r"^model\.ar_text_embedding\.word_embeddings\.", "text_embedding."),
    (r"^model\.ar_audio_embedding\.word_embeddings\.", "audio_embedding."),
    (r"^model\.ar_text_position\.", "text_position."),
    (r"^model\.ar_audio_position\.", "audio_position."),
    (r"^model\.ar_predict_layer\.", "head."),
    (r"^model\.bert_proj\.", "bert_proj."),
    (r"^model\.h\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", r"layers.\1.in_proj.\2"),
    (r"^model\.h\.layers\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.out_proj."),
    (r"^model\.h\.layers\.(\d+)\.(linear1|linear2|norm1|norm2)\.", r"layers.\1.\2."),
]
_S1_TO_UPSTREAM = [
    (r"^text_embedding\.", "model.ar_text_embedding.word_embeddings."),
    (r"^audio_embedding\.", "model.ar_audio_embedding.word_embeddings."),
    (r"^text_position\.", "model.ar_text_position."),
    (r"^audio_position\.", "model.ar_audio_position."),
    (r"^head\.", "model.ar_predict_layer."),
    (r"^bert_proj\.", "model.bert_proj."),
    (r"^layers\.(\d+)\.in_proj\.(weight|bias)$", r"model.h.layers.\1.self_attn.in_proj_\2"),
    (r"^layers\.(\d+)\.out_proj\.", r"model.h.layers.\1.self_attn.out_proj."),
    (r"^layers\.(\d+)\.(linear1|linear2|norm1|norm2)\.", r"model.h.layers.\1.\2."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return None


def s1_key_from_upstream(key: str) -> str | None:
    """Our stage-1 key for an original one, or None when it has no place."""
    return _rename(key, _S1_FROM_UPSTREAM)


def s1_key_to_upstream(key: str) -> str:
    """The original's stage-1 key for one of ours."""
    renamed = _rename(key, _S1_TO_UPSTREAM)
    if renamed is None:
        raise UpstreamFormatError(f"stage-1 parameter {key!r} has no place in the original")
    return renamed


def s2_key_from_upstream(key: str) -> str:
    """Our stage-2 key for an original one (module names are shared; weight norm differs)."""
    key = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", key)
    return re.sub(r"\.weight_v$", ".parametrizations.weight.original1", key)


def s2_key_to_upstream(key: str) -> str:
    """The original's stage-2 key for one of ours (old-style weight_g / weight_v storage)."""
    key = re.sub(r"\.parametrizations\.weight\.original0$", ".weight_g", key)
    return re.sub(r"\.parametrizations\.weight\.original1$", ".weight_v", key)


# --- strict loading -----------------------------------------------------------------------


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def load_exact(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    label: str,
    allowed_missing: tuple[str, ...] = (),
) -> None:
    """Copy state into model; every tensor needs a place and every parameter a tensor.

    `allowed_missing` lists key prefixes that may be absent (left at init). Raises
    UpstreamFormatError naming the tensors without a place, the parameters left at init and
    the shape mismatches.
    """
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(
        k for k in own if k not in state and not any(k.startswith(p) for p in allowed_missing)
    )
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    )
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} tensors with no place: {_listing(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} parameters left at init: {_listing(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise UpstreamFormatError(f"{label}: " + "; ".join(problems))
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))


def _unfilled(factory: Callable[[], M]) -> M:
    """A model with allocated but unset storage, for loads that fill every tensor.

    Random init of a v2 model costs seconds on a CPU and is overwritten anyway; callers use
    this only where `load_exact` leaves nothing out.
    """
    with torch.device("meta"):
        model = factory()
    return model.to_empty(device="cpu")


# --- sizes from the original's configs ------------------------------------------------------


def t2s_size_from_config(config: Mapping[str, Any]) -> T2SSize:
    """Stage-1 size from an s1 checkpoint's `config` (the original's yaml as a dict)."""
    model = config["model"]
    d_model = int(model["embedding_dim"])
    if int(model.get("hidden_dim", d_model)) != d_model:
        raise UpstreamFormatError("stage 1: hidden_dim != embedding_dim is not supported")
    return T2SSize(
        d_model=d_model,
        n_heads=int(model["head"]),
        n_layers=int(model["n_layer"]),
        ffn_dim=4 * d_model,
        phoneme_vocab=int(model["phoneme_vocab_size"]),
        semantic_codes=int(model["vocab_size"]) - 1,
    )


def t2s_config(size: T2SSize) -> dict[str, Any]:
    """An s1 `config` the original's inference reads (its s1longer-v2 yaml, our shape)."""
    return {
        "train": {"seed": 1234, "epochs": 15, "batch_size": 8, "precision": "16-mixed"},
        "optimizer": {
            "lr": 0.01,
            "lr_init": 1e-5,
            "lr_end": 1e-4,
            "warmup_steps": 2000,
            "decay_steps": 40000,
        },
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": size.eos},
        "model": {
            "vocab_size": size.semantic_codes + 1,
            "phoneme_vocab_size": size.phoneme_vocab,
            "embedding_dim": size.d_model,
            "hidden_dim": size.d_model,
            "head": size.n_heads,
            "linear_units": size.ffn_dim,
            "n_layer": size.n_layers,
            "dropout": 0,
            "EOS": size.eos,
            "random_bert": 0,
        },
        "inference": {"top_k": 15},
    }


def sovits_size_from_config(hps: Mapping[str, Any]) -> SoVITSSize:
    """Stage-2 size from a process_ckpt `config` (the original's s2.json as a dict)."""
    model, data, train = hps["model"], hps["data"], hps["train"]
    if model.get("version", "v2") not in ("v2", None):
        raise UpstreamFormatError(f"SoVITS version {model.get('version')!r} is not supported")
    if int(model["inter_channels"]) != int(model["hidden_channels"]):
        raise UpstreamFormatError("stage 2: inter_channels != hidden_channels is not supported")
    dilations = {tuple(d) for d in model["resblock_dilation_sizes"]}
    if len(dilations) != 1:
        raise UpstreamFormatError("stage 2: per-kernel resblock dilations are not supported")
    n_layers = int(model["n_layers"])
    hop = int(data["hop_length"])
    audio = AudioSize(
        sample_rate=int(data["sampling_rate"]),
        n_fft=int(data["filter_length"]),
        hop=hop,
        n_mels=int(data["n_mel_channels"]),
        segment_frames=int(train["segment_size"]) // hop,
    )
    return SoVITSSize(
        audio=audio,
        hidden=int(model["hidden_channels"]),
        filter_channels=int(model["filter_channels"]),
        n_heads=int(model["n_heads"]),
        ssl_layers=n_layers // 2,
        text_layers=n_layers,
        post_layers=n_layers // 2,
        dropout=float(model["p_dropout"]),
        gin=int(model["gin_channels"]),
        upsample_initial=int(model["upsample_initial_channel"]),
        upsample_rates=tuple(int(r) for r in model["upsample_rates"]),
        upsample_kernels=tuple(int(k) for k in model["upsample_kernel_sizes"]),
        resblock_kernels=tuple(int(k) for k in model["resblock_kernel_sizes"]),
        resblock_dilations=next(iter(dilations)),
        **_FIXED_S2,
    )


def sovits_size_problems(size: SoVITSSize) -> list[str]:
    """Why the original's SynthesizerTrn cannot take this size (empty when it can)."""
    problems = []
    if size.ssl_layers != size.text_layers // 2 or size.post_layers != size.text_layers // 2:
        problems.append("ssl and post encoder layers must be text layers // 2")
    fixed = {k: getattr(size, k) for k in _FIXED_S2}
    if fixed != _FIXED_S2:
        problems.append(f"hard-coded {_FIXED_S2}, got {fixed}")
    wanted = {"hidden": 192, "gin": 512, "ssl_dim": 768, "codebook_size": 1024}
    wanted["phoneme_vocab"] = 732
    for name, value in wanted.items():
        if getattr(size, name) != value:
            problems.append(f"{name} must be {value}, got {getattr(size, name)}")
    if size.audio.ref_bins != 704 or size.audio.n_bins < 704:
        problems.append("the reference encoder reads 704 linear bins")
    return problems


def sovits_config(size: SoVITSSize) -> dict[str, Any]:
    """A process_ckpt `config` the original's inference reads (its s2.json, our shape)."""
    problems = sovits_size_problems(size)
    if problems:
        raise UpstreamFormatError("the original cannot build this size: " + "; ".join(problems))
    audio = size.audio
    return {
        "train": {
            "seed": 1234,
            "learning_rate": 0.0001,
            "betas": [0.8, 0.99],
            "eps": 1e-09,
            "fp16_run": True,
            "lr_decay": 0.999875,
            "segment_size": audio.segment_frames * audio.hop,
            "c_mel": 45,
            "c_kl": 1.0,
            "text_low_lr_rate": 0.4,
        },
        "data": {
            "max_wav_value": 32768.0,
            "sampling_rate": audio.sample_rate,
            "filter_length": audio.n_fft,
            "hop_length": audio.hop,
            "win_length": audio.n_fft,
            "n_mel_channels": audio.n_mels,
            "mel_fmin": 0.0,
            "mel_fmax": None,
            "add_blank": True,
            "n_speakers": 300,
            "cleaned_text": True,
        },
        "model": {
            "inter_channels": size.hidden,
            "hidden_channels": size.hidden,
            "filter_channels": size.filter_channels,
            "n_heads": size.n_heads,
            "n_layers": size.text_layers,
            "kernel_size": 3,
            "p_dropout": size.dropout,
            "resblock": "1",
            "resblock_kernel_sizes": list(size.resblock_kernels),
            "resblock_dilation_sizes": [list(size.resblock_dilations)] * len(size.resblock_kernels),
            "upsample_rates": list(size.upsample_rates),
            "upsample_initial_channel": size.upsample_initial,
            "upsample_kernel_sizes": list(size.upsample_kernels),
            "n_layers_q": 3,
            "use_spectral_norm": False,
            "gin_channels": size.gin,
            "semantic_frame_rate": "25hz",
            "freeze_quantizer": True,
            "version": "v2",
        },
        "version": "v2",
    }


# --- public loaders ----------------------------------------------------------------------


def load_s1_state(model: Text2Semantic, path: str | Path) -> None:
    """Load an original GPT `.ckpt` into an existing stage-1 model, exactly."""
    path = Path(path)
    raw = read_upstream_file(path)
    state: dict[str, torch.Tensor] = {}
    homeless = []
    for key, value in _tensors(raw, ("weight",), path).items():
        ours = s1_key_from_upstream(key)
        if ours is None:
            homeless.append(key)
        else:
            state[ours] = value
    if homeless:
        raise UpstreamFormatError(
            f"stage 1 {path}: {len(homeless)} tensors with no place: {_listing(sorted(homeless))}"
        )
    load_exact(model, state, f"stage 1 {path}")


def load_s1_checkpoint(path: str | Path, size: T2SSize | None = None) -> Text2Semantic:
    """A stage-1 model built from an original GPT `.ckpt` (its `config`, else `size`)."""
    raw = read_upstream_file(path)
    if size is None:
        config = raw.get("config")
        if not isinstance(config, Mapping) or "model" not in config:
            raise UpstreamFormatError(f"{path}: no model config; pass the size explicitly")
        try:
            size = t2s_size_from_config(config)
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamFormatError(f"{path}: unusable config ({exc!r})") from exc
    model = _unfilled(lambda: Text2Semantic(size))
    load_s1_state(model, path)
    return model


def _s2_state(path: Path) -> tuple[dict[str, torch.Tensor], Mapping[str, Any]]:
    raw = read_upstream_file(path)
    tensors = _tensors(raw, ("weight", "model"), path)
    state = {s2_key_from_upstream(k): v for k, v in tensors.items()}
    config = raw.get("config")
    return state, config if isinstance(config, Mapping) else {}


def load_s2_generator_state(
    generator: SoVITSGenerator, path: str | Path, allow_missing_posterior: bool = False
) -> None:
    """Load an original `s2G*.pth` (or process_ckpt export) into an existing generator."""
    path = Path(path)
    state, _ = _s2_state(path)
    load_exact(
        generator,
        state,
        f"stage 2 generator {path}",
        ("enc_q.",) if allow_missing_posterior else (),
    )


def load_s2_generator(
    path: str | Path, size: SoVITSSize | None = None, allow_missing_posterior: bool = False
) -> SoVITSGenerator:
    """A generator built from an original `s2G*.pth` or process_ckpt export.

    The size comes from `size`, else from the file's config (exports carry one), else v2.
    """
    path = Path(path)
    state, config = _s2_state(path)
    if size is None:
        try:
            size = sovits_size_from_config(config) if config else sovits_size("v2")
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamFormatError(f"{path}: unusable config ({exc!r})") from exc
    # A posterior left out keeps its random init, so only then is the model initialised.
    if allow_missing_posterior:
        generator = SoVITSGenerator(size)
    else:
        generator = _unfilled(lambda: SoVITSGenerator(size))
    load_exact(
        generator,
        state,
        f"stage 2 generator {path}",
        ("enc_q.",) if allow_missing_posterior else (),
    )
    return generator


def load_s2_discriminator_state(discriminator: Discriminator, path: str | Path) -> None:
    """Load an original `s2D*.pth` into an existing discriminator."""
    path = Path(path)
    state, _ = _s2_state(path)
    load_exact(discriminator, state, f"stage 2 discriminator {path}")


def load_s2_discriminator(path: str | Path, size: SoVITSSize | None = None) -> Discriminator:
    """A discriminator built from an original `s2D*.pth` (v2 periods unless `size` says)."""
    discriminator = _unfilled(lambda: build_discriminator(size or sovits_size("v2")))
    load_s2_discriminator_state(discriminator, path)
    return discriminator


# --- writers -----------------------------------------------------------------------------


def t2s_upstream_state(model: nn.Module, dtype: torch.dtype = torch.float16) -> OrderedDict:
    """Stage-1 weights (LoRA merged) under the original's keys."""
    return OrderedDict(
        (s1_key_to_upstream(k), v.detach().to("cpu", dtype).contiguous())
        for k, v in merged_state_dict(model).items()
    )


def sovits_upstream_state(
    generator: nn.Module, dtype: torch.dtype | None = None, drop_posterior: bool = False
) -> OrderedDict:
    """Stage-2 weights (LoRA merged) under the original's keys; dtype None keeps each dtype."""
    out = OrderedDict()
    for key, value in merged_state_dict(generator).items():
        if drop_posterior and key.startswith("enc_q."):
            continue
        value = value.detach().to("cpu")
        out[s2_key_to_upstream(key)] = (value if dtype is None else value.to(dtype)).contiguous()
    return out


def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_gpt_ckpt(
    model: Text2Semantic,
    path: str | Path,
    info: str = "GPT-e1",
    config: Mapping[str, Any] | None = None,
) -> Path:
    """The GPT `.ckpt` the original's s1 export writes: fp16 `weight`, `config`, `info`.

    `config` defaults to the original's v2 yaml with this model's shape; pass a base's own
    config to carry it over unchanged.
    """
    payload = {
        "weight": t2s_upstream_state(model),
        "config": dict(config) if config is not None else t2s_config(model.size),
        "info": info,
    }
    return _atomic_write(Path(path), _torch_bytes(payload))


def write_sovits_pth(generator: SoVITSGenerator, path: str | Path, info: str = "1epoch") -> Path:
    """The SoVITS `.pth` process_ckpt writes: fp16 weights without enc_q, config, info, header."""
    payload = {
        "weight": sovits_upstream_state(generator, torch.float16, drop_posterior=True),
        "config": sovits_config(generator.size),
        "info": info,
    }
    data = _torch_bytes(payload)
    return _atomic_write(Path(path), V2_HEADER + data[2:])


def write_s2_pretrained(model: nn.Module, path: str | Path, info: str = "greenwindow") -> Path:
    """An `s2G`/`s2D` file in the layout of the original's pretrained ones.

    `weight` holds every tensor (enc_q included) in its own dtype; a generator the original can
    build also gets its `config`.
    """
    payload: dict[str, Any] = {"weight": sovits_upstream_state(model), "info": info}
    size = getattr(model, "size", None)
    if isinstance(size, SoVITSSize) and not sovits_size_problems(size):
        payload["config"] = sovits_config(size)
    return _atomic_write(Path(path), _torch_bytes(payload))
