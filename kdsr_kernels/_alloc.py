"""Output allocation shared by the fused backends.

With `KDSR_POISON_OUTPUTS=1` in the environment (the test suite sets it) every buffer a kernel is expected to
overwrite completely starts as NaN instead of uninitialised memory, so an element a kernel forgets to write
shows up as NaN rather than as a plausible leftover value.
"""

from __future__ import annotations

import os

import torch


def poison_enabled() -> bool:
    """True when outputs and scratch buffers should be NaN-filled before kernels write them."""
    return os.environ.get("KDSR_POISON_OUTPUTS", "0") == "1"


def new_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A contiguous tensor the caller's kernel will overwrite entirely (NaN-filled when poisoning is on)."""
    if poison_enabled():
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
