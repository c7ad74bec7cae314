"""HiFi-GAN generator (conditioned on the speaker vector) and the period + scale discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LEAK = 0.1


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Dilated residual block (HiFi-GAN ResBlock1): dilated conv then plain conv, per dilation."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, 1, _same_padding(kernel, d), d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, 1, _same_padding(kernel)))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual refinement of [B, C, T]."""
        for dilated, plain in zip(self.convs1, self.convs2, strict=True):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LEAK)), LEAK))
        return x


class Generator(nn.Module):
    """Latent frames [B, inter, T] -> waveform [B, 1, T * prod(upsample_rates)]."""

    def __init__(
        self,
        in_channels: int,
        initial_channels: int,
        rates: tuple[int, ...],
        kernels: tuple[int, ...],
        resblock_kernels: tuple[int, ...],
        resblock_dilations: tuple[int, ...],
        gin: int,
    ) -> None:
        super().__init__()
        self.conv_pre = nn.Conv1d(in_channels, initial_channels, 7, 1, 3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = initial_channels
        for rate, kernel in zip(rates, kernels, strict=True):
            out = channels // 2
            self.ups.append(
                weight_norm(nn.ConvTranspose1d(channels, out, kernel, rate, (kernel - rate) // 2))
            )
            for res_kernel in resblock_kernels:
                self.resblocks.append(ResBlock(out, res_kernel, resblock_dilations))
            channels = out
        self.n_kernels = len(resblock_kernels)
        self.conv_post = nn.Conv1d(channels, 1, 7, 1, 3, bias=False)
        self.cond = nn.Conv1d(gin, initial_channels, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Decode latent frames conditioned on the speaker vector g [B, gin, 1]."""
        x = self.conv_pre(x) + self.cond(g)
        for index, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LEAK))
            blocks = self.resblocks[index * self.n_kernels : (index + 1) * self.n_kernels]
            x = sum(block(x) for block in blocks) / self.n_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class PeriodDiscriminator(nn.Module):
    """Judges the waveform folded into [T / period, period] with (k, 1) 2-D convolutions."""

    def __init__(self, period: int, divisor: int) -> None:
        super().__init__()
        self.period = period
        widths = [1] + [c // divisor for c in (32, 128, 512, 1024)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), (2, 0)))
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        last = widths[-1]
        self.convs.append(weight_norm(nn.Conv2d(last, last, (5, 1), 1, (2, 0))))
        self.conv_post = weight_norm(nn.Conv2d(last, 1, (3, 1), 1, (1, 0)))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score and feature maps of y [B, 1, T]."""
        remainder = y.shape[-1] % self.period
        if remainder:
            y = F.pad(y, (0, self.period - remainder), mode="reflect")
        x = y.view(y.shape[0], 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class ScaleDiscriminator(nn.Module):
    """Judges the raw waveform with strided grouped 1-D convolutions."""

    def __init__(self, divisor: int) -> None:
        super().__init__()
        widths = [c // divisor for c in (16, 64, 256, 1024, 1024, 1024)]
        groups = [max(1, g // divisor) for g in (4, 16, 64, 256)]
        layers = [weight_norm(nn.Conv1d(1, widths[0], 15, 1, 7))]
        for index, group in enumerate(groups):
            layers.append(
                weight_norm(nn.Conv1d(widths[index], widths[index + 1], 41, 4, 20, groups=group))
            )
        layers.append(weight_norm(nn.Conv1d(widths[4], widths[5], 5, 1, 2)))
        self.convs = nn.ModuleList(layers)
        self.conv_post = weight_norm(nn.Conv1d(widths[5], 1, 3, 1, 1))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score and feature maps of y [B, 1, T]."""
        features = []
        x = y
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features


class Discriminator(nn.Module):
    """One scale discriminator plus one period discriminator per period."""

    def __init__(self, periods: tuple[int, ...], divisor: int = 1) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [ScaleDiscriminator(divisor), *(PeriodDiscriminator(p, divisor) for p in periods)]
        )

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Scores and feature maps of every sub-discriminator for waveform y [B, 1, T]."""
        scores, features = [], []
        for disc in self.discriminators:
            score, feats = disc(y)
            scores.append(score)
            features.append(feats)
        return scores, features
