"""LPIPS (Zhang et al. 2018) for evaluation: our implementation of the formula, lpips's linear heads.

    LPIPS(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} · (f̂_l(x) − f̂_l(y))²_{c,h,w},   f̂ = f / (‖f‖_channel + 1e-10)

where f_l are the post-ReLU features of a backbone (VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 or
AlexNet relu1..relu5) on the input scaled to [-1, 1] and then shifted/scaled by LPIPS's fixed per-channel
constants. The heads ``w_l`` are read by path from the installed ``lpips`` package
(``lpips/weights/v0.1/{vgg,alex}.pth``; ``pip install --no-deps lpips==0.1.4``: it declares torchvision)
without importing it (its module imports torchvision). The backbone is a torchvision-format state dict the
user supplies (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``): no wheel ships ImageNet weights. Files
are read with ``kdsr.safe_load.torch_load`` (no code runs). Inputs: RGB (B, 3, H, W) float in [0, 1];
output: (B,) float64 values.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import torch_load
from .backbones import VGG16_CFG, alexnet_layers, load_torchvision_features, vgg_layers

__all__ = ["LPIPS", "lpips_distance", "lpips_heads_path", "LPIPSUnavailable", "LPIPS_BACKBONE_FILES"]

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
LPIPS_BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth)",
    "alex": "alexnet-owt-7be5be79.pth (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
}
# the ReLU indices of torchvision's `features` layouts (kdsr.metrics.backbones) that LPIPS reads
_VGG16_TAPS = (3, 8, 15, 22, 29)
_ALEX_TAPS = (1, 4, 7, 9, 11)


class LPIPSUnavailable(RuntimeError):
    """A file LPIPS needs (lpips's heads or the backbone) is missing; the message says how to get it."""


def lpips_heads_path(net: str) -> Path:
    """Path of lpips's v0.1 linear heads for ``net`` ('vgg' or 'alex'), found without importing lpips."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise LPIPSUnavailable(
            "LPIPS needs the lpips package's linear heads: pip install --no-deps lpips==0.1.4 "
            "(--no-deps: lpips declares torchvision, which would replace torch)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise LPIPSUnavailable(f"{path}: missing from the lpips package; reinstall lpips==0.1.4")
    return path


def _build_backbone(net: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    """torchvision's ``features`` of VGG16 ('vgg') or AlexNet ('alex') up to the last tap, and the taps."""
    if net == "vgg":
        layers, taps = vgg_layers(VGG16_CFG), _VGG16_TAPS
    elif net == "alex":
        layers, taps = alexnet_layers(), _ALEX_TAPS
    else:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose 'vgg' or 'alex'")
    return nn.Sequential(*layers[: max(taps) + 1]), taps


class LPIPS(nn.Module):
    """LPIPS with a torchvision-format backbone and lpips's heads; ``forward(x, y)`` -> (B,) float64."""

    def __init__(self, net: str = "vgg", backbone: str | Path | None = None, heads: str | Path | None = None):
        super().__init__()
        self.features, self.taps = _build_backbone(net)
        tap_chans = [self.features[t - 1].out_channels for t in self.taps]
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in tap_chans])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        if backbone is not None:
            self.load_backbone(backbone, net)
        self.load_heads(heads if heads is not None else lpips_heads_path(net))
        self.requires_grad_(False).eval()

    def load_backbone(self, path: str | Path, net: str) -> None:
        """Load ``features.<i>.*`` from a torchvision state dict file (classifier ignored)."""
        path = Path(path)
        if not path.is_file():
            raise LPIPSUnavailable(
                f"{path}: no such file; LPIPS needs torchvision's {LPIPS_BACKBONE_FILES[net]}"
            )
        if load_torchvision_features(self.features, path):
            raise LPIPSUnavailable(
                f"{path}: not a torchvision {net} state dict; need {LPIPS_BACKBONE_FILES[net]}"
            )

    def load_heads(self, path: str | Path) -> None:
        """Load the linear heads ``lin<k>.model.1.weight`` (1, C_k, 1, 1) from an lpips weights file."""
        state = torch_load(Path(path))
        for k, h in enumerate(self.heads):
            h.data.copy_(state[f"lin{k}.model.1.weight"])

    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> the post-ReLU features at the taps (after LPIPS's input scaling)."""
        h = ((2.0 * x - 1.0) - self.shift) / self.scale
        out = []
        for i, m in enumerate(self.features):
            h = m(h)
            if i in self.taps:
                out.append(h)
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS(x, y) for two (B, 3, H, W) images in [0, 1]; returns (B,) float64."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (B, 3, H, W) images of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        return lpips_distance(self.layer_features(x), self.layer_features(y), list(self.heads)).to(
            torch.float64
        )


def lpips_distance(
    feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], heads: list[torch.Tensor]
) -> torch.Tensor:
    """The LPIPS sum over layers of mean_{h,w} head·(unit-normalised feature difference)²; returns (B,).

    ``feats_*[l]`` are (B, C_l, h_l, w_l) features, ``heads[l]`` (1, C_l, 1, 1) non-negative weights.
    Differentiable (used as the offline perceptual loss); the result has the features' dtype.
    """
    total = feats_x[0].new_zeros(feats_x[0].shape[0])
    for fx, fy, w in zip(feats_x, feats_y, heads, strict=True):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + _EPS)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + _EPS)
        total = total + F.conv2d((nx - ny).pow(2), w.to(fx.dtype)).mean(dim=(1, 2, 3))
    return total
