"""Which IDR-DDC backends this machine MUST run, decided from what is installed, not from what imports.

A backend whose import or build breaks must fail the suite, not silently drop its cases: the expected set
comes from installed distributions and tools (`triton` distribution ⇒ `triton`; CUDA + nvcc ⇒ `cuda`; a C++
compiler ⇒ `cpu`), and every test parametrised over it runs the backend by name, which raises with the reason.
Only the public `available_backends()` and `ops.unavailable_reason()` are used.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil

import torch

import kdsr_kernels as kk
from kdsr_kernels import ops


def _distribution_installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _nvcc_found() -> bool:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return shutil.which("nvcc") is not None or os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))


def _cxx_found() -> bool:
    return shutil.which(os.environ.get("CXX", "c++")) is not None


def expected_backends(device_type: str) -> list[str]:
    """Backends that must run `device_type` tensors on this machine (always includes `reference`)."""
    names = ["reference"]
    if device_type == "cpu":
        if _cxx_found():
            names.append("cpu")
        if _distribution_installed("triton") and os.environ.get("TRITON_INTERPRET") == "1":
            names.append("triton")
    elif device_type == "cuda" and torch.cuda.is_available():
        if _distribution_installed("triton"):
            names.append("triton")
        if _nvcc_found():
            names.append("cuda")
    return names


def missing_backends(device_type: str) -> dict[str, str]:
    """{name: reason} for every expected backend that cannot run on `device_type`."""
    return {
        name: str(ops.unavailable_reason(name, device_type))
        for name in expected_backends(device_type)
        if name not in kk.available_backends(device_type)
    }


ALL_BACKENDS = ("reference", "triton", "cpu", "cuda")  # every name idr_ddc accepts besides "auto"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Expected ∪ available: a broken expected backend keeps its cases, and each of them fails with the reason.
CASES = [
    (dev, name)
    for dev in DEVICES
    for name in ALL_BACKENDS
    if name in expected_backends(dev) or name in kk.available_backends(dev)
]
CASE_IDS = [f"{dev}-{name}" for dev, name in CASES]
