"""LoRA: frozen base, adapter targets, export and reload."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from worker.training.batches import to_device
from worker.training.checkpoint import seed_everything
from worker.training.config import FinetuneConfig
from worker.training.distributed import DistContext
from worker.training.lora import LoRADelta, apply_lora, export_adapter, load_adapter
from worker.training.runner import build_finetuned_model
from worker.training.stages import build_stage
from worker.training.synthetic import synthetic_items
from worker.training.trainer import Trainer, TrainerSettings

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Two threads on a busy two-core machine spin against each other; one is steadier.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _settings(steps: int) -> TrainerSettings:
    return TrainerSettings(
        total_steps=steps,
        micro_batch=2,
        grad_accum=1,
        grad_clip=1.0,
        save_every_steps=1000,
        seed=0,
    )


def _base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if ".lora." not in k}


def test_lora_starts_at_the_base_model_and_trains_only_adapters() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 8), nn.Conv1d(8, 8, 3, padding=1))
    x = torch.randn(2, 8)
    before = base[0](x)
    adapted = apply_lora(base, rank=4, alpha=4, targets=["0", "1"])
    assert adapted == ["0", "1"]
    torch.testing.assert_close(base[0](x), before)
    trainable = {n for n, p in base.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora.a", "0.lora.b", "1.lora.a", "1.lora.b"}
    # State-dict keys of the base layers are unchanged, so base checkpoints still load.
    assert {"0.weight", "0.bias", "1.weight", "1.bias"} <= set(base.state_dict())


def test_conv_adapter_adds_a_low_rank_update_of_the_same_shape() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 5, 3, padding=1)
    delta = LoRADelta(conv, rank=2, alpha=4)
    nn.init.normal_(delta.b)
    x = torch.randn(1, 6, 11)
    assert delta(x).shape == conv(x).shape
    merged = torch.einsum("or,rik->oik", delta.b[:, :, 0], delta.a) * delta.scale
    expected = nn.functional.conv1d(x, merged, padding=1)
    torch.testing.assert_close(delta(x), expected, rtol=1e-4, atol=1e-5)


def test_stage_targets_attention_and_optionally_ffn() -> None:
    plain = build_stage("s1", FinetuneConfig(stage="s1", model_size="tiny"), CPU)
    with_ffn = build_stage("s1", FinetuneConfig(stage="s1", model_size="tiny", lora_ffn=True), CPU)
    assert all(n.endswith(("in_proj", "out_proj")) for n in plain.adapted)
    assert len(plain.adapted) == 2 * 2  # two layers x (qkv, out)
    assert len(with_ffn.adapted) == 4 * 2
    s2 = build_stage("s2", FinetuneConfig(stage="s2", model_size="tiny"), CPU)
    names = set(s2.adapted)
    assert any(re.search(r"attn_layers\.\d+\.conv_q$", n) for n in names)
    assert any(n.endswith("mrte.cross_attention.conv_o") for n in names)
    generator = s2.models["generator"]
    trainable = {n.split(".")[0] for n, p in generator.named_parameters() if p.requires_grad}
    assert "ref_enc" in trainable  # kept fully trainable by default
    assert not any(p.requires_grad for p in generator.ssl_proj.parameters())
    assert all(p.requires_grad for p in s2.models["discriminator"].parameters())


def test_rank_zero_trains_everything_but_the_content_path() -> None:
    s2 = build_stage("s2", FinetuneConfig(stage="s2", model_size="tiny", lora_rank=0), CPU)
    generator = s2.models["generator"]
    assert s2.adapted == []
    frozen = {n for n, p in generator.named_parameters() if not p.requires_grad}
    assert frozen == {"ssl_proj.weight", "ssl_proj.bias"}


def test_training_leaves_base_weights_bit_identical_and_export_reloads(tmp_path: Path) -> None:
    config = FinetuneConfig(stage="s1", model_size="tiny", lora_rank=8, lora_alpha=16)
    seed_everything(config.seed)
    stage = build_stage("s1", config, CPU)
    model = stage.models["t2s"]
    base_before = _base_weights(model)
    items = synthetic_items(4)
    Trainer(stage, items, _settings(4), DistContext()).run()
    base_after = _base_weights(model)
    assert base_before.keys() == base_after.keys()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("lora.b"))

    path = export_adapter(model, tmp_path / "s1_lora.safetensors", {"stage": "s1"})
    reloaded = build_finetuned_model("s1", config, path)
    assert load_adapter(reloaded, path) == {"stage": "s1"}
    fresh = build_finetuned_model("s1", config, path)
    seed_everything(config.seed)
    untouched = build_stage("s1", config, CPU).models["t2s"].eval()

    batch = to_device(stage.collate(items[:2]), CPU)
    args = (batch["phonemes"], batch["text_lens"], batch["bert"], batch["semantic"])
    with torch.no_grad():
        trained_out = model.eval()(*args)
        reloaded_out = fresh(*args)
        base_out = untouched(*args)
    # Reloaded weights went through fp16, so outputs agree to fp16 precision, and far more
    # closely than the model without the adapter does.
    torch.testing.assert_close(reloaded_out, trained_out, rtol=2e-2, atol=2e-2)
    assert (reloaded_out - trained_out).abs().max() < 0.1 * (base_out - trained_out).abs().max()
