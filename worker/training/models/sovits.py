"""Stage 2: the SoVITS generator (SSL content + text + style -> VITS latent -> waveform)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.training.models.hifigan import Discriminator, Generator
from worker.training.models.layers import (
    MRTE,
    RelativeEncoder,
    StyleEncoder,
    WaveNet,
    length_mask,
)
from worker.training.models.sizes import SoVITSSize


class _EMACodebook(nn.Module):
    """Storage of one codebook in the original's layout.

    `embed` holds the codes. `inited`, `cluster_size` and `embed_avg` are the original's EMA
    state; with the quantizer frozen they are never updated here, only carried so that
    checkpoints round-trip tensor for tensor.
    """

    # Buffers (registered below), declared for the type checker.
    inited: torch.Tensor
    cluster_size: torch.Tensor
    embed: torch.Tensor
    embed_avg: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.randn(size, dim) * 0.1)
        self.register_buffer("embed_avg", self.embed.clone())


class _CodebookLayers(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].add_module("_codebook", _EMACodebook(size, dim))


class FrozenCodebook(nn.Module):
    """Single-codebook vector quantizer kept fixed during fine-tuning (nearest code, fp32).

    Stored as `vq.layers.0._codebook.*`, the original's residual-VQ layout with one layer.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.vq = _CodebookLayers(size, dim)

    @property
    def _store(self) -> _EMACodebook:
        # The original's layout; nn.Module types its submodules as Tensor | Module.
        return cast(_EMACodebook, self.vq.layers[0]._codebook)

    @property
    def codebook(self) -> torch.Tensor:
        """The codes [K, dim]."""
        return self._store.embed

    def set_codebook(self, centroids: np.ndarray | torch.Tensor) -> None:
        """Replace the codes, e.g. with k-means centroids [K, dim] from data preparation."""
        values = torch.as_tensor(np.asarray(centroids), dtype=torch.float32)
        if values.shape[1] != self.codebook.shape[1]:
            raise ValueError(f"codebook width {values.shape[1]} != {self.codebook.shape[1]}")
        store = self._store
        device = store.embed.device
        store.embed = values.to(device)
        store.embed_avg = values.clone().to(device)
        store.cluster_size = torch.zeros(values.shape[0], device=device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize x [B, dim, T] -> (codes [B, T], quantized [B, dim, T])."""
        with torch.autocast(x.device.type, enabled=False):
            return self._nearest(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> quantized [B, dim, T]."""
        return self.codebook.float()[codes].transpose(1, 2)

    def _nearest(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.float().transpose(1, 2)  # [B, T, dim]
        codebook = self.codebook.float()
        distance = (
            flat.pow(2).sum(-1, keepdim=True)
            - 2 * flat @ codebook.T
            + codebook.pow(2).sum(-1)[None, None, :]
        )
        codes = distance.argmin(dim=-1)
        return codes, codebook[codes].transpose(1, 2)


class TextEncoder(nn.Module):
    """Prior encoder: SSL content and phonemes fused by MRTE -> prior mean and log-std."""

    def __init__(self, size: SoVITSSize) -> None:
        super().__init__()
        h = size.hidden
        self.ssl_proj = nn.Conv1d(size.ssl_dim, h, 1)
        self.encoder_ssl = RelativeEncoder(
            h, size.filter_channels, size.n_heads, size.ssl_layers, size.dropout, size.rel_window
        )
        self.encoder_text = RelativeEncoder(
            h, size.filter_channels, size.n_heads, size.text_layers, size.dropout, size.rel_window
        )
        self.text_embedding = nn.Embedding(size.phoneme_vocab, h)
        self.mrte = MRTE(h, size.mrte_hidden, size.mrte_heads, size.gin)
        self.encoder2 = RelativeEncoder(
            h, size.filter_channels, size.n_heads, size.post_layers, size.dropout, size.rel_window
        )
        self.proj = nn.Conv1d(h, 2 * h, 1)

    def forward(
        self,
        content: torch.Tensor,
        content_mask: torch.Tensor,
        phonemes: torch.Tensor,
        text_mask: torch.Tensor,
        ge: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior statistics (m_p, logs_p), each [B, hidden, T]."""
        y = self.ssl_proj(content * content_mask) * content_mask
        y = self.encoder_ssl(y, content_mask)
        text = self.text_embedding(phonemes).transpose(1, 2)
        text = self.encoder_text(text, text_mask)
        y = self.mrte(y, content_mask, text, text_mask, ge)
        y = self.encoder2(y, content_mask)
        m_p, logs_p = (self.proj(y) * content_mask).chunk(2, dim=1)
        return m_p, logs_p


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> posterior latent z (WaveNet, conditioned on the detached style)."""

    def __init__(self, size: SoVITSSize) -> None:
        super().__init__()
        self.pre = nn.Conv1d(size.audio.n_bins, size.hidden, 1)
        self.enc = WaveNet(size.hidden, size.wn_kernel, size.posterior_layers, size.gin)
        self.proj = nn.Conv1d(size.hidden, 2 * size.hidden, 1)

    def forward(
        self, spec: torch.Tensor, mask: torch.Tensor, g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, m_q, logs_q), each [B, hidden, T]."""
        x = self.pre(spec) * mask
        m_q, logs_q = (self.proj(self.enc(x, mask, g)) * mask).chunk(2, dim=1)
        z = (m_q + torch.randn_like(m_q) * torch.exp(logs_q)) * mask
        return z, m_q, logs_q


class MeanCoupling(nn.Module):
    """Mean-only affine coupling: the second half is shifted by a WaveNet of the first half."""

    def __init__(self, channels: int, size: SoVITSSize) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, size.hidden, 1)
        self.enc = WaveNet(size.hidden, size.wn_kernel, size.flow_layers, size.gin)
        self.post = nn.Conv1d(size.hidden, self.half_channels, 1)
        # Zero init makes every coupling start as the identity.
        nn.init.zeros_(self.post.weight)
        assert self.post.bias is not None  # built with a bias
        nn.init.zeros_(self.post.bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False
    ) -> torch.Tensor:
        """Forward (or inverse) transform of x [B, C, T]."""
        x0, x1 = x.split(self.half_channels, dim=1)
        shift = self.post(self.enc(self.pre(x0) * mask, mask, g)) * mask
        x1 = (x1 - shift) * mask if reverse else shift + x1 * mask
        return torch.cat([x0, x1], dim=1)


class Flip(nn.Module):
    """Reverses the channel order (no parameters; keeps the original's module indices)."""

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False
    ) -> torch.Tensor:
        """x with its channels flipped."""
        return torch.flip(x, dims=[1])


class Flow(nn.Module):
    """Coupling layers, each followed by a channel flip (couplings at even indices)."""

    def __init__(self, size: SoVITSSize) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(size.flow_steps):
            self.flows.append(MeanCoupling(size.hidden, size))
            self.flows.append(Flip())

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False
    ) -> torch.Tensor:
        """Posterior latent z -> prior-space z_p, or back with reverse=True."""
        steps = reversed(self.flows) if reverse else self.flows
        for step in steps:
            x = step(x, mask, g, reverse)
        return x


@dataclass
class GeneratorOutput:
    """Everything the stage-2 losses need from one generator pass."""

    audio: torch.Tensor  # [B, 1, segment * hop]
    slice_starts: torch.Tensor  # [B] frame index of each decoded window
    segment_frames: int
    mask: torch.Tensor  # [B, 1, T]
    z_p: torch.Tensor
    m_p: torch.Tensor
    logs_p: torch.Tensor
    logs_q: torch.Tensor


def random_windows(
    x: torch.Tensor, lengths: torch.Tensor, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random window of `frames` frames per item of x [B, C, T] within its length."""
    highest = (lengths - frames).clamp(min=0)
    starts = (torch.rand(x.shape[0], device=x.device) * (highest + 1).float()).long()
    index = starts[:, None] + torch.arange(frames, device=x.device)[None, :]
    gathered = x.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))
    return gathered, starts


class SoVITSGenerator(nn.Module):
    """The stage-2 generator: frozen SSL quantizer, prior/posterior encoders, flow and vocoder."""

    def __init__(self, size: SoVITSSize) -> None:
        super().__init__()
        self.size = size
        # Construction order = the original's, so state dicts list tensors in its order.
        self.enc_p = TextEncoder(size)
        self.dec = Generator(
            size.hidden,
            size.upsample_initial,
            size.upsample_rates,
            size.upsample_kernels,
            size.resblock_kernels,
            size.resblock_dilations,
            size.gin,
        )
        self.enc_q = PosteriorEncoder(size)
        self.flow = Flow(size)
        self.ref_enc = StyleEncoder(size.audio.ref_bins, size.style_hidden, size.gin)
        self.ssl_proj = nn.Conv1d(size.ssl_dim, size.ssl_dim, 2, stride=2)
        self.quantizer = FrozenCodebook(size.codebook_size, size.ssl_dim)
        self.freeze_content_path()

    def freeze_content_path(self) -> None:
        """Keep ssl_proj and the quantizer fixed so semantic codes keep their meaning."""
        for param in self.ssl_proj.parameters():
            param.requires_grad_(False)

    def init_ssl_proj_as_pooling(self) -> None:
        """Make ssl_proj average frame pairs, matching codebooks clustered on 2-frame means."""
        with torch.no_grad():
            eye = torch.eye(self.size.ssl_dim) / 2
            self.ssl_proj.weight.copy_(torch.stack([eye, eye], dim=-1))
            assert self.ssl_proj.bias is not None  # built with a bias
            self.ssl_proj.bias.zero_()

    def extract_codes(self, ssl: torch.Tensor) -> torch.Tensor:
        """Semantic codes [B, T/2] of 50 Hz SSL features [B, ssl_dim, T] (25 Hz tokens)."""
        with torch.no_grad():
            codes, _ = self.quantizer(self.ssl_proj(ssl))
        return codes

    def content(self, ssl: torch.Tensor) -> torch.Tensor:
        """Quantized 25 Hz content upsampled back to 50 Hz, [B, ssl_dim, T] (no gradient)."""
        with torch.no_grad():
            _, quantized = self.quantizer(self.ssl_proj(ssl))
        return F.interpolate(quantized, scale_factor=2.0, mode="nearest")

    def forward(
        self,
        ssl: torch.Tensor,
        spec: torch.Tensor,
        frame_lens: torch.Tensor,
        phonemes: torch.Tensor,
        text_lens: torch.Tensor,
    ) -> GeneratorOutput:
        """Training pass; ssl and spec share 50 Hz frames (an even count)."""
        frames = spec.shape[-1]
        mask = length_mask(frame_lens, frames).to(spec.dtype)
        text_mask = length_mask(text_lens, phonemes.shape[1]).to(spec.dtype)
        ge = self.ref_enc(spec[:, : self.size.audio.ref_bins] * mask, mask)
        content = self.content(ssl)
        m_p, logs_p = self.enc_p(content, mask, phonemes, text_mask, ge)
        z, _, logs_q = self.enc_q(spec, mask, ge.detach())
        z_p = self.flow(z, mask, ge)
        segment = min(self.size.audio.segment_frames, int(frame_lens.min()))
        window, starts = random_windows(z, frame_lens, segment)
        audio = self.dec(window, ge)
        return GeneratorOutput(audio, starts, segment, mask, z_p, m_p, logs_p, logs_q)


def build_discriminator(size: SoVITSSize) -> Discriminator:
    """Discriminator matching a stage-2 size."""
    return Discriminator(size.disc_periods, size.disc_width_divisor)
