"""kdsr_kernels: fused IDR-DDC (per-sample depthwise dynamic convolution) for PyTorch.

import kdsr_kernels as kk
y = kk.idr_ddc(x, weight, negative_slope=0.1)   # x (B,C,H,W), weight (B,C,k,k)
kk.available_backends()                          # e.g. ['reference', 'cpu', 'triton']
"""

from .ops import available_backends, idr_ddc

__all__ = ["idr_ddc", "available_backends"]
__version__ = "0.1.0"
