"""What the tiling runs: a `TileRunner` (PyTorch or onnxruntime) and the precision of the PyTorch one.

runner = runner_for(model, "bf16")        # encoder features, head and SR network under bf16 autocast
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..device import auto_precision
from ..models.kdsr_model import KDSRStudent


@dataclass(frozen=True)
class TileRunner:
    """What the tiling needs from a network, so PyTorch and onnxruntime share one tiling code path.

    features: (B, 3, h, w) LR patch -> (B, F, h, w) per-pixel encoder features (before the global pool).
    head: (B, F) pooled features, float64 -> the degradation estimate handed to `sr`.
    sr: ((N, 3, h, w) LR windows, (N, ...) estimate) -> (N, 3, scale*h, scale*w).
    encoder_radius: context pixels that make a patch's features equal the whole image's.
    scale: the upscaling factor. `to_input` casts/moves an LR patch to what `features`/`sr` take.
    precision: what the network computes in ("fp32", "bf16", "fp16"); the memory probe reads it.
    """

    features: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]
    sr: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    encoder_radius: int
    scale: int
    to_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    precision: str = "fp32"


def torch_runner(model: KDSRStudent, low_dtype: torch.dtype | None = None) -> TileRunner:
    """A TileRunner for a PyTorch student (inputs cast to its first parameter's device and dtype).

    low_dtype (bfloat16 / float16): the encoder and the SR network's IDR-DCRBs and upsampler run under
    autocast to it; the SR residual stream, head, body conv and tail stay in the model's dtype
    (`SRNetwork.forward(body_dtype=...)`). Inputs are channels_last on the CPU and in low precision (oneDNN's
    NHWC convolutions are the fast ones there; the network keeps the input's layout end to end, issue 24),
    contiguous NCHW for CUDA float32.
    """
    param = model.sr_net.head.weight
    encoder = model.encoder
    nhwc = low_dtype is not None or param.device.type == "cpu"
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    autocast = functools.partial(
        torch.autocast, param.device.type, dtype=low_dtype, enabled=low_dtype is not None
    )

    def features(x: torch.Tensor) -> torch.Tensor:
        with autocast():
            return encoder.features(x)

    def sr(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if low_dtype is None:
            return model.sr_net(x, d)
        return model.sr_net(x, d, body_dtype=low_dtype)

    def to_input(x: torch.Tensor) -> torch.Tensor:
        return x.to(param.device, param.dtype).contiguous(memory_format=fmt)

    def head(pooled: torch.Tensor) -> torch.Tensor:
        return encoder.head(pooled.to(param.dtype))[0]

    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[low_dtype]
    return TileRunner(features, head, sr, encoder.receptive_radius, model.scale, to_input, precision)


PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> kdsr.device.auto_precision (bf16 only on a CPU that has it natively, fp16 on CUDA, else
    fp32); checks the name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return auto_precision(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' runs on CUDA only; on CPU use 'bf16' (or 'auto')")
    return precision


def runner_for(model: KDSRStudent, precision: str = "fp32") -> TileRunner:
    """The TileRunner `upscale` uses for `model` at `precision` ("fp32" / "bf16" / "fp16" / "auto")."""
    precision = resolve_precision(precision, model.sr_net.head.weight.device)
    low_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch_runner(model, low_dtype)
