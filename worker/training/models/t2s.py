"""Stage 1: the decoder-only text-to-semantic transformer (prefix LM over [phonemes; codes])."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from worker.training.models.sizes import T2SSize


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encodings [..., dim] for integer positions [...]."""
    half = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(half * (-math.log(10_000.0) / dim))
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs
    table = torch.zeros(*positions.shape, dim, device=positions.device)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles)
    return table


class ScaledPositions(nn.Module):
    """Adds alpha * sinusoid(position) with a learnable scalar alpha, then dropout."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [B, L, d] plus the scaled encoding of positions [B, L]."""
        return self.dropout(x + self.alpha * sinusoid(positions, self.dim).to(x.dtype))


class PostNormBlock(nn.Module):
    """Post-LayerNorm transformer block: x = LN(x + SA(x)); x = LN(x + FFN(x))."""

    def __init__(self, size: T2SSize) -> None:
        super().__init__()
        self.n_heads = size.n_heads
        self.dropout_p = size.dropout
        # A packed projection keeps the q/k/v layout of the original checkpoints.
        self.in_proj = nn.Linear(size.d_model, 3 * size.d_model)
        self.out_proj = nn.Linear(size.d_model, size.d_model)
        self.linear1 = nn.Linear(size.d_model, size.ffn_dim)
        self.linear2 = nn.Linear(size.ffn_dim, size.d_model)
        self.norm1 = nn.LayerNorm(size.d_model)
        self.norm2 = nn.LayerNorm(size.d_model)
        self.dropout = nn.Dropout(size.dropout)

    def attention(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention; allowed [B, 1, L, L] is True where a query may see a key."""
        batch, length, dim = x.shape
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        shape = (batch, length, self.n_heads, dim // self.n_heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout_p if self.training else 0.0
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, dim))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """One block over x [B, L, d]."""
        x = self.norm1(x + self.dropout(self.attention(x, allowed)))
        hidden = self.dropout(F.relu(self.linear1(x)))
        return self.norm2(x + self.dropout(self.linear2(hidden)))


def prefix_lm_mask(text_lens: torch.Tensor, n_text: int, n_semantic: int) -> torch.Tensor:
    """Boolean [B, 1, P+S, P+S]: all rows see real (left-padded) text; codes see past codes."""
    device = text_lens.device
    length = n_text + n_semantic
    key = torch.arange(length, device=device)
    first_real = (n_text - text_lens).view(-1, 1, 1)
    sees_text = (key < n_text) & (key >= first_real)  # [B, 1, L] over keys
    query = key.view(-1, 1)
    causal_codes = (key >= n_text) & (query >= n_text) & (key <= query)  # [L, L]
    return (sees_text | causal_codes.unsqueeze(0)).unsqueeze(1)


class Text2Semantic(nn.Module):
    """Predicts 25 Hz semantic codes (then EOS) from phonemes plus per-phoneme BERT features."""

    def __init__(self, size: T2SSize) -> None:
        super().__init__()
        self.size = size
        self.gradient_checkpointing = False
        # Construction order = the original's, so state dicts list tensors in its order.
        self.bert_proj = nn.Linear(size.bert_dim, size.d_model)
        self.text_embedding = nn.Embedding(size.phoneme_vocab, size.d_model)
        self.text_position = ScaledPositions(size.d_model, size.dropout)
        self.audio_embedding = nn.Embedding(size.semantic_codes + 1, size.d_model)
        self.audio_position = ScaledPositions(size.d_model, size.dropout)
        self.layers = nn.ModuleList(PostNormBlock(size) for _ in range(size.n_layers))
        self.head = nn.Linear(size.d_model, size.semantic_codes + 1, bias=False)

    def forward(
        self,
        phonemes: torch.Tensor,
        text_lens: torch.Tensor,
        bert: torch.Tensor,
        semantic: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [B, S+1, codes+1]: the last text position predicts the first code, and so on."""
        n_text, n_semantic = phonemes.shape[1], semantic.shape[1]
        # Left padding: the first real phoneme of every item is at position 0.
        text_pos = torch.arange(n_text, device=phonemes.device) - (n_text - text_lens)[:, None]
        text = self.text_embedding(phonemes) + self.bert_proj(bert.transpose(1, 2))
        text = self.text_position(text, text_pos.clamp(min=0))
        code_pos = torch.arange(n_semantic, device=semantic.device).expand(semantic.shape[0], -1)
        codes = self.audio_position(self.audio_embedding(semantic), code_pos)
        x = torch.cat([text, codes], dim=1)
        allowed = prefix_lm_mask(text_lens, n_text, n_semantic)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, allowed, use_reentrant=False)
            else:
                x = layer(x, allowed)
        return self.head(x[:, n_text - 1 :])


def t2s_targets(semantic: torch.Tensor, semantic_lens: torch.Tensor, eos: int) -> torch.Tensor:
    """Targets [B, S+1]: the codes, then EOS; padded positions are trained to predict EOS too."""
    positions = torch.arange(semantic.shape[1], device=semantic.device)
    codes = semantic.masked_fill(positions[None, :] >= semantic_lens[:, None], eos)
    return F.pad(codes, (0, 1), value=eos)


def t2s_loss(logits: torch.Tensor, targets: torch.Tensor, eos: int) -> dict[str, torch.Tensor]:
    """Per-item summed cross-entropy (longer items weigh more, as in the original) and top-3 acc."""
    logits = logits.float()
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    per_item = per_token.sum(dim=1)
    real = targets != eos
    top3 = logits.topk(3, dim=-1).indices
    hits = (top3 == targets.unsqueeze(-1)).any(dim=-1) & real
    accuracy = hits.sum() / real.sum().clamp(min=1)
    return {
        "loss": per_item.mean(),
        "loss_per_token": per_token.mean().detach(),
        "top3_acc": accuracy.detach(),
    }
