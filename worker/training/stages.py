"""The two training stages: how each builds its models and optimizers and computes its losses."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.training.audio import linear_spectrogram, log_mel
from worker.training.bases import BaseFiles, load_base_weights
from worker.training.batches import TrainingItem, collate_s1, collate_s2
from worker.training.config import FinetuneConfig
from worker.training.lora import apply_lora, load_adapter
from worker.training.losses import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    kl_loss,
)
from worker.training.models.layers import RelativeEncoder, WaveNet
from worker.training.models.sizes import sovits_size, t2s_size
from worker.training.models.sovits import SoVITSGenerator, build_discriminator
from worker.training.models.t2s import Text2Semantic, t2s_loss, t2s_targets

S1_ATTENTION = ("in_proj", "out_proj")
S1_FFN = ("linear1", "linear2")
S2_ATTENTION = ("conv_q", "conv_k", "conv_v", "conv_o", "w_qs", "w_ks", "w_vs", "slf_attn.fc")
# Only the encoders' FFNs (`ffn_layers.N`) name their convolutions conv_1 / conv_2.
S2_FFN = ("conv_1", "conv_2")
# Like GPT-SoVITS v3 LoRA, the small reference (style) encoder trains fully by default.
S2_DEFAULT_TRAINABLE = ("ref_enc",)
# The content path defines what semantic codes mean, so it never trains.
S2_FROZEN = ("ssl_proj",)
# Weights of the original's text-side modules train at a lower rate to protect articulation.
S2_TEXT_MODULES = ("enc_p.text_embedding", "enc_p.encoder_text", "enc_p.mrte")
S2_TEXT_LR_SCALE = 0.4
S2_LR_DECAY_PER_EPOCH = 0.999875
MEL_WEIGHT = 45.0
FEATURE_MATCHING_WEIGHT = 2.0


@dataclass(frozen=True)
class StartingPoint:
    """Where a stage's weights start: a base's files (None: seeded random init) and, for a
    continuation (`base: job:<id>`), the earlier job's exported adapter per stage."""

    base: BaseFiles | None = None
    adapters: dict[str, Path] = field(default_factory=dict)
    base_name: str = "none"


@dataclass
class StepOutput:
    """Losses to minimise (keyed by the model each belongs to) and detached metrics."""

    optimised: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Stage(ABC):
    """A trainable stage: named models, their optimizers, a collate and a loss."""

    name: str
    models: dict[str, nn.Module]
    export_key: str
    adapted: list[str]

    @abstractmethod
    def collate(self, items: Sequence[TrainingItem]) -> dict[str, torch.Tensor]:
        """Turn prepared items into one CPU batch."""

    @abstractmethod
    def forward(self, batch: dict[str, torch.Tensor], models: dict[str, nn.Module]) -> StepOutput:
        """Losses of one micro-batch; models may be DDP-wrapped versions of self.models."""

    @abstractmethod
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per trained model."""

    def build_schedulers(
        self, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """Per-epoch LR schedules (constant unless a stage says otherwise)."""
        return {
            k: torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for k, o in optimizers.items()
        }

    def trainable_parameters(self, key: str) -> list[nn.Parameter]:
        """Parameters of one model that receive gradients."""
        return [p for p in self.models[key].parameters() if p.requires_grad]


def _trainable_list(config: FinetuneConfig, default: Sequence[str]) -> list[str]:
    if config.lora_trainable_modules is not None:
        return list(config.lora_trainable_modules)
    return list(default)


class T2SStage(Stage):
    """Stage 1: the text-to-semantic GPT, summed cross-entropy over codes and EOS."""

    name = "s1"
    export_key = "t2s"

    def __init__(
        self, config: FinetuneConfig, device: torch.device, start: StartingPoint | None = None
    ) -> None:
        self.config = config
        self.size = t2s_size(config.model_size)
        start = start or StartingPoint()
        model = Text2Semantic(self.size)
        if start.base is not None:
            load_base_weights("s1", start.base, model)
        targets = S1_ATTENTION + (S1_FFN if config.lora_ffn else ())
        self.adapted = apply_lora(
            model, config.lora_rank, config.lora_alpha, targets, _trainable_list(config, ())
        )
        if "s1" in start.adapters:
            load_adapter(model, start.adapters["s1"])
        model.gradient_checkpointing = config.grad_checkpointing
        self.models = {"t2s": model.to(device)}

    def collate(self, items: Sequence[TrainingItem]) -> dict[str, torch.Tensor]:
        """Left-padded text, right-padded codes."""
        return collate_s1(items, self.size.eos)

    def forward(self, batch: dict[str, torch.Tensor], models: dict[str, nn.Module]) -> StepOutput:
        """Summed CE per item, averaged over the micro-batch."""
        logits = models["t2s"](
            batch["phonemes"], batch["text_lens"], batch["bert"], batch["semantic"]
        )
        targets = t2s_targets(batch["semantic"], batch["semantic_lens"], self.size.eos)
        with torch.autocast(logits.device.type, enabled=False):
            losses = t2s_loss(logits, targets, self.size.eos)
        metrics = {k: v for k, v in losses.items() if k != "loss"}
        return StepOutput({"t2s": losses["loss"]}, metrics)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """AdamW at the constant stage-1 rate (the original locks its schedule at 0.002).

        The original uses ScaledAdam, whose steps are relative to each tensor's RMS; that
        would barely move zero-initialised LoRA B matrices, so adapters use AdamW. For full
        fine-tuning of a pretrained base, a rate near 1e-4 suits AdamW better than 0.002.
        """
        params = self.trainable_parameters("t2s")
        opt = torch.optim.AdamW(params, lr=self.config.s1_learning_rate, betas=(0.9, 0.95))
        return {"t2s": opt}


class SoVITSStage(Stage):
    """Stage 2: VITS-style GAN with LSGAN, feature matching, mel L1 and KL losses."""

    name = "s2"
    export_key = "generator"

    def __init__(
        self,
        config: FinetuneConfig,
        device: torch.device,
        codebook: np.ndarray | None = None,
        start: StartingPoint | None = None,
    ) -> None:
        self.config = config
        self.size = sovits_size(config.model_size)
        start = start or StartingPoint()
        generator = SoVITSGenerator(self.size)
        discriminator = build_discriminator(self.size)
        if start.base is not None:
            # The base's own ssl_proj and quantizer made the semantic tokens (see
            # data/upstream_features.py), so they stay as loaded.
            load_base_weights("s2", start.base, generator, discriminator)
        elif codebook is not None:
            # No pretrained content path: pool frame pairs so codes from k-means on pooled
            # SSL frames keep their meaning.
            generator.init_ssl_proj_as_pooling()
            generator.quantizer.set_codebook(codebook)
        targets = S2_ATTENTION + (S2_FFN if config.lora_ffn else ())
        self.adapted = apply_lora(
            generator,
            config.lora_rank,
            config.lora_alpha,
            targets,
            _trainable_list(config, S2_DEFAULT_TRAINABLE),
            S2_FROZEN,
        )
        if "s2" in start.adapters:
            load_adapter(generator, start.adapters["s2"])
        for module in generator.modules():
            if isinstance(module, RelativeEncoder | WaveNet):
                module.gradient_checkpointing = config.grad_checkpointing
        self.models = {"generator": generator.to(device), "discriminator": discriminator.to(device)}

    def collate(self, items: Sequence[TrainingItem]) -> dict[str, torch.Tensor]:
        """SSL frames and waveforms on a shared 50 Hz grid."""
        return collate_s2(items, self.size.audio.hop)

    def forward(self, batch: dict[str, torch.Tensor], models: dict[str, nn.Module]) -> StepOutput:
        """Discriminator and generator losses of one micro-batch (one backward serves both)."""
        audio_size = self.size.audio
        hop = audio_size.hop
        spec = linear_spectrogram(batch["wav"], audio_size)
        out = models["generator"](
            batch["ssl"], spec, batch["frame_lens"], batch["phonemes"], batch["text_lens"]
        )
        samples = out.segment_frames * hop
        index = out.slice_starts[:, None] * hop + torch.arange(samples, device=spec.device)
        real = batch["wav"].gather(1, index).unsqueeze(1)
        fake = out.audio

        # The discriminator sees real and detached generated audio in one pass.
        scores, features = models["discriminator"](torch.cat([real, fake.detach().to(real.dtype)]))
        n = real.shape[0]
        real_features = [[f[:n].detach() for f in maps] for maps in features]
        with torch.autocast(spec.device.type, enabled=False):
            loss_d = discriminator_loss([s[:n] for s in scores], [s[n:] for s in scores])

        # The generator's adversarial pass must not leave gradients on the discriminator.
        raw_d = self.models["discriminator"]
        raw_d.requires_grad_(False)
        try:
            fake_scores, fake_features = raw_d(fake)
        finally:
            raw_d.requires_grad_(True)

        frame_index = out.slice_starts[:, None] + torch.arange(
            out.segment_frames, device=spec.device
        )
        spec_window = spec.gather(2, frame_index[:, None, :].expand(-1, spec.shape[1], -1))
        with torch.autocast(spec.device.type, enabled=False):
            mel_real = log_mel(spec_window, audio_size)
            mel_fake = log_mel(linear_spectrogram(fake.squeeze(1).float(), audio_size), audio_size)
            mel_l1 = F.l1_loss(mel_fake, mel_real)
            kl = kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.mask)
            adversarial = generator_adversarial_loss(fake_scores)
            matching = feature_matching_loss(real_features, fake_features)
            loss_g = adversarial + FEATURE_MATCHING_WEIGHT * matching + MEL_WEIGHT * mel_l1 + kl
        metrics = {
            "loss_mel_l1": mel_l1.detach(),
            "loss_kl": kl.detach(),
            "loss_fm": matching.detach(),
            "loss_adv": adversarial.detach(),
        }
        return StepOutput({"generator": loss_g, "discriminator": loss_d}, metrics)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """AdamW for G (text modules at a lower rate) and D, betas (0.8, 0.99)."""
        lr = self.config.s2_learning_rate
        text: list[torch.nn.Parameter] = []
        other: list[torch.nn.Parameter] = []
        for name, param in self.models["generator"].named_parameters():
            if param.requires_grad:
                slow = any(name.startswith(prefix + ".") for prefix in S2_TEXT_MODULES)
                (text if slow else other).append(param)
        groups = [{"params": other, "lr": lr}]
        if text:
            groups.append({"params": text, "lr": lr * S2_TEXT_LR_SCALE})
        betas, eps = (0.8, 0.99), 1e-9
        return {
            "generator": torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps),
            "discriminator": torch.optim.AdamW(
                self.trainable_parameters("discriminator"), lr=lr, betas=betas, eps=eps
            ),
        }

    def build_schedulers(
        self, optimizers: dict[str, torch.optim.Optimizer]
    ) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """Exponential decay per epoch, as the original."""
        return {
            k: torch.optim.lr_scheduler.ExponentialLR(o, S2_LR_DECAY_PER_EPOCH)
            for k, o in optimizers.items()
        }


def build_stage(
    name: str,
    config: FinetuneConfig,
    device: torch.device,
    codebook: np.ndarray | None = None,
    start: StartingPoint | None = None,
) -> Stage:
    """Stage by name ("s1" or "s2")."""
    if name == "s1":
        return T2SStage(config, device, start)
    if name == "s2":
        return SoVITSStage(config, device, codebook, start)
    raise ValueError(f"unknown stage {name!r}")
