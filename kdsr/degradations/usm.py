"""Unsharp masking of the GT as BasicSR's USMSharp (ecosystem.md §1.6), from kornia's Gaussian blur."""

from __future__ import annotations

import torch
from kornia.filters import gaussian_blur2d

__all__ = ["usm_sharpen", "cv2_gaussian_sigma"]


def cv2_gaussian_sigma(size: int) -> float:
    """The σ OpenCV's getGaussianKernel derives for σ = 0: 0.3·((size − 1)/2 − 1) + 0.8 (8.0 for 51)."""
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


def usm_sharpen(
    img: torch.Tensor, weight: float = 0.5, threshold: float = 10.0, radius: int = 50
) -> torch.Tensor:
    """Sharpen where the high-pass residual exceeds ``threshold`` (8-bit units), blended by a soft mask.

    blur = G ⊛ img (reflect border); residual = img − blur; mask = |residual|·255 > threshold;
    soft = G ⊛ mask; out = soft·clip(img + weight·residual, 0, 1) + (1 − soft)·img, with G the
    ``radius``-sized Gaussian made odd (radius 50 → 51×51, σ 8). kornia's ``unsharp_mask`` has no weight
    or threshold.

    Args: img float (B, C, H, W) in [0, 1], H and W > radius + 1. Returns the same shape and dtype.
    """
    if not isinstance(img, torch.Tensor) or not img.is_floating_point() or img.dim() != 4:
        raise TypeError("usm_sharpen: img must be a float (B, C, H, W) tensor in [0, 1]")
    size = radius + 1 if radius % 2 == 0 else radius  # BasicSR: an even radius 50 becomes a 51 kernel
    if min(img.shape[-2:]) <= size // 2:
        raise ValueError(f"usm_sharpen: image {tuple(img.shape[-2:])} too small for a {size}x{size} blur")
    sigma = cv2_gaussian_sigma(size)

    def g(x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")

    residual = img - g(img)
    mask = (residual.abs() * 255 > threshold).to(img.dtype)
    soft = g(mask)
    sharp = torch.clamp(img + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * img
