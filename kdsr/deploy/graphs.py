"""The student as two export-friendly graphs: encoder features, and the SR network driven by pooled features.

`kdsr.upscale` tiles the encoder's global average pool (exact whole-image D) and the SR network separately;
an exported runner needs the same two pieces. The SR graph takes the pooled features (B, 4C) and applies the
encoder's tiny MLP head itself, so the runner needs no model code between the two graphs.

IDR-DDC is written as a sum of k*k shifted multiply-adds with per-sample weights. It is the same maths as the
grouped-conv formulation (reshape to (1, B*C, H, W) + Conv with group = B*C), but ONNX's Conv `group` is a
static attribute, so that formulation fixes the batch size at export time; the tap sum keeps B dynamic.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.encoder import NEGATIVE_SLOPE
from ..models.kdsr_model import KDSRStudent, KDSRTeacher
from ..models.sr_network import IDRDDC, KERNEL_SIZE


def dynamic_conv_taps(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample depthwise cross-correlation, 'same' zero padding: x (B, C, H, W), weight (B, C, k, k)
    -> (B, C, H, W), as k*k shifted multiply-adds (shape-polymorphic in B, H and W)."""
    k = weight.shape[-1]
    H, W = x.shape[-2:]
    padded = F.pad(x, (k // 2,) * 4)
    out = None
    for dy in range(k):
        for dx in range(k):
            term = padded[:, :, dy : dy + H, dx : dx + W] * weight[:, :, dy : dy + 1, dx : dx + 1]
            out = term if out is None else out + term
    return out


class TapDDC(nn.Module):
    """IDR-DDC (kernel generator + dynamic conv + LeakyReLU) with the conv as `dynamic_conv_taps`."""

    def __init__(self, ddc: IDRDDC):
        super().__init__()
        self.kernel = ddc.kernel

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), d (B, C) -> (B, C, H, W)."""
        B, C = x.shape[:2]
        weight = self.kernel(d).to(x.dtype).view(B, C, KERNEL_SIZE, KERNEL_SIZE)
        return F.leaky_relu(dynamic_conv_taps(x, weight), NEGATIVE_SLOPE)


class EncoderFeatures(nn.Module):
    """patch (B, 3, h, w) -> per-pixel encoder features (B, 4C, h, w), before the global pool."""

    def __init__(self, student: KDSRStudent):
        super().__init__()
        self.encoder = student.encoder

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(patch)


class SRFromPooled(nn.Module):
    """(lr (B, 3, H, W), pooled encoder features (B, 4C)) -> sr (B, 3, sH, sW), not clamped."""

    def __init__(self, student: KDSRStudent):
        super().__init__()
        self.encoder = student.encoder
        self.sr_net = student.sr_net

    def forward(self, lr: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.sr_net(lr, self.encoder.head(pooled)[0])


def check_student(model: object) -> KDSRStudent:
    """`model` if it is a KDSRStudent, else a ValueError saying why teachers cannot be exported."""
    if isinstance(model, KDSRTeacher):
        raise ValueError(
            "this checkpoint holds a KDSR teacher; teachers need the HR image to estimate the degradation, "
            "so they are not exportable for upscaling -- export a student (trained with stage 2)"
        )
    if not isinstance(model, KDSRStudent):
        raise ValueError(f"only KDSR students can be exported, got {type(model).__name__}")
    return model


def export_graphs(model: KDSRStudent) -> tuple[EncoderFeatures, SRFromPooled]:
    """Float32 CPU eval copies of the student's two graphs, IDR-DDC as `TapDDC` (the model is untouched)."""
    student = copy.deepcopy(check_student(model)).float().cpu().eval()
    for block in student.sr_net.blocks:
        block.ddc = TapDDC(block.ddc)
    return EncoderFeatures(student), SRFromPooled(student)
