"""Backend table, the `torch.ops.kdsr.idr_ddc` custom op and the public `idr_ddc` function.

One `Backend` record per backend: name, device types, a probe giving why it cannot run a device type (None
when it can), forward and backward. The compiled backends (`cpu`, `cuda`) are C++ operators registered with
TORCH_LIBRARY (kdsr_kernels/_compiled.py): `idr_ddc` calls them directly, so an eager call is one Python
frame, one validation, then dispatcher -> C++. Reference and Triton are Python implementations behind the
Python custom op `torch.ops.kdsr.idr_ddc(x, weight, negative_slope, backend)`, backend "reference" or
"triton" (the compiled backends are `torch.ops.kdsr.idr_ddc_compiled(x, weight, negative_slope)`).

Every backend returns outputs in x's memory format (`_alloc.memory_format`: channels_last in, out).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from . import _compiled, reference
from ._alloc import memory_format
from ._validate import check_inputs

Forward = Callable[[torch.Tensor, torch.Tensor, "float | None"], torch.Tensor]
Backward = Callable[..., "tuple[torch.Tensor | None, torch.Tensor | None]"]


@dataclass(frozen=True)
class Backend:
    """One IDR-DDC implementation: where it runs, why it may not, and its two passes."""

    name: str
    device_types: tuple[str, ...]
    probe: Callable[[str], str | None]  # device type -> None when usable, else why not and what to do
    forward: Forward  # (x, weight, negative_slope) -> out, in x's memory format
    backward: Backward  # (grad_out, x, weight, out, slope, need_grad_x, need_grad_w) -> (grad_x?, grad_w?)
    compiled: bool = False  # a C++ operator `idr_ddc` may call directly


_triton_module: ModuleType | None = None


def _triton() -> ModuleType:
    """The Triton backend module, imported on first use (importing triton is slow and may fail)."""
    global _triton_module
    if _triton_module is None:
        from . import triton_backend

        _triton_module = triton_backend
    return _triton_module


BACKENDS: dict[str, Backend] = {
    "reference": Backend(
        "reference",
        reference.DEVICE_TYPES,
        reference.unavailable_reason,
        reference.forward,
        reference.backward,
    ),
    "triton": Backend(
        "triton",
        ("cuda", "cpu"),
        lambda device_type: _triton().unavailable_reason(device_type),
        lambda *args: _triton().forward(*args),
        lambda *args: _triton().backward(*args),
    ),
    "cpu": Backend(
        "cpu", ("cpu",), _compiled.unavailable_reason, _compiled.forward, _compiled.backward, True
    ),
    "cuda": Backend(
        "cuda", ("cuda",), _compiled.unavailable_reason, _compiled.forward, _compiled.backward, True
    ),
}
# Backends implemented in Python, reached through the Python custom op torch.ops.kdsr.idr_ddc.
PYTHON_BACKENDS = tuple(name for name, record in BACKENDS.items() if not record.compiled)
# "auto" tries these in order; the Triton interpreter is a test path, never picked for CPU tensors.
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

_WRONG_DEVICE = "it runs"
_reasons: dict[tuple[str, str], str | None] = {}
_warned: set[tuple[str, str]] = set()
_resolved: dict[tuple[str, str], Backend] = {}


def _record(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"idr_ddc: unknown backend {name!r}; choose one of {['auto', *BACKENDS]}") from None


def unavailable_reason(name: str, device_type: str) -> str | None:
    """Why backend `name` cannot run tensors of `device_type` (None when it can). Cached per process."""
    key = (name, device_type)
    if key not in _reasons:
        record = _record(name)
        if device_type not in record.device_types:
            _reasons[key] = f"{_WRONG_DEVICE} {'/'.join(record.device_types)} tensors only"
        else:
            try:
                _reasons[key] = record.probe(device_type)
            except Exception as exc:  # an import or build failure must not take "auto" down with it
                _reasons[key] = f"{type(exc).__name__}: {exc}"
    return _reasons[key]


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends usable on this machine (for `device`'s type; default: CUDA if present, else CPU)."""
    if device is None:
        device_types = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    else:
        device_types = [torch.device(device).type]
    return [name for name in BACKENDS if any(unavailable_reason(name, dt) is None for dt in device_types)]


def _resolve(backend: str, device_type: str) -> Backend:
    key = (backend, device_type)
    record = _resolved.get(key)
    if record is None:
        record = _resolved[key] = BACKENDS[resolve_backend(backend, device_type)]
    return record


@torch.compiler.assume_constant_result
def resolve_backend(backend: str, device_type: str) -> str:
    """Turn "auto" into the fastest usable backend for `device_type`; check a named backend can run there.

    Evaluated once at trace time under torch.compile (the answer is a constant of the process).
    """
    if backend != "auto":
        reason = unavailable_reason(backend, device_type)
        if reason is not None:
            raise RuntimeError(f"idr_ddc: backend {backend!r} cannot run on {device_type}: {reason}")
        return backend
    for name in AUTO_ORDER.get(device_type, ("reference",)):
        reason = unavailable_reason(name, device_type)
        if reason is None:
            return name
        if not reason.startswith(_WRONG_DEVICE) and (name, device_type) not in _warned:
            _warned.add((name, device_type))
            warnings.warn(f"idr_ddc: backend {name!r} unavailable ({reason}); falling back", stacklevel=3)
    raise RuntimeError(f"idr_ddc: no backend can run on device type {device_type!r}")


def _python_backend(backend: str) -> Backend:
    if backend not in PYTHON_BACKENDS:
        raise ValueError(
            f"torch.ops.kdsr.idr_ddc runs the Python backends {PYTHON_BACKENDS}, not {backend!r}; the "
            "compiled backends are torch.ops.kdsr.idr_ddc_compiled(x, weight, negative_slope)"
        )
    return BACKENDS[backend]


def _like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of x's shape, dtype, device and memory format."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


@torch.library.custom_op("kdsr::idr_ddc", mutates_args=(), device_types=("cpu", "cuda"))
def _idr_ddc_op(
    x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None, backend: str
) -> torch.Tensor:
    check_inputs(x, weight, negative_slope)
    record = _python_backend(backend)
    if x.numel() == 0:
        return _like(x)
    return record.forward(x, weight, negative_slope).contiguous(memory_format=memory_format(x))


@_idr_ddc_op.register_fake
def _idr_ddc_fake(x, weight, negative_slope, backend):
    check_inputs(x, weight, negative_slope)
    _python_backend(backend)
    return _like(x)


@torch.library.custom_op("kdsr::idr_ddc_backward", mutates_args=(), device_types=("cpu", "cuda"))
def _idr_ddc_backward_op(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    backend: str,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (grad_x in x's memory format, grad_w contiguous); a gradient that is not needed comes back as
    an empty (0,) tensor."""
    record = _python_backend(backend)
    if x.numel() == 0:
        grad_x, grad_w = _like(x).zero_(), torch.zeros_like(weight, memory_format=torch.contiguous_format)
    else:
        grad_x, grad_w = record.backward(grad_out, x, weight, out, negative_slope, need_grad_x, need_grad_w)
    grad_x = grad_x.contiguous(memory_format=memory_format(x)) if need_grad_x else x.new_empty(0)
    grad_w = grad_w.contiguous() if need_grad_w else weight.new_empty(0)
    return grad_x, grad_w


@_idr_ddc_backward_op.register_fake
def _idr_ddc_backward_fake(grad_out, x, weight, out, negative_slope, backend, need_grad_x, need_grad_w):
    return (
        _like(x) if need_grad_x else x.new_empty(0),
        weight.new_empty(weight.shape if need_grad_w else (0,)),
    )


def _setup_context(ctx, inputs, output):
    x, weight, negative_slope, backend = inputs
    ctx.negative_slope = negative_slope
    ctx.backend = backend
    ctx.save_for_backward(x, weight, output if negative_slope is not None else None)


def _backward(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    need_grad_x, need_grad_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_w = torch.ops.kdsr.idr_ddc_backward(
        grad_out, x, weight, out, ctx.negative_slope, ctx.backend, need_grad_x, need_grad_w
    )
    return (grad_x if need_grad_x else None), (grad_w if need_grad_w else None), None, None


_idr_ddc_op.register_autograd(_backward, setup_context=_setup_context)


def idr_ddc(
    x: torch.Tensor,
    weight: torch.Tensor,
    negative_slope: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """IDR-DDC: per-sample depthwise dynamic convolution, optionally followed by a fused LeakyReLU.

    Args:
        x: (B, C, H, W) float32 / float16 / bfloat16 / float64, any strides (channels_last, slices).
        weight: (B, C, k, k), same dtype and device; k odd, 1 <= k <= 7. Cross-correlation, as F.conv2d,
            with 'same' zero padding and stride 1: one k x k kernel per sample and channel.
        negative_slope: None for no activation, else LeakyReLU(negative_slope) (>= 0) fused into the kernels.
        backend: "auto" (fastest usable for x's device), "reference", "triton", "cpu" or "cuda". A backend
            asked for by name that cannot run raises RuntimeError; only "auto" falls back.

    Returns:
        (B, C, H, W) tensor of x's dtype in x's memory format: channels_last (NHWC) when x is channels_last,
        else contiguous NCHW (torch's `suggest_memory_format` rule; sliced inputs are copied once). The
        gradient w.r.t. x has x's memory format too, the one w.r.t. weight is contiguous. Differentiable in x
        and weight. Fast paths: NCHW-contiguous and channels_last x with a contiguous weight.
    """
    check_inputs(x, weight, negative_slope)
    if torch.compiler.is_compiling():
        name = resolve_backend(backend, x.device.type)
        if BACKENDS[name].compiled:
            return torch.ops.kdsr.idr_ddc_compiled(x, weight, negative_slope)
        return torch.ops.kdsr.idr_ddc(x, weight, negative_slope, name)
    record = _resolved.get((backend, x.device.type)) or _resolve(backend, x.device.type)
    if record.compiled:
        return _compiled.eager(x, weight, negative_slope)
    return torch.ops.kdsr.idr_ddc(x, weight, negative_slope, record.name)
