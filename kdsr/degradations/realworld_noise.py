"""Gaussian and Poisson noise of the Real-ESRGAN pipeline, per-sample parameters, batched."""

from __future__ import annotations

import torch

__all__ = ["gaussian_noise", "poisson_noise", "to_gray"]


def to_gray(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma 0.299 R + 0.587 G + 0.114 B (as BasicSR's rgb_to_grayscale)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device).reshape(1, 3, 1, 1)
    return (img * w).sum(dim=1, keepdim=True)


def _per_sample(value: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    return value.to(device=img.device, dtype=img.dtype).reshape(-1, 1, 1, 1)


def gaussian_noise(
    img: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The Gaussian noise to add: randn·σ/255 per sample, one channel repeated where ``gray``.

    Args: img float (B, C, H, W); sigma (B,) in 8-bit units; gray (B,) bool. Returns noise of img's shape.
    Both the colour and the gray fields are drawn for every sample (a fixed stream per shape).
    """
    b, c, h, w = img.shape
    dev = generator.device if generator is not None else img.device
    colour = torch.randn((b, c, h, w), generator=generator, device=dev, dtype=img.dtype).to(img.device)
    mono = torch.randn((b, 1, h, w), generator=generator, device=dev, dtype=img.dtype).to(img.device)
    noise = torch.where(_per_sample(gray, img).bool(), mono.expand_as(colour), colour)
    return noise * _per_sample(sigma, img) / 255.0


def _poisson_field(img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson noise as Real-ESRGAN: 8-bit round, 2^ceil(log2(#unique values)) levels per image."""
    rounded = torch.clamp(torch.round(img * 255.0), 0, 255) / 255.0
    # The unique-value count is per image; torch.unique has no batched form, so this is a (short) loop.
    counts = torch.tensor(
        [torch.unique(rounded[i]).numel() for i in range(img.shape[0])], dtype=torch.float64
    )
    levels = torch.pow(2.0, torch.ceil(torch.log2(counts))).to(device=img.device, dtype=img.dtype)
    levels = levels.reshape(-1, 1, 1, 1)
    dev = generator.device if generator is not None else img.device
    rate = (rounded * levels).to(dev)
    return torch.poisson(rate, generator=generator).to(img.device) / levels - rounded


def poisson_noise(
    img: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The Poisson noise to add, times ``scale`` per sample; computed on the luma where ``gray``.

    Args: img float (B, 3, H, W) in [0, 1]; scale (B,); gray (B,) bool. Returns noise of img's shape. Both
    fields are drawn for every sample, so the stream does not depend on ``gray``.
    """
    colour = _poisson_field(img, generator)
    mono = _poisson_field(to_gray(img), generator).expand_as(colour)
    noise = torch.where(_per_sample(gray, img).bool(), mono, colour)
    return noise * _per_sample(scale, img)
