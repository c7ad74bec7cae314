"""SoVITS generator blocks: relative-position encoders, MRTE, WaveNet, style encoder.

Module and parameter names follow the original GPT-SoVITS v2 layout (`attn_layers.N`,
`norm_layers_1.N.gamma`, `ffn_layers.N`, `spectral.0.fc`, ...), so its checkpoints load with
`strict=True` and our state dicts load into its classes without renaming anything except the
weight-norm storage (see `worker.training.upstream`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

# Masked scores get this value rather than -inf, as in the original: a fully padded query row
# then attends uniformly instead of producing NaN, and real rows are unaffected.
MASKED_SCORE = -1e4


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Float mask [B, 1, T] with ones on the first `lengths` frames."""
    frames = torch.arange(max_len, device=lengths.device)
    return (frames[None, :] < lengths[:, None]).unsqueeze(1).float()


def pair_mask(query_mask: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Attention mask [B, 1, Tq, Tk] from frame masks [B, 1, Tq] and [B, 1, Tk]."""
    return query_mask.unsqueeze(-1) * key_mask.unsqueeze(2)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] (parameters named gamma / beta)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every frame's channel vector."""
        normed = F.layer_norm(x.transpose(1, -1), self.gamma.shape, self.gamma, self.beta, self.eps)
        return normed.transpose(1, -1)


class ConvAttention(nn.Module):
    """Multi-head attention on [B, C, T] with 1x1-conv projections and an optional relative window.

    With a window w, every query also scores against a learnt table of 2w+1 relative-key
    vectors and mixes in a table of relative-value vectors (VITS style, shared by heads);
    offsets beyond the window contribute nothing. The probabilities are needed for the value
    term, so the attention is computed explicitly rather than through SDPA.
    """

    def __init__(
        self, channels: int, out_channels: int, n_heads: int, dropout: float, window: int | None
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(dropout)
        if window is not None:
            std = self.head_dim**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        return x.view(batch, self.n_heads, self.head_dim, length).transpose(2, 3)

    def _offsets(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Key index i + r for every query i and offset r in [-w, w], and whether it exists."""
        assert self.window is not None
        rel = torch.arange(-self.window, self.window + 1, device=device)
        key = torch.arange(length, device=device)[:, None] + rel[None, :]  # [L, 2w+1]
        valid = (key >= 0) & (key < length)
        return key.clamp(0, length - 1), valid

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        """Queries from x [B, C, Tq] attend to memory [B, C, Tk]; attn_mask [B, 1, Tq, Tk]."""
        q = self._heads(self.conv_q(x)) * self.head_dim**-0.5
        k = self._heads(self.conv_k(memory))
        v = self._heads(self.conv_v(memory))
        scores = q @ k.transpose(-2, -1)  # [B, H, Tq, Tk]
        if self.window is not None:
            length = scores.shape[-1]
            key, valid = self._offsets(length, scores.device)
            per_offset = q @ self.emb_rel_k.to(q.dtype).transpose(1, 2)  # [B, H, L, 2w+1]
            index = key.expand(*scores.shape[:2], -1, -1)
            bias = torch.zeros_like(scores).scatter_add(
                -1, index, per_offset * valid.to(per_offset.dtype)
            )
            scores = scores + bias
        scores = scores.masked_fill(attn_mask == 0, MASKED_SCORE)
        probs = self.drop(torch.softmax(scores, dim=-1))
        out = probs @ v
        if self.window is not None:
            index = key.expand(*probs.shape[:2], -1, -1)
            near = probs.gather(-1, index) * valid.to(probs.dtype)  # [B, H, L, 2w+1]
            out = out + near @ self.emb_rel_v.to(probs.dtype)
        batch, _, length, _ = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(batch, -1, length))


class ConvFeedForward(nn.Module):
    """Two masked kernel-k convolutions with ReLU (the VITS FFN)."""

    def __init__(self, channels: int, filter_channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel)
        self.drop = nn.Dropout(dropout)

    def _same(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, ((self.kernel - 1) // 2, self.kernel // 2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """FFN over [B, C, T]."""
        hidden = self.drop(torch.relu(self.conv_1(self._same(x * mask))))
        return self.conv_2(self._same(hidden * mask)) * mask


class RelativeEncoder(nn.Module):
    """Post-norm stack of relative-attention layers and conv FFNs over masked [B, C, T]."""

    def __init__(
        self,
        channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        dropout: float,
        window: int,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.drop = nn.Dropout(dropout)
        self.attn_layers = nn.ModuleList(
            ConvAttention(channels, channels, n_heads, dropout, window) for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            ConvFeedForward(channels, filter_channels, kernel, dropout) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelNorm(channels) for _ in range(n_layers))

    def _layer(
        self, index: int, x: torch.Tensor, mask: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        y = self.drop(self.attn_layers[index](x, x, attn_mask))
        x = self.norm_layers_1[index](x + y)
        y = self.drop(self.ffn_layers[index](x, mask))
        return self.norm_layers_2[index](x + y)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode x [B, C, T] under mask [B, 1, T]."""
        attn_mask = pair_mask(mask, mask)
        x = x * mask
        for index in range(len(self.attn_layers)):
            if self.gradient_checkpointing and self.training:
                x = checkpoint(self._layer, index, x, mask, attn_mask, use_reentrant=False)
            else:
                x = self._layer(index, x, mask, attn_mask)
        return x * mask


class MRTE(nn.Module):
    """Cross-attention of content frames to the phoneme encoding, plus the speaker vector."""

    def __init__(self, channels: int, hidden: int, n_heads: int, gin: int) -> None:
        super().__init__()
        self.cross_attention = ConvAttention(hidden, hidden, n_heads, 0.0, None)
        self.c_pre = nn.Conv1d(channels, hidden, 1)
        self.text_pre = nn.Conv1d(channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, channels, 1)
        # The original adds ge directly (gin == hidden == 512); other sizes need a projection.
        self.ge_proj = nn.Identity() if gin == hidden else nn.Conv1d(gin, hidden, 1)

    def forward(
        self,
        content: torch.Tensor,
        content_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        ge: torch.Tensor,
    ) -> torch.Tensor:
        """Content [B, C, T] enriched with text [B, C, P] and the speaker vector ge [B, gin, 1]."""
        attn_mask = pair_mask(content_mask, text_mask)
        content = self.c_pre(content * content_mask)
        text = self.text_pre(text * text_mask)
        attended = self.cross_attention(content * content_mask, text * text_mask, attn_mask)
        return self.c_post((attended + content + self.ge_proj(ge)) * content_mask)


class WaveNet(nn.Module):
    """Non-causal gated WaveNet with global conditioning (VITS `WN`)."""

    def __init__(self, hidden: int, kernel: int, n_layers: int, gin: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gradient_checkpointing = False
        self.in_layers = nn.ModuleList(
            weight_norm(nn.Conv1d(hidden, 2 * hidden, kernel, padding=kernel // 2))
            for _ in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            weight_norm(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1))
            for i in range(n_layers)
        )
        self.cond_layer = weight_norm(nn.Conv1d(gin, 2 * hidden * n_layers, 1))

    def _layer(
        self, index: int, x: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden
        pre = self.in_layers[index](x) + cond[:, 2 * h * index : 2 * h * (index + 1)]
        acts = torch.tanh(pre[:, :h]) * torch.sigmoid(pre[:, h:])
        res_skip = self.res_skip_layers[index](acts)
        if index < len(self.in_layers) - 1:
            return (x + res_skip[:, :h]) * mask, res_skip[:, h:]
        return x, res_skip

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x [B, hidden, T] conditioned on g [B, gin, 1]."""
        cond = self.cond_layer(g)
        output = torch.zeros_like(x)
        for index in range(len(self.in_layers)):
            if self.gradient_checkpointing and self.training:
                x, skip = checkpoint(self._layer, index, x, mask, cond, use_reentrant=False)
            else:
                x, skip = self._layer(index, x, mask, cond)
            output = output + skip
        return output * mask


class _Linear(nn.Module):
    """A Linear layer kept one level down (`<name>.fc`), the original's storage layout."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped projection."""
        return self.fc(x)


class _Conv(nn.Module):
    """A same-padded Conv1d kept one level down (`<name>.conv`), the original's storage layout."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, padding=(kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped convolution."""
        return self.conv(x)


class GatedConv(nn.Module):
    """Residual GLU convolution of the style encoder."""

    def __init__(self, channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = _Conv(channels, 2 * channels, kernel)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] plus its gated convolution."""
        value, gate = self.conv1(x).split(self.channels, dim=1)
        return x + self.dropout(value * torch.sigmoid(gate))


class StyleAttention(nn.Module):
    """Masked self-attention over frames [B, T, C] with linear projections and a residual.

    Scores are divided by sqrt(channels), not sqrt(head width): that is what the original's
    pretrained reference encoders were trained with.
    """

    def __init__(self, channels: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.attn_drop = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
        """Self-attention plus x; padded [B, T] is True on padding frames (never attended to)."""
        batch, length, channels = x.shape
        shape = (batch, length, self.n_heads, channels // self.n_heads)
        q, k, v = (
            proj(x).view(shape).transpose(1, 2) for proj in (self.w_qs, self.w_ks, self.w_vs)
        )
        scores = (q @ k.transpose(-2, -1)) / channels**0.5
        scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
        out = self.attn_drop(torch.softmax(scores, dim=-1)) @ v
        return x + self.dropout(self.fc(out.transpose(1, 2).reshape(batch, length, channels)))


class StyleEncoder(nn.Module):
    """Global speaker/style vector from the low linear-spectrogram bins (MelStyleEncoder)."""

    def __init__(
        self, in_bins: int, hidden: int, out_dim: int, dropout: float = 0.1, kernel: int = 5
    ) -> None:
        super().__init__()
        self.spectral = nn.Sequential(
            _Linear(in_bins, hidden),
            nn.Mish(),
            nn.Dropout(dropout),
            _Linear(hidden, hidden),
            nn.Mish(),
            nn.Dropout(dropout),
        )
        self.temporal = nn.Sequential(
            GatedConv(hidden, kernel, dropout), GatedConv(hidden, kernel, dropout)
        )
        self.slf_attn = StyleAttention(hidden, 2, dropout)
        self.fc = _Linear(hidden, out_dim)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """spec [B, bins, T], mask [B, 1, T] -> style [B, out_dim, 1] (masked mean over time)."""
        padded = mask[:, 0] == 0  # [B, T]
        frames = self.spectral(spec.transpose(1, 2))
        frames = self.temporal(frames.transpose(1, 2)).transpose(1, 2)
        frames = frames.masked_fill(padded.unsqueeze(-1), 0)
        frames = self.fc(self.slf_attn(frames, padded))
        frames = frames.masked_fill(padded.unsqueeze(-1), 0)
        real = (~padded).sum(dim=1)[:, None, None]
        pooled = (frames.float() / real).sum(dim=1).to(frames.dtype)
        return pooled.unsqueeze(-1)
