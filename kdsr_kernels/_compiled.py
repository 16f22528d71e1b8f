"""Glue shared by the compiled backends (`cpu`, `cuda`): both extensions take preallocated outputs with the
same forward / backward signatures and differ only in how many grad_w partial rows a plane needs."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch

from . import _build
from ._alloc import new_buffer

# (extension, x, k) -> grad_w partials per plane; 0 when the extension needs no workspace.
WorkspaceRows = Callable[[ModuleType, torch.Tensor, int], int]


def extension(target: str) -> ModuleType:
    """The compiled module for `target` ("cpu" or "cuda"); RuntimeError with the build message if absent."""
    module, reason = _build.load_extension(target)
    if module is None:
        raise RuntimeError(f"idr_ddc: backend {target!r} is unavailable: {reason}")
    return module


def forward(target: str, x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k), same dtype/device -> contiguous (B,C,H,W) output of x's dtype."""
    ext = extension(target)
    x, weight = x.contiguous(), weight.contiguous()
    out = new_buffer(tuple(x.shape), x.dtype, x.device)
    ext.forward(x, weight, out, None if negative_slope is None else float(negative_slope))
    return out


def backward(
    target: str,
    workspace_rows: WorkspaceRows,
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_x (B,C,H,W) | None, grad_w (B,C,k,k) | None) of `forward`; `out` is its saved output (used only
    with an activation: LeakyReLU' = 1 where out > 0, else negative_slope). grad_w partials go to a float64
    workspace (B*C, rows, k*k) reduced by the extension in a fixed order."""
    ext = extension(target)
    x, weight = x.contiguous(), weight.contiguous()
    grad_out = grad_out.to(x.dtype).contiguous()
    slope = None if negative_slope is None else float(negative_slope)
    saved = out.contiguous() if slope is not None else None
    grad_x = new_buffer(tuple(x.shape), x.dtype, x.device) if need_grad_x else None
    grad_w = workspace = None
    if need_grad_w:
        k = weight.shape[-1]
        grad_w = new_buffer(tuple(weight.shape), weight.dtype, weight.device)
        rows = workspace_rows(ext, x, k)
        if rows > 0:
            workspace = new_buffer((x.shape[0] * x.shape[1], rows, k * k), torch.float64, x.device)
    if need_grad_x or need_grad_w:
        ext.backward(grad_out, x, weight, saved, slope, grad_x, grad_w, workspace)
    return grad_x, grad_w
