"""The `cuda` backend of IDR-DDC (placeholder until its kernels land)."""

from __future__ import annotations

NAME = "cuda"
DEVICE_TYPES = ("cuda",)


def unavailable_reason(device_type: str) -> str | None:
    return "not implemented yet"


def forward(x, weight, negative_slope):
    raise NotImplementedError


def backward(grad_out, x, weight, out, negative_slope, need_grad_x, need_grad_w):
    raise NotImplementedError
