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

from . import _build, _compiled

NAME = "cpu"
DEVICE_TYPES = ("cpu",)


def unavailable_reason(device_type: str) -> str | None:
    """None when the CPU extension is importable (or was just compiled), else why not and what to do."""
    if device_type != "cpu":
        return "it runs CPU tensors only"
    return _build.load_extension("cpu")[1]


def _workspace_rows(ext, x: torch.Tensor, k: int) -> int:
    """Row bands per plane: the CPU extension always reduces grad_w through its workspace."""
    return ext.num_bands(x.shape[2], x.shape[3])


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k), same CPU dtype -> contiguous (B,C,H,W) output of x's dtype."""
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
