"""Stage-2 losses (least-squares GAN, feature matching, KL), always evaluated in fp32."""

from __future__ import annotations

import torch


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: real scores pulled to 1, generated scores to 0, summed over sub-discriminators."""
    total = torch.zeros((), device=real[0].device)
    for r, g in zip(real, fake, strict=True):
        total = total + torch.mean((1 - r.float()) ** 2) + torch.mean(g.float() ** 2)
    return total


def generator_adversarial_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator term: generated scores pulled to 1."""
    total = torch.zeros((), device=fake[0].device)
    for g in fake:
        total = total + torch.mean((1 - g.float()) ** 2)
    return total


def feature_matching_loss(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Sum of mean L1 distances between discriminator feature maps (real side detached)."""
    total = torch.zeros((), device=real[0][0].device)
    for real_maps, fake_maps in zip(real, fake, strict=True):
        for r, g in zip(real_maps, fake_maps, strict=True):
            total = total + torch.mean(torch.abs(r.detach().float() - g.float()))
    return total


def kl_loss(
    z_p: torch.Tensor,
    logs_q: torch.Tensor,
    m_p: torch.Tensor,
    logs_p: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """VITS KL between the flowed posterior sample and the prior, per valid frame."""
    z_p, logs_q, m_p, logs_p = (t.float() for t in (z_p, logs_q, m_p, logs_p))
    kl = logs_p - logs_q - 0.5 + 0.5 * (z_p - m_p) ** 2 * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * mask) / torch.sum(mask)
