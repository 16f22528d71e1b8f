"""The `reference` backend: the grouped-convolution formulation KDSR and DASR use, plus LeakyReLU.

Every other backend is tested against this one (evaluated in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._alloc import memory_format

DEVICE_TYPES = ("cpu", "cuda")


def unavailable_reason(device_type: str) -> str | None:
    """None: the reference runs on every device torch supports."""
    return None


_HALF = (torch.float16, torch.bfloat16)


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 are computed in float32 and rounded once (the documented contract of every backend)."""
    return torch.float32 if dtype in _HALF else dtype


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k) -> out (B,C,H,W), x's dtype and memory format (fp16/bf16: fp32 math)."""
    dtype, layout = x.dtype, memory_format(x)
    x, weight = x.to(_math_dtype(dtype)), weight.to(_math_dtype(dtype))
    B, C, H, W = x.shape
    k = weight.shape[-1]
    out = F.conv2d(
        x.reshape(1, B * C, H, W), weight.reshape(B * C, 1, k, k), groups=B * C, padding=k // 2
    ).view(B, C, H, W)
    if negative_slope is not None:
        out = F.leaky_relu(out, negative_slope)
    return out.to(dtype).contiguous(memory_format=layout)


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `forward` (grad_x in x's memory format, grad_w contiguous); `out` is its saved output
    (needed only with an activation)."""
    dtype, layout = x.dtype, memory_format(x)
    grad_out, x, weight = (t.to(_math_dtype(dtype)) for t in (grad_out, x, weight))
    B, C, H, W = x.shape
    k = weight.shape[-1]
    if negative_slope is not None:
        grad_out = torch.where(out > 0, grad_out, grad_out * negative_slope)
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_out.reshape(1, B * C, H, W),
        x.reshape(1, B * C, H, W),
        weight.reshape(B * C, 1, k, k),
        None,
        [1, 1],
        [k // 2, k // 2],
        [1, 1],
        False,
        [0, 0],
        B * C,
        [need_grad_x, need_grad_w, False],
    )
    grad_x = grad_x.view(B, C, H, W).to(dtype).contiguous(memory_format=layout) if need_grad_x else None
    grad_w = grad_w.view(B, C, k, k).to(dtype).contiguous() if need_grad_w else None
    return grad_x, grad_w
