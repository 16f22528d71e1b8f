"""Input checks shared by every IDR-DDC backend: each failure raises a message naming the problem."""

from __future__ import annotations

import math

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_KERNEL_SIZE = 7


_DTYPES = frozenset(SUPPORTED_DTYPES)
_KERNEL_SIZES = frozenset(range(1, MAX_KERNEL_SIZE + 1, 2))


def check_inputs(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> int:
    """Validate IDR-DDC arguments and return the kernel size k.

    x: (B, C, H, W) floating tensor; weight: (B, C, k, k), same dtype and device, k odd in [1, 7];
    negative_slope: None (no activation) or a finite float >= 0 (LeakyReLU slope).
    Valid arguments take one combined test (this runs on every eager call); anything else goes through the
    detailed checks, which raise a message naming the problem.
    """
    try:
        B, C, _, _ = x.shape
        wb, wc, kh, kw = weight.shape
        fast = (
            wb == B
            and wc == C
            and kh == kw
            and kh in _KERNEL_SIZES
            and x.dtype in _DTYPES
            and weight.dtype == x.dtype
            and weight.device == x.device
            and (
                negative_slope is None or (type(negative_slope) is float and 0.0 <= negative_slope < math.inf)
            )
            and isinstance(x, torch.Tensor)
            and isinstance(weight, torch.Tensor)
        )
    except (AttributeError, TypeError, ValueError):
        fast = False
    if fast:
        return kh
    return _check_inputs_in_detail(x, weight, negative_slope)


def _check_inputs_in_detail(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> int:
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError(f"idr_ddc expects tensors, got x={type(x).__name__}, weight={type(weight).__name__}")
    if x.dim() != 4:
        raise ValueError(f"idr_ddc: x must be 4-D (B, C, H, W), got {x.dim()}-D shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(
            f"idr_ddc: weight must be 4-D (B, C, k, k), got {weight.dim()}-D shape {tuple(weight.shape)}; "
            "reshape a (B, C*k*k) kernel-generator output with .view(B, C, k, k)"
        )
    B, C = x.shape[0], x.shape[1]
    if weight.shape[0] != B or weight.shape[1] != C:
        raise ValueError(
            f"idr_ddc: weight batch/channels {tuple(weight.shape[:2])} do not match x (B, C) = {(B, C)}; "
            "IDR-DDC needs one kernel per sample and channel"
        )
    kh, kw = weight.shape[2], weight.shape[3]
    if kh != kw:
        raise ValueError(f"idr_ddc: kernel must be square, got {kh}x{kw}")
    if kh % 2 == 0 or not 1 <= kh <= MAX_KERNEL_SIZE:
        raise ValueError(
            f"idr_ddc: kernel size must be odd and between 1 and {MAX_KERNEL_SIZE} ('same' padding), "
            f"got k={kh}"
        )
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"idr_ddc: x dtype {x.dtype} is not supported; use float32, float16, bfloat16 or float64"
        )
    if weight.dtype != x.dtype:
        raise TypeError(
            f"idr_ddc: weight dtype {weight.dtype} differs from x dtype {x.dtype}; cast one to match "
            "(e.g. weight.to(x.dtype))"
        )
    if weight.device != x.device:
        raise ValueError(
            f"idr_ddc: x is on {x.device} but weight is on {weight.device}; move both to one device"
        )
    if negative_slope is not None:
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise TypeError(
                f"idr_ddc: negative_slope must be a float or None, got {type(negative_slope).__name__}"
            )
        if not math.isfinite(negative_slope) or negative_slope < 0:
            raise ValueError(
                "idr_ddc: negative_slope must be finite and >= 0 (a sign-preserving LeakyReLU), "
                f"got {negative_slope}"
            )
    return kh
