"""Classic blind-SR degradations (spec §6a): Gaussian kernels, MATLAB bicubic, noise, quantisation.

from kdsr import degradations as deg
k = deg.isotropic_gaussian_kernel(2.6)                     # (21, 21), sums to 1
lr = deg.degrade(hr, k, scale=4)                           # blur -> bicubic ↓4 -> (noise) -> 8-bit
lr, params = deg.ClassicDegradation(scale=4, kind="iso")(hr_batch, generator=g)
up = deg.imresize(lr, 4)                                   # MATLAB-compatible bicubic ×4
"""

from .kernels import (
    ANISO_TEST_KERNELS,
    GAUSSIAN8,
    anisotropic_gaussian_kernel,
    isotropic_gaussian_kernel,
    kernel_from_params,
)
from .pipeline import ClassicDegradation, add_noise, blur, degrade, quantize
from .realworld import RealWorldDegradation, RealWorldParams
from .resize import cubic, imresize, imresize_weights, output_size
from .usm import usm_sharpen

__all__ = [
    "ANISO_TEST_KERNELS",
    "GAUSSIAN8",
    "ClassicDegradation",
    "add_noise",
    "anisotropic_gaussian_kernel",
    "blur",
    "cubic",
    "degrade",
    "imresize",
    "imresize_weights",
    "isotropic_gaussian_kernel",
    "kernel_from_params",
    "output_size",
    "quantize",
    "RealWorldDegradation",
    "RealWorldParams",
    "usm_sharpen",
]
