"""Scalar summaries of a real-world degradation draw: what a read-out of D (or an aux head) should recover.

targets = realworld_targets(params, deg)   # (B, 5) float64, columns REALWORLD_TARGETS
"""

from __future__ import annotations

import numpy as np
import torch

from .realworld_kernels import mixed_kernels

__all__ = ["REALWORLD_TARGETS", "TARGET_CENTER", "TARGET_HALF_RANGE", "realworld_targets"]

# Columns of realworld_targets, in this order.
REALWORLD_TARGETS = ("jpeg", "noise1", "noise2", "blur1", "blur2")
# Centre and half-range of each column over the published draws: (t - centre) / half is about in [-1, 1].
TARGET_CENTER = np.array([62.5, 0.5, 0.5, 1.6, 0.8])
TARGET_HALF_RANGE = np.array([32.5, 0.5, 0.5, 1.4, 0.8])


def _noise_level(stage, lo_hi_gauss: tuple[float, float], lo_hi_poisson: tuple[float, float]) -> np.ndarray:
    """The stage's noise strength as its position in the drawn range, 0..1: σ for Gaussian, scale for Poisson.

    The two top ends are about equally strong (σ 30/255 = 0.118 against Poisson scale 3 at mid-grey,
    about 0.13), so one scale serves both noise types.
    """
    g = (stage.noise_sigma.numpy() - lo_hi_gauss[0]) / (lo_hi_gauss[1] - lo_hi_gauss[0])
    p = (stage.poisson_scale.numpy() - lo_hi_poisson[0]) / (lo_hi_poisson[1] - lo_hi_poisson[0])
    return np.where(stage.gaussian.numpy(), g, p)


def _blur_width(kernel_params, applied: torch.Tensor) -> np.ndarray:
    """Per-axis RMS width sqrt(Σ k·(x² + y²) / 2) of each drawn 21×21 kernel, in pixels; 0 where no blur."""
    k = mixed_kernels(kernel_params)
    r = torch.arange(21, dtype=k.dtype) - 10
    r2 = r[None, :] ** 2 + r[:, None] ** 2
    width = ((k * r2).sum((-2, -1)) / 2).clamp(min=0).sqrt()
    return torch.where(applied, width, torch.zeros_like(width)).numpy()


def realworld_targets(params, deg) -> np.ndarray:
    """(B, 5) float64 read-out targets of ``REALWORLD_TARGETS`` from RealWorldParams drawn by ``deg``.

    jpeg: final quality (the second stage's), in quality units; noise1/noise2: each stage's noise level on
    0..1 (see _noise_level); blur1/blur2: each stage's kernel width in pixels (0 when stage 2 skips blur).
    """
    cols = [
        params.second.jpeg_quality.numpy(),
        _noise_level(params.first, deg.noise_range, deg.poisson_scale_range),
        _noise_level(params.second, deg.noise_range2, deg.poisson_scale_range2),
        _blur_width(params.first.kernel, params.first.blur),
        _blur_width(params.second.kernel, params.second.blur),
    ]
    return np.stack(cols, axis=1).astype(np.float64)
