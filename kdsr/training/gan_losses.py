"""Vanilla GAN losses on per-pixel logits (spec §5c): BCE-with-logits, real label 1, fake label 0.

Generator: ``weight · BCE(D(SR), 1)`` (KDSR's weight is 1.0, Real-ESRGAN's 0.1). Discriminator: the real
and the fake terms ``BCE(D(GT), 1)`` and ``BCE(D(SR.detach()), 0)``, each with weight 1, backpropagated
separately (as the reference does), so the D step's gradient is their sum. BCE is the mean over every logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["generator_gan_loss", "discriminator_real_loss", "discriminator_fake_loss"]


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def generator_gan_loss(fake_logits: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """G's adversarial loss: weight · mean BCE(fake_logits, 1); logits of any shape -> 0-dim tensor."""
    return weight * _bce(fake_logits, 1.0)


def discriminator_real_loss(real_logits: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """D's loss on real images: weight · mean BCE(real_logits, 1); returns a 0-dim tensor."""
    return weight * _bce(real_logits, 1.0)


def discriminator_fake_loss(fake_logits: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """D's loss on generated images (pass D(SR.detach())): weight · mean BCE(fake_logits, 0)."""
    return weight * _bce(fake_logits, 0.0)
