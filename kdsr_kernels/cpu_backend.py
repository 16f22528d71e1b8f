"""The `cpu` backend of IDR-DDC: fused C++ kernels (csrc/idr_ddc_cpu*.cpp) for CPU tensors.

Forward: one pass, all k*k taps applied to a vector of outputs in registers, LeakyReLU fused. Backward: one
pass reading grad_out (and the saved output for the LeakyReLU) and x once, writing grad_x and grad_w. Work
units are (plane, row band) pairs spread over `torch.get_num_threads()` threads with `at::parallel_for`; the
row bands depend on H and W only and grad_w is reduced over them in a fixed order, so every result is bitwise
identical for any thread count. Vector width is picked at run time (AVX-512, AVX2 or SSE2 on x86-64).
float32 and float64 compute in their own precision; float16 / bfloat16 are converted on load and computed in
float32 (grad_w sums in float64), rounded once on store.
"""

from __future__ import annotations

import torch

from . import _build
from ._alloc import new_buffer

NAME = "cpu"
DEVICE_TYPES = ("cpu",)


def unavailable_reason(device_type: str) -> str | None:
    """None when the CPU extension is importable (or was just compiled), else why not and what to do."""
    if device_type != "cpu":
        return "it runs CPU tensors only"
    return _build.load_extension("cpu")[1]


def _ext():
    module, reason = _build.load_extension("cpu")
    if module is None:
        raise RuntimeError(f"idr_ddc: backend 'cpu' is unavailable: {reason}")
    return module


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k), same CPU dtype -> contiguous (B,C,H,W) output of x's dtype."""
    ext = _ext()
    x, weight = x.contiguous(), weight.contiguous()
    out = new_buffer(tuple(x.shape), x.dtype, x.device)
    ext.forward(x, weight, out, None if negative_slope is None else float(negative_slope))
    return out


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_x (B,C,H,W) | None, grad_w (B,C,k,k) | None) of `forward`; `out` is its saved output (used only
    with an activation: LeakyReLU' = 1 where out > 0, else negative_slope)."""
    ext = _ext()
    x, weight = x.contiguous(), weight.contiguous()
    grad_out = grad_out.to(x.dtype).contiguous()
    slope = None if negative_slope is None else float(negative_slope)
    saved = out.contiguous() if slope is not None else None
    grad_x = new_buffer(tuple(x.shape), x.dtype, x.device) if need_grad_x else None
    grad_w = workspace = None
    if need_grad_w:
        B, C, H, W = x.shape
        k = weight.shape[-1]
        grad_w = new_buffer(tuple(weight.shape), weight.dtype, weight.device)
        workspace = new_buffer((B * C, ext.num_bands(H, W), k * k), torch.float64, x.device)
    if need_grad_x or need_grad_w:
        ext.backward(grad_out, x, weight, saved, slope, grad_x, grad_w, workspace)
    return grad_x, grad_w
