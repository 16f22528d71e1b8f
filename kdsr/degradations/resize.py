"""MATLAB-compatible bicubic ``imresize`` for float image tensors.

Reproduces MATLAB's ``imresize(I, scale, 'bicubic')``: Keys cubic with a = -0.5; when shrinking, the kernel is
stretched by 1/scale (antialiasing) and its taps renormalised to sum 1; out-of-range taps are mirrored with
*symmetric* (edge-repeating) padding. The reference KDSR code clamps (replicates) border indices instead
(spec §9.12); we follow MATLAB, which only changes the outermost ~2·scale pixels.

The resize is separable: rows first, then columns, each a matmul with a (out, in) resize matrix (or, for very
large images, a weighted sum of the ~4/scale gathered taps), so it runs batched on CPU and CUDA, with no loop
over images, and is differentiable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["cubic", "imresize", "imresize_weights", "output_size"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's), evaluated elementwise in float64."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's output length ceil(in_len · scale), ignoring float round-off (255 · (1/3) -> 85, not 86)."""
    exact = in_len * scale
    nearest = round(exact)
    return int(nearest) if abs(exact - nearest) < 1e-6 else int(math.ceil(exact))


@functools.lru_cache(maxsize=256)
def imresize_weights(
    in_len: int, out_len: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices and weights of a 1-D MATLAB bicubic resize.

    Output sample i (0-based) is ``sum_p weights[i, p] * input[indices[i, p]]``.

    Args:
        in_len, out_len: input and output lengths (>= 1).
        scale: the scale factor MATLAB uses for the kernel (out_len / in_len when a size was asked for).
        antialias: stretch the kernel by 1/scale when shrinking (MATLAB's default for bicubic).

    Returns:
        (indices, weights): int64 and float64 arrays of shape (out_len, taps), indices 0-based and already
        mirrored into [0, in_len) with symmetric padding, each weight row summing to 1. Taps whose weight is
        zero for every output sample are dropped. Cached; treat the arrays as read-only.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"imresize: lengths must be >= 1, got in_len={in_len}, out_len={out_len}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"imresize: scale must be a positive finite number, got {scale!r}")
    shrink = antialias and scale < 1
    width = 4.0 / scale if shrink else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)  # MATLAB's 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # their positions in 1-based input coordinates
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if shrink else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: ... 2 1 | 1 2 ... n | n n-1 ..., period 2n.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    used = np.any(weights != 0, axis=0)
    indices = np.ascontiguousarray(indices[:, used])
    weights = np.ascontiguousarray(weights[:, used])
    indices.setflags(write=False)
    weights.setflags(write=False)
    return indices, weights


def _pair(value, name: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2:
        return tuple(value)
    raise TypeError(f"imresize: {name} must be a number or a pair (h, w), got {value!r}")


# Resize matrices up to this many entries are applied as one dense matmul (BLAS: much faster than gathers);
# larger ones (e.g. enlarging a 2000-pixel side ×4) gather their few taps instead.
_DENSE_MAX_ENTRIES = 1 << 22


@functools.lru_cache(maxsize=64)
def _device_weights(
    in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dense (out, in) matrix, None) or (indices, weights) on ``device``, cached across calls."""
    idx_np, w_np = imresize_weights(in_len, out_len, scale, antialias)
    if in_len * out_len <= _DENSE_MAX_ENTRIES:
        matrix = np.zeros((out_len, in_len), dtype=np.float64)
        np.add.at(matrix, (np.arange(out_len)[:, None], idx_np), w_np)  # mirrored taps may repeat: accumulate
        return torch.tensor(matrix, device=device, dtype=dtype), None
    return torch.tensor(idx_np, device=device), torch.tensor(w_np, device=device, dtype=dtype)


def _resize_rows(img: torch.Tensor, in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """Resize dim -2 of (..., in_len, W) to (..., out_len, W)."""
    if out_len == in_len and scale == 1.0:
        return img  # the cubic interpolates: identity
    first, second = _device_weights(in_len, out_len, float(scale), antialias, img.device, img.dtype)
    if second is None:
        return torch.matmul(first, img)
    out = None
    for p in range(first.shape[1]):  # a handful of taps, each a row gather over the whole batch
        term = img.index_select(-2, first[:, p]) * second[:, p].reshape(-1, 1)
        out = term if out is None else out.add_(term)
    return out


def imresize(
    img: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """MATLAB-compatible bicubic resize of the last two dimensions.

    Args:
        img: float tensor (..., H, W), typically (B, 3, H, W) or (3, H, W) in [0, 1]; CPU or CUDA.
            Half/bfloat16 inputs are computed in float32 and cast back. Values are not clamped (bicubic
            overshoots slightly).
        scale: factor, or (scale_h, scale_w); < 1 shrinks, > 1 enlarges. Output size is ceil(H·scale).
        size: output (H_out, W_out) instead of ``scale``; the kernel then uses scale = H_out / H (per dim).
        antialias: widen the kernel when shrinking (MATLAB default). False gives plain bicubic decimation.

    Returns:
        Tensor (..., H_out, W_out), same dtype and device as ``img``.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"imresize: expected a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(
            f"imresize: expected a floating-point image in [0, 1], got dtype {img.dtype}; "
            "convert with img.float() / 255"
        )
    if img.dim() < 2:
        raise ValueError(
            f"imresize: expected (..., H, W) with at least 2 dimensions, got shape {tuple(img.shape)}"
        )
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    in_h, in_w = img.shape[-2:]
    if size is not None:
        out_h, out_w = (int(s) for s in _pair(size, "size"))
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize: size must be positive, got {size!r}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        scale_h, scale_w = (float(s) for s in _pair(scale, "scale"))
        if not (scale_h > 0 and scale_w > 0 and math.isfinite(scale_h) and math.isfinite(scale_w)):
            raise ValueError(f"imresize: scale must be positive and finite, got {scale!r}")
        out_h, out_w = output_size(in_h, scale_h), output_size(in_w, scale_w)
    work = img if img.dtype in (torch.float32, torch.float64) else img.float()
    out = _resize_rows(work, in_h, out_h, scale_h, antialias)
    out = _resize_rows(out.transpose(-2, -1), in_w, out_w, scale_w, antialias).transpose(-2, -1)
    if out is img:
        out = img.clone()
    return out.to(img.dtype).contiguous()
