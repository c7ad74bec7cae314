"""SoVITS generator blocks: relative-position encoders, MRTE, WaveNet, style encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Float mask [B, 1, T] with ones on the first `lengths` frames."""
    frames = torch.arange(max_len, device=lengths.device)
    return (frames[None, :] < lengths[:, None]).unsqueeze(1).float()


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every frame's channel vector."""
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ConvAttention(nn.Module):
    """Multi-head attention on [B, C, T] with 1x1-conv projections and an optional relative window.

    The relative-key term (VITS style, window w, shared by heads) is added to the scores as a
    float bias so the attention itself runs in `scaled_dot_product_attention`; the relative-value
    term of VITS is left out because SDPA does not return the probabilities it would need.
    """

    def __init__(
        self, channels: int, out_channels: int, n_heads: int, dropout: float, window: int | None
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.dropout_p = dropout
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        if window is not None:
            self.emb_rel_k = nn.Parameter(
                torch.randn(1, 2 * window + 1, self.head_dim) * self.head_dim**-0.5
            )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        return x.view(batch, self.n_heads, self.head_dim, length).transpose(2, 3)

    def _relative_bias(self, q: torch.Tensor) -> torch.Tensor:
        """Scores [B, H, Lq, Lk] from q against the relative-key table (zero outside the window)."""
        assert self.window is not None
        length = q.shape[2]
        scaled = q * self.head_dim**-0.5
        per_offset = scaled @ self.emb_rel_k.to(q.dtype).transpose(1, 2)  # [B, H, L, 2w+1]
        # Two zero columns stand for every offset beyond the window.
        padded = F.pad(per_offset, (1, 1))
        pos = torch.arange(length, device=q.device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.window - 1, self.window + 1)
        index = (offset + self.window + 1).expand(*q.shape[:2], length, length)
        return padded.gather(-1, index)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Queries from x [B, C, Tq] attend to memory [B, C, Tk]; key_mask [B, 1, Tk] (1 = real)."""
        q = self._heads(self.conv_q(x))
        k = self._heads(self.conv_k(memory))
        v = self._heads(self.conv_v(memory))
        blocked = key_mask[:, :, None, :] == 0  # [B, 1, 1, Tk]
        if self.window is not None:
            bias = self._relative_bias(q).masked_fill(blocked, float("-inf"))
        else:
            bias = torch.zeros(blocked.shape, dtype=q.dtype, device=q.device)
            bias = bias.masked_fill(blocked, float("-inf"))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout_p if self.training else 0.0
        )
        batch, _, length, _ = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(batch, -1, length))


class ConvFeedForward(nn.Module):
    """Two masked kernel-k convolutions with ReLU (the VITS FFN)."""

    def __init__(self, channels: int, filter_channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel)
        self.dropout = nn.Dropout(dropout)

    def _same(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, ((self.kernel - 1) // 2, self.kernel // 2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """FFN over [B, C, T]."""
        hidden = self.dropout(torch.relu(self.conv_1(self._same(x * mask))))
        return self.conv_2(self._same(hidden * mask)) * mask


class EncoderLayer(nn.Module):
    """Post-norm relative-attention layer plus conv FFN."""

    def __init__(
        self, channels: int, filter_channels: int, n_heads: int, dropout: float, window: int
    ) -> None:
        super().__init__()
        self.attn = ConvAttention(channels, channels, n_heads, dropout, window)
        self.norm_1 = ChannelNorm(channels)
        self.ffn = ConvFeedForward(channels, filter_channels, 3, dropout)
        self.norm_2 = ChannelNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One layer over [B, C, T]."""
        x = self.norm_1(x + self.dropout(self.attn(x, x, mask)))
        return self.norm_2(x + self.dropout(self.ffn(x, mask)))


class RelativeEncoder(nn.Module):
    """Stack of relative-attention layers over masked [B, C, T]."""

    def __init__(
        self,
        channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        dropout: float,
        window: int,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.layers = nn.ModuleList(
            EncoderLayer(channels, filter_channels, n_heads, dropout, window)
            for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode x [B, C, T] under mask [B, 1, T]."""
        x = x * mask
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x * mask


class MRTE(nn.Module):
    """Cross-attention of content frames to the phoneme encoding, plus the speaker vector."""

    def __init__(self, channels: int, hidden: int, n_heads: int, gin: int) -> None:
        super().__init__()
        self.c_pre = nn.Conv1d(channels, hidden, 1)
        self.text_pre = nn.Conv1d(channels, hidden, 1)
        self.cross_attention = ConvAttention(hidden, hidden, n_heads, 0.0, None)
        self.c_post = nn.Conv1d(hidden, channels, 1)
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
        content = self.c_pre(content * content_mask)
        text = self.text_pre(text * text_mask)
        attended = self.cross_attention(content * content_mask, text * text_mask, text_mask)
        return self.c_post((attended + content + self.ge_proj(ge)) * content_mask)


class WaveNet(nn.Module):
    """Non-causal gated WaveNet with global conditioning (VITS `WN`)."""

    def __init__(self, hidden: int, kernel: int, n_layers: int, gin: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gradient_checkpointing = False
        self.cond_layer = weight_norm(nn.Conv1d(gin, 2 * hidden * n_layers, 1))
        self.in_layers = nn.ModuleList(
            weight_norm(nn.Conv1d(hidden, 2 * hidden, kernel, padding=kernel // 2))
            for _ in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            weight_norm(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1))
            for i in range(n_layers)
        )

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


class GatedConv(nn.Module):
    """Residual GLU convolution of the style encoder."""

    def __init__(self, channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] plus its gated convolution."""
        return x + self.dropout(F.glu(self.conv(x), dim=1))


class StyleAttention(nn.Module):
    """Masked self-attention over frames [B, T, C] with linear projections."""

    def __init__(self, channels: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Self-attention with a residual; frame_mask [B, T] (True = real)."""
        batch, length, channels = x.shape
        shape = (batch, length, self.n_heads, channels // self.n_heads)
        q, k, v = (
            proj(x).view(shape).transpose(1, 2) for proj in (self.w_qs, self.w_ks, self.w_vs)
        )
        allowed = frame_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return x + self.dropout(self.fc(out.transpose(1, 2).reshape(batch, length, channels)))


class StyleEncoder(nn.Module):
    """Global speaker/style vector from the low linear-spectrogram bins (MelStyleEncoder)."""

    def __init__(self, in_bins: int, hidden: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.spectral = nn.Sequential(
            nn.Linear(in_bins, hidden),
            nn.Mish(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Dropout(dropout),
        )
        self.temporal = nn.Sequential(GatedConv(hidden, 5, dropout), GatedConv(hidden, 5, dropout))
        self.slf_attn = StyleAttention(hidden, 2, dropout)
        self.fc = nn.Linear(hidden, out_dim)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """spec [B, bins, T], mask [B, 1, T] -> style [B, out_dim, 1] (masked mean over time)."""
        frames = self.spectral(spec.transpose(1, 2))
        frames = self.temporal(frames.transpose(1, 2)).transpose(1, 2)
        frame_mask = mask[:, 0] > 0
        frames = self.fc(self.slf_attn(frames, frame_mask))
        weights = mask.transpose(1, 2)
        pooled = (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return pooled.unsqueeze(-1)
