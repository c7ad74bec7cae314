"""Conformance with the original GPT-SoVITS classes (the reference in ../shared), both ways.

Original files -> greenwindow: every tensor of a v2-size s1 `.ckpt`, `s2G` and `s2D` (written
from the original classes with random init, in the original's layouts) lands on the same
greenwindow tensor, and forward outputs agree within 1e-5.

greenwindow -> original: merged exports load strictly into the original classes the way its
inference code loads them (0 missing, 0 unexpected keys), the GPT logits agree, and
`SynthesizerTrn.decode` runs. With no adapters, `greenwindow export` writes the base back
tensor for tensor.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support.gsv_reference import load_reference
from typer.testing import CliRunner

from scheduler.cli import app
from worker.training.lora import apply_lora, merged_state_dict
from worker.training.models.layers import length_mask
from worker.training.models.sizes import AudioSize, SoVITSSize, sovits_size, t2s_size
from worker.training.models.sovits import SoVITSGenerator
from worker.training.models.t2s import Text2Semantic
from worker.training.pretrained import (
    V2_PRETRAINED_DIR,
    V2_S1_FILE,
    V2_S2D_FILE,
    V2_S2G_FILE,
    load_pretrained_s2,
)
from worker.training.stages import S1_ATTENTION, S1_FFN, S2_ATTENTION, S2_FFN
from worker.training.upstream import (
    UpstreamFormatError,
    load_s1_checkpoint,
    load_s2_discriminator,
    load_s2_generator,
    read_upstream_file,
    s1_key_to_upstream,
    s2_key_to_upstream,
    sovits_config,
    t2s_config,
    write_gpt_ckpt,
    write_s2_pretrained,
    write_sovits_pth,
)

ATOL = 1e-5
# The smallest stage-2 shape the original can build (it hard-codes widths 192/512/768).
SMALL_S2 = SoVITSSize(
    audio=AudioSize(segment_frames=4),
    filter_channels=64,
    ssl_layers=1,
    text_layers=2,
    post_layers=1,
    upsample_initial=32,
    upsample_rates=(10, 8, 8),
    upsample_kernels=(20, 16, 16),
    resblock_kernels=(3,),
)


@pytest.fixture(scope="module")
def ref() -> SimpleNamespace:
    return load_reference()


def _random_values(factory: Any) -> torch.nn.Module:
    """An original model with random values everywhere, like a trained file (and fast).

    Built on the meta device and filled directly: the original's own init of a v2 model takes
    seconds here and zeroes some outputs (flow couplings) that a trained file has non-zero.
    """
    with torch.device("meta"):
        model = factory()
    model = model.to_empty(device="cpu")
    for module in model.modules():  # a plain-attribute cache the original rebuilds when None
        if isinstance(getattr(module, "pe", None), torch.Tensor) and module.pe.is_meta:
            module.pe = None
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dim() >= 2:
                fan_in = tensor[0].numel()
                tensor.normal_(0, fan_in**-0.5)
            elif name.endswith(("gamma", "norm1.weight", "norm2.weight", "alpha")):
                tensor.uniform_(0.9, 1.1)
            else:
                tensor.uniform_(-0.1, 0.1)
    return model.eval()


def _upstream_generator(ref: SimpleNamespace, hps: dict[str, Any]) -> torch.nn.Module:
    model = _random_values(
        lambda: ref.models.SynthesizerTrn(
            hps["data"]["filter_length"] // 2 + 1,
            hps["train"]["segment_size"] // hps["data"]["hop_length"],
            n_speakers=hps["data"]["n_speakers"],
            **hps["model"],
        )
    )
    codebook = model.quantizer.vq.layers[0]._codebook
    codebook.inited.fill_(1)
    codebook.embed_avg.copy_(codebook.embed)
    codebook.cluster_size.uniform_(0, 5)
    return model


def _upstream_t2s(ref: SimpleNamespace, config: dict[str, Any]) -> torch.nn.Module:
    return _random_values(
        lambda: ref.t2s.Text2SemanticLightningModule(config, "****", is_train=False)
    )


def _save(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def v2_base(tmp_path_factory: pytest.TempPathFactory, ref: SimpleNamespace) -> SimpleNamespace:
    """A models dir with v2-size files in the original layouts, from the original classes."""
    torch.manual_seed(1234)
    models = tmp_path_factory.mktemp("models")
    base = models / V2_PRETRAINED_DIR
    s1_config = t2s_config(t2s_size("v2"))
    s1_config["pretrained_s1"] = "GPT_SoVITS/pretrained_models/s1.ckpt"  # as the yaml carries
    t2s = _upstream_t2s(ref, s1_config)
    # The original's s1 export: fp16 weights of the Lightning module, the config, an info string.
    s1_weight = OrderedDict((k, v.half()) for k, v in t2s.state_dict().items())
    _save({"weight": s1_weight, "config": s1_config, "info": "GPT-e13"}, base / V2_S1_FILE)

    # The original's pretrained s2G / s2D: fp16 tensors under `weight` (its s2_train.py loads
    # exactly that key), the generator with its s2.json config.
    hps = sovits_config(sovits_size("v2"))
    generator = _upstream_generator(ref, hps).half().float()
    g_weight = OrderedDict((k, v.half()) for k, v in generator.state_dict().items())
    _save({"weight": g_weight, "config": hps, "info": "pretrained_s2G_v2"}, base / V2_S2G_FILE)
    discriminator = _random_values(lambda: ref.models.MultiPeriodDiscriminator(False))
    d_weight = OrderedDict((k, v.half()) for k, v in discriminator.state_dict().items())
    _save({"weight": d_weight, "info": "pretrained_s2D_v2"}, base / V2_S2D_FILE)
    discriminator.half().float()
    return SimpleNamespace(
        models=models,
        base=base,
        t2s=t2s,
        generator=generator,
        discriminator=discriminator,
        s1_weight=s1_weight,
        s1_config=s1_config,
    )


def _assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(theirs)
    unequal = [k for k in theirs if not torch.equal(ours[k], theirs[k].to(ours[k].dtype))]
    assert unequal == []


# --- original files -> greenwindow ----------------------------------------------------------


def test_v2_gpt_checkpoint_maps_every_tensor_and_logits_match(
    v2_base: SimpleNamespace,
) -> None:
    ours = load_s1_checkpoint(v2_base.base / V2_S1_FILE).eval()
    mapped = {s1_key_to_upstream(k): v for k, v in ours.state_dict().items()}
    assert len(mapped) == 295
    _assert_same_tensors(mapped, {k: v.float() for k, v in v2_base.s1_weight.items()})

    # The original at the same (fp16-rounded) weights; its logits are captured at the head.
    upstream = v2_base.t2s
    upstream.load_state_dict({k: v.float() for k, v in v2_base.s1_weight.items()})
    captured: list[torch.Tensor] = []
    hook = upstream.model.ar_predict_layer.register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    torch.manual_seed(0)
    phonemes = torch.randint(0, 732, (2, 9))
    semantic = torch.randint(0, 1024, (2, 7))
    bert = torch.randn(2, 1024, 9)
    lens_x, lens_y = torch.tensor([9, 9]), torch.tensor([7, 7])
    with torch.no_grad():
        upstream.model.forward_old(phonemes, lens_x, semantic, lens_y, bert)
        logits = ours(phonemes, lens_x, bert, semantic)
    hook.remove()
    torch.testing.assert_close(logits, captured[0], atol=ATOL, rtol=0)


def test_v2_generator_maps_every_tensor_and_forward_matches(v2_base: SimpleNamespace) -> None:
    ours = load_s2_generator(v2_base.base / V2_S2G_FILE).eval()
    mapped = {s2_key_to_upstream(k): v for k, v in ours.state_dict().items()}
    assert len(mapped) == 776
    _assert_same_tensors(mapped, v2_base.generator.state_dict())

    up = v2_base.generator
    torch.manual_seed(0)
    frames, phones = 24, 10
    lens, text_lens = torch.tensor([24, 18]), torch.tensor([10, 7])
    mask, text_mask = length_mask(lens, frames), length_mask(text_lens, phones)
    ssl = torch.randn(2, 768, frames)
    spec = torch.randn(2, 1025, frames).abs()
    phonemes = torch.randint(0, 732, (2, phones))
    z = torch.randn(2, 192, frames) * mask
    with torch.no_grad():
        ge = ours.ref_enc(spec[:, :704] * mask, mask)
        ge_up = up.ref_enc(spec[:, :704] * mask, mask)
        torch.testing.assert_close(ge, ge_up, atol=ATOL, rtol=0)

        quantized, codes, _, _ = up.quantizer(up.ssl_proj(ssl), layers=[0])
        assert torch.equal(ours.extract_codes(ssl), codes[0])
        content_up = F.interpolate(quantized, scale_factor=2.0, mode="nearest")
        content = ours.content(ssl)
        torch.testing.assert_close(content, content_up, atol=ATOL, rtol=0)

        m_p, logs_p = ours.enc_p(content, mask, phonemes, text_mask, ge)
        _, m_up, logs_up, _, _, _ = up.enc_p(content_up, lens, phonemes, text_lens, ge_up)
        torch.testing.assert_close(m_p, m_up, atol=ATOL, rtol=0)
        torch.testing.assert_close(logs_p, logs_up, atol=ATOL, rtol=0)

        _, m_q, logs_q = ours.enc_q(spec, mask, ge)
        _, m_q_up, logs_q_up, _ = up.enc_q(spec, lens, g=ge_up)
        torch.testing.assert_close(m_q, m_q_up, atol=ATOL, rtol=0)
        torch.testing.assert_close(logs_q, logs_q_up, atol=ATOL, rtol=0)

        for reverse in (False, True):
            torch.testing.assert_close(
                ours.flow(z, mask, ge, reverse=reverse),
                up.flow(z, mask, g=ge_up, reverse=reverse),
                atol=ATOL,
                rtol=0,
            )
        window = z[:, :, :4]
        torch.testing.assert_close(ours.dec(window, ge), up.dec(window, g=ge_up), atol=ATOL, rtol=0)


def test_v2_discriminator_maps_every_tensor_and_forward_matches(
    v2_base: SimpleNamespace,
) -> None:
    ours = load_s2_discriminator(v2_base.base / V2_S2D_FILE).eval()
    mapped = {s2_key_to_upstream(k): v for k, v in ours.state_dict().items()}
    assert len(mapped) == 111
    _assert_same_tensors(mapped, v2_base.discriminator.state_dict())
    torch.manual_seed(0)
    real, fake = torch.randn(2, 1, 1024), torch.randn(2, 1, 1024)
    with torch.no_grad():
        scores_real, scores_fake, features_real, _ = v2_base.discriminator(real, fake)
        ours_scores, ours_features = ours(real)
    for a, b in zip(ours_scores, scores_real, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    for maps, maps_up in zip(ours_features, features_real, strict=True):
        for a, b in zip(maps, maps_up, strict=True):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# --- loud failures --------------------------------------------------------------------------


def test_a_mismatched_base_fails_naming_the_tensors(tmp_path: Path) -> None:
    generator = SoVITSGenerator(sovits_size("tiny"))
    path = write_s2_pretrained(generator, tmp_path / "s2Gbad.pth")
    state = torch.load(path, weights_only=True)
    state["weight"].pop("enc_p.encoder_text.attn_layers.0.emb_rel_v")
    state["weight"]["enc_p.encoder_text.attn_layers.0.emb_rel_w"] = torch.zeros(1, 9, 16)
    state["weight"]["flow.flows.2.post.bias"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(UpstreamFormatError) as caught:
        load_s2_generator(path, sovits_size("tiny"))
    message = str(caught.value)
    assert "1 tensors with no place: enc_p.encoder_text.attn_layers.0.emb_rel_w" in message
    assert "1 parameters left at init: enc_p.encoder_text.attn_layers.0.emb_rel_v" in message
    assert "flow.flows.2.post.bias (3,) vs (16,)" in message


def test_a_gpt_tensor_without_a_place_fails(tmp_path: Path) -> None:
    model = Text2Semantic(t2s_size("tiny"))
    path = write_gpt_ckpt(model, tmp_path / "gpt.ckpt")
    payload = torch.load(path, weights_only=True)
    payload["weight"]["model.h.final_norm.weight"] = torch.ones(64)
    torch.save(payload, path)
    with pytest.raises(UpstreamFormatError, match=r"no place: model\.h\.final_norm\.weight"):
        load_s1_checkpoint(path)


def test_an_s2g_without_its_discriminator_is_refused(tmp_path: Path) -> None:
    generator = SoVITSGenerator(sovits_size("tiny"))
    path = write_s2_pretrained(generator, tmp_path / "s2G1.pth")
    with pytest.raises(UpstreamFormatError, match="s2D1.pth is missing"):
        load_pretrained_s2(generator, torch.nn.Module(), path)


class _Shell:
    """Runs a command when unpickled; a safe reader must refuse it."""

    def __reduce__(self) -> tuple:
        return (print, ("unpickled code ran",))


def test_original_hparams_configs_load_safely_and_code_is_refused(tmp_path: Path) -> None:
    # The original pickles its config as utils.HParams; reproduce that stream without it.
    fake_utils = types.ModuleType("utils")

    class HParams:
        def __init__(self, **kwargs: Any) -> None:
            for key, value in kwargs.items():
                setattr(self, key, HParams(**value) if isinstance(value, dict) else value)

    HParams.__module__, HParams.__qualname__ = "utils", "HParams"
    fake_utils.HParams = HParams
    saved = sys.modules.get("utils")
    sys.modules["utils"] = fake_utils
    try:
        payload = {
            "weight": {"enc_p.proj.bias": torch.ones(3, dtype=torch.float16)},
            "config": HParams(model={"version": "v2Pro", "gin_channels": 1024}, name="x"),
            "info": "8epoch_96iteration",
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
    finally:
        if saved is None:
            del sys.modules["utils"]
        else:
            sys.modules["utils"] = saved
    path = tmp_path / "pro.pth"
    path.write_bytes(b"05" + buffer.getvalue()[2:])  # the original's v2Pro header
    raw = read_upstream_file(path)
    assert raw["config"] == {"model": {"version": "v2Pro", "gin_channels": 1024}, "name": "x"}
    assert raw["info"] == "8epoch_96iteration"

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": {}, "config": _Shell()}))
    with pytest.raises(UpstreamFormatError, match="neither a torch file"):
        read_upstream_file(evil)
    torch.save({"weight": {}, "config": _Shell()}, evil)
    with pytest.raises(UpstreamFormatError, match="not loadable as plain tensors"):
        read_upstream_file(evil)


# --- greenwindow -> original ---------------------------------------------------------------


def _randomise_adapters(model: torch.nn.Module) -> None:
    # Adapters start with B = 0; a trained one is non-zero, so merging must matter.
    torch.manual_seed(7)
    for name, param in model.named_parameters():
        if name.endswith("lora.b"):
            param.data.normal_(0, 0.05)


def test_trained_gpt_export_loads_strictly_into_the_original(
    tmp_path: Path, ref: SimpleNamespace
) -> None:
    torch.manual_seed(3)
    model = Text2Semantic(t2s_size("tiny")).eval()
    apply_lora(model, 4, 4.0, S1_ATTENTION + S1_FFN)
    _randomise_adapters(model)
    torch.manual_seed(0)
    phonemes, semantic = torch.randint(0, 732, (2, 6)), torch.randint(0, 1024, (2, 5))
    bert = torch.randn(2, 1024, 6)
    lens_x, lens_y = torch.tensor([6, 6]), torch.tensor([5, 5])
    with torch.no_grad():
        adapted_logits = model(phonemes, lens_x, bert, semantic)

    # Merging is exact: the merged fp32 weights in the plain model give the same logits.
    merged = Text2Semantic(t2s_size("tiny")).eval()
    merged.load_state_dict(merged_state_dict(model))
    with torch.no_grad():
        torch.testing.assert_close(merged(phonemes, lens_x, bert, semantic), adapted_logits)

    path = write_gpt_ckpt(model, tmp_path / "gpt_merged.ckpt")
    # What the original's inference does with a GPT file (inference_webui.change_gpt_weights).
    dict_s1 = torch.load(path, map_location="cpu", weights_only=False)
    upstream = ref.t2s.Text2SemanticLightningModule(dict_s1["config"], "****", is_train=False)
    result = upstream.load_state_dict(dict_s1["weight"])
    assert result.missing_keys == [] and result.unexpected_keys == []
    upstream.eval()
    captured: list[torch.Tensor] = []
    upstream.model.ar_predict_layer.register_forward_hook(lambda _m, _i, o: captured.append(o))
    reloaded = load_s1_checkpoint(path).eval()
    with torch.no_grad():
        upstream.model.forward_old(phonemes, lens_x, semantic, lens_y, bert)
        ours = reloaded(phonemes, lens_x, bert, semantic)
    torch.testing.assert_close(ours, captured[0], atol=ATOL, rtol=0)
    # fp16 storage is the only difference from the trained model.
    torch.testing.assert_close(ours, adapted_logits, atol=2e-2, rtol=0)


def test_trained_sovits_export_loads_strictly_and_decodes_in_the_original(
    tmp_path: Path, ref: SimpleNamespace
) -> None:
    torch.manual_seed(4)
    generator = SoVITSGenerator(SMALL_S2).eval()
    apply_lora(generator, 4, 4.0, S2_ATTENTION + S2_FFN)
    _randomise_adapters(generator)
    path = write_sovits_pth(generator, tmp_path / "sovits_merged.pth", "8epoch_96iteration")

    assert path.read_bytes()[:2] == b"01"
    assert ref.process_ckpt.get_sovits_version_from_path_fast(str(path)) == ["v2", "v2", False]
    # What the original's inference does with a SoVITS file (inference_webui.change_sovits_weights).
    dict_s2 = ref.process_ckpt.load_sovits_new(str(path))
    hps = dict_s2["config"]
    upstream = ref.models.SynthesizerTrn(
        hps["data"]["filter_length"] // 2 + 1,
        hps["train"]["segment_size"] // hps["data"]["hop_length"],
        n_speakers=hps["data"]["n_speakers"],
        **hps["model"],
    )
    del upstream.enc_q  # inference drops the posterior encoder, as the export does
    result = upstream.load_state_dict(dict_s2["weight"], strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    upstream.eval()

    torch.manual_seed(0)
    codes = torch.randint(0, 1024, (1, 1, 6))
    text = torch.randint(0, 732, (1, 8))
    refer = torch.randn(1, 1025, 20).abs()
    with torch.no_grad():
        audio = upstream.decode(codes, text, refer, noise_scale=0.0)
    assert audio.shape == (1, 1, 12 * 640)
    assert torch.isfinite(audio).all()

    # The export holds the merged weights: our reload gives the original's prior statistics.
    ours = load_s2_generator(path, allow_missing_posterior=True).eval()
    with torch.no_grad():
        mask = torch.ones(1, 1, 20)
        ge = ours.ref_enc(refer[:, :704], mask)
        content = ours.quantizer.decode(codes[0]).repeat_interleave(2, dim=-1)
        frame_mask, text_mask = torch.ones(1, 1, 12), torch.ones(1, 1, 8)
        m_p, _ = ours.enc_p(content, frame_mask, text, text_mask, ge)
        _, m_up, *_ = upstream.enc_p(content, torch.tensor([12]), text, torch.tensor([8]), ge)
    torch.testing.assert_close(m_p, m_up, atol=ATOL, rtol=0)


def test_export_without_adapters_writes_the_base_back(
    tmp_path: Path, v2_base: SimpleNamespace
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", "--models", str(v2_base.models), "--base", "v2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    gpt = read_upstream_file(out / "gpt_merged.ckpt")
    assert gpt["config"] == v2_base.s1_config
    assert list(gpt["weight"]) == list(v2_base.s1_weight)
    assert all(torch.equal(gpt["weight"][k], v) for k, v in v2_base.s1_weight.items())

    sovits_path = out / "sovits_merged.pth"
    assert sovits_path.read_bytes()[:2] == b"01"
    weight = read_upstream_file(sovits_path)["weight"]
    base = {k: v for k, v in v2_base.generator.state_dict().items() if not k.startswith("enc_q.")}
    assert list(weight) == list(base)
    assert all(weight[k].dtype == torch.float16 for k in weight)
    assert all(torch.equal(weight[k], v.half()) for k, v in base.items())


def test_export_rejects_an_unknown_base(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", "--models", str(tmp_path), "--base", "v9", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown base 'v9'" in result.output


def test_an_adapter_file_merges_into_its_base(tmp_path: Path) -> None:
    from worker.training.config import FinetuneConfig
    from worker.training.export import _apply_adapter, adapter_metadata
    from worker.training.lora import export_adapter
    from worker.training.stages import build_stage

    config = FinetuneConfig(stage="s1", model_size="tiny", lora_rank=4, lora_ffn=True)
    torch.manual_seed(5)
    stage = build_stage("s1", config, torch.device("cpu"))
    trained = stage.models["t2s"].eval()
    base_state = {k: v.clone() for k, v in merged_state_dict(trained).items()}
    _randomise_adapters(trained)
    meta = {"stage": "s1", "model_size": "tiny", "lora_rank": 4, "lora_alpha": 32.0}
    path = export_adapter(trained, tmp_path / "s1_lora.safetensors", {**meta, "lora_ffn": True})

    base = Text2Semantic(t2s_size("tiny")).eval()
    base.load_state_dict(base_state)
    torch.manual_seed(0)
    inputs = (
        torch.randint(0, 732, (1, 5)),
        torch.tensor([5]),
        torch.randn(1, 1024, 5),
        torch.randint(0, 1024, (1, 4)),
    )
    with torch.no_grad():
        expected = trained(*inputs)
        assert (base(*inputs) - expected).abs().max() > 0.1  # the adapter matters
        _apply_adapter(base, "s1", path, adapter_metadata(path))
        # Adapter files store fp16, the only difference from the trained model.
        torch.testing.assert_close(base(*inputs), expected, atol=5e-3, rtol=0)


def test_export_refuses_an_adapter_of_another_size(tmp_path: Path) -> None:
    from worker.training.lora import export_adapter

    model = Text2Semantic(t2s_size("tiny"))
    apply_lora(model, 2, 2.0, S1_ATTENTION)
    meta = {"stage": "s1", "model_size": "tiny", "lora_rank": 2, "lora_alpha": 2.0}
    adapter = export_adapter(model, tmp_path / "s1_lora.safetensors", meta)
    result = CliRunner().invoke(
        app,
        ["export", "--models", str(tmp_path), "--adapters", str(adapter), "--out", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "trained on size 'tiny', not 'v2'" in result.output


def test_a_missing_reference_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from support import gsv_reference

    monkeypatch.setattr(gsv_reference, "_cache", None)
    monkeypatch.setattr(gsv_reference, "CODE", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        gsv_reference.load_reference()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        gsv_reference.load_reference()
