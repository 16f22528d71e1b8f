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

from . import _build, _compiled

NAME = "cuda"
DEVICE_TYPES = ("cuda",)


def unavailable_reason(device_type: str) -> str | None:
    """None when a CUDA device is present and the extension is importable (or was just compiled)."""
    if device_type != "cuda":
        return "it runs CUDA tensors only"
    if not torch.cuda.is_available():
        return "no CUDA device is available (torch.cuda.is_available() is False)"
    return _build.load_extension("cuda")[1]


def _workspace_rows(ext, x: torch.Tensor, k: int) -> int:
    """Tiles per plane when a plane spans several CTAs; 0 (no workspace) when one CTA stores grad_w."""
    tiles = ext.num_tiles(x, k)
    return tiles if tiles > 1 else 0


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k), same CUDA dtype -> contiguous (B,C,H,W) output of x's dtype."""
    return _compiled.forward(NAME, x, weight, negative_slope)


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_x | None, grad_w | None) of `forward`; see `_compiled.backward`."""
    return _compiled.backward(
        NAME, _workspace_rows, grad_out, x, weight, out, negative_slope, need_grad_x, need_grad_w
    )
