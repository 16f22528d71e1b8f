"""The compiled backends (`cpu`, `cuda`): C++ operators `torch.ops.kdsr.idr_ddc_compiled` and
`torch.ops.kdsr.idr_ddc_compiled_backward`, registered by the extensions with TORCH_LIBRARY (schema, CPU and
CUDA kernels, autograd), so an eager call goes dispatcher -> C++ with no Python frame in between. The bindings
allocate their own outputs and grad_w workspace (NaN-filled under KDSR_POISON_OUTPUTS=1, a flag handed to C++
once here).

cpu: fused C++ kernels (csrc/idr_ddc_cpu*.cpp), one pass forward with LeakyReLU fused and one fused
backward over (plane, row band) units with `at::parallel_for`; grad_w is reduced over bands in a fixed order,
so results are bitwise identical for any thread count; AVX-512 / AVX2 / SSE2 picked at run time; float16 /
bfloat16 computed in float32 (grad_w sums in float64).
cuda: fused CUDA kernels (csrc/idr_ddc_{fwd,bwd}.cu), one CTA per (plane, 64-column tile), grad_w reduced
without atomics (bitwise reproducible); runs on the current CUDA stream.
"""

from __future__ import annotations

import torch

from . import _build
from ._alloc import memory_format, poison_enabled

DEVICE_TYPES = ("cpu", "cuda")


def _not_loaded(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    raise RuntimeError("idr_ddc: the compiled extension is not loaded (call unavailable_reason first)")


# Eager entry point: the extension's pybind `idr_ddc`, which calls the operator through the dispatcher in C++
# (same kernels and autograd as torch.ops.kdsr.idr_ddc_compiled, without its boxed argument parsing).
eager = _not_loaded


def _load(target: str) -> str | None:
    """Load the extension for `target` (and the CPU one, which defines the operator schemas) once."""
    cpu, reason = _build.load_extension("cpu")
    if cpu is None:
        return reason
    cpu.set_poison_outputs(poison_enabled())
    _register_fakes()
    global eager
    eager = cpu.idr_ddc
    if target == "cuda":
        cuda, reason = _build.load_extension("cuda")
        if cuda is None:
            return reason
        cuda.set_poison_outputs(poison_enabled())
    return None


_fakes_registered = False


def _register_fakes() -> None:
    """Shape functions of the C++ operators, for torch.compile / FakeTensor tracing (once per process)."""
    global _fakes_registered
    if _fakes_registered:
        return
    _fakes_registered = True

    def like(x):  # what the C++ kernels allocate: x's shape in x.suggest_memory_format()
        return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))

    @torch.library.register_fake("kdsr::idr_ddc_compiled")
    def _forward_fake(x, weight, negative_slope):
        return like(x)

    @torch.library.register_fake("kdsr::idr_ddc_compiled_backward")
    def _backward_fake(grad_out, x, weight, out, negative_slope, need_grad_x, need_grad_w):
        return (
            like(x) if need_grad_x else x.new_empty(0),
            weight.new_empty(weight.shape if need_grad_w else (0,)),
        )


def unavailable_reason(device_type: str) -> str | None:
    """None when the compiled kernels for `device_type` are loaded (built on first use), else why not."""
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available (torch.cuda.is_available() is False)"
    return _load(device_type)


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k), same dtype/device -> (B,C,H,W) output of x's dtype and memory format."""
    return torch.ops.kdsr.idr_ddc_compiled(x, weight, negative_slope)


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_x (B,C,H,W) in x's memory format | None, grad_w (B,C,k,k) contiguous | None) of `forward`; `out`
    is its saved output (used only with an activation: LeakyReLU' = 1 where out > 0, else negative_slope)."""
    grad_x, grad_w = torch.ops.kdsr.idr_ddc_compiled_backward(
        grad_out, x, weight, out, negative_slope, need_grad_x, need_grad_w
    )
    return (grad_x if need_grad_x else None), (grad_w if need_grad_w else None)
