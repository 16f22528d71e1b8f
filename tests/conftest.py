"""Test-wide settings: Triton runs in its interpreter on CPU-only machines; kernel outputs start as NaN."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before triton is imported anywhere (kdsr_kernels imports it lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("KDSR_POISON_OUTPUTS", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))
