"""The `cuda` backend of IDR-DDC: fused CUDA C++ kernels (csrc/idr_ddc_{fwd,bwd}.cu) for CUDA tensors.

One CTA per (plane, 64-column tile) stages the tile with its halo in shared memory (16-byte loads), each
thread slides a K-wide register window down one column. The fused backward reads grad_out (and the saved
output for the LeakyReLU) and x once and writes grad_x and grad_w; grad_w is reduced warp -> block -> one
store per tile, and over tiles (inference-size planes) by a second kernel in tile order: bitwise
reproducible, no atomics.
Templated on k (1, 3, 5, 7) and dtype (float32, float16, bfloat16 with float32 accumulation; float64).
Runs on the current CUDA stream.
"""

from __future__ import annotations

import torch

from . import _build
from ._alloc import new_buffer

NAME = "cuda"
DEVICE_TYPES = ("cuda",)


def unavailable_reason(device_type: str) -> str | None:
    """None when a CUDA device is present and the extension is importable (or was just compiled)."""
    if device_type != "cuda":
        return "it runs CUDA tensors only"
    if not torch.cuda.is_available():
        return "no CUDA device is available (torch.cuda.is_available() is False)"
    return _build.load_extension("cuda")[1]


def _ext():
    module, reason = _build.load_extension("cuda")
    if module is None:
        raise RuntimeError(f"idr_ddc: backend 'cuda' is unavailable: {reason}")
    return module


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k), same CUDA dtype/device -> contiguous (B,C,H,W) output of x's dtype."""
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
        B, C = x.shape[:2]
        k = weight.shape[-1]
        grad_w = new_buffer(tuple(weight.shape), weight.dtype, weight.device)
        tiles = ext.num_tiles(x, k)
        if tiles > 1:
            workspace = new_buffer((B * C, tiles, k * k), torch.float64, x.device)
    if need_grad_x or need_grad_w:
        ext.backward(grad_out, x, weight, saved, slope, grad_x, grad_w, workspace)
    return grad_x, grad_w
