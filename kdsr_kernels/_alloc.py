"""Output layout and allocation shared by the backends.

Outputs follow the input's memory format: `memory_format(x)` is torch's own rule (the Python twin of
`Tensor.suggest_memory_format()`, which the C++ operators use), so every backend and every fake (shape)
function agree on the strides of what they return. With `KDSR_POISON_OUTPUTS=1` in the environment (the
test suite sets it) every buffer a kernel is expected to overwrite completely starts as NaN instead of
uninitialised memory, so an element a kernel forgets to write shows up as NaN rather than as a plausible
leftover value.
"""

from __future__ import annotations

import os

import torch
from torch._prims_common import suggest_memory_format


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """torch.channels_last when x (4-D) has NHWC-ordered strides, else torch.contiguous_format (also for
    tensors whose layout is ambiguous, e.g. C == 1); what the outputs computed from x are laid out as."""
    return suggest_memory_format(x)


def poison_enabled() -> bool:
    """True when outputs and scratch buffers should be NaN-filled before kernels write them."""
    return os.environ.get("KDSR_POISON_OUTPUTS", "0") == "1"


def new_buffer(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    layout: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """A dense tensor in `layout` the caller's kernel will overwrite entirely (NaN when poisoning is on)."""
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=layout)
    return out.fill_(float("nan")) if poison_enabled() else out
