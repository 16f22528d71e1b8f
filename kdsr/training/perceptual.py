"""VGG19 perceptual loss (spec §5c): pre-ReLU features, L1, ImageNet normalisation, style weight 0.

A VGG19 feature stack in torchvision's ``features`` layout (``kdsr.metrics.backbones``), so a torchvision
state dict such as ``vgg19-dcbb9e9d.pth`` loads by key ``features.<i>.weight/bias``. Features are the conv
outputs **before** their ReLU at conv1_2 (0.1), conv2_2 (0.1), conv3_4 (1), conv4_4 (1), conv5_4 (1); the
loss is ``Σ_l w_l · mean |φ_l(norm(SR)) − φ_l(norm(GT))|`` with GT features detached. Inputs are RGB in [0, 1]
(``range_norm`` false) normalised with the ImageNet mean/std. The weights file is read with
``torch.load(weights_only=True)``: loading it never runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdsr.metrics.backbones import VGG19_CFG, load_torchvision_features, vgg_conv_indices, vgg_layers

__all__ = [
    "VGG19Features",
    "PerceptualLoss",
    "build_perceptual",
    "PERCEPTUAL_NETWORKS",
    "VGG19_LAYER_WEIGHTS",
    "MissingWeightsError",
    "VGG19_FILE_HELP",
]

VGG19_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_FILE_HELP = (
    "the perceptual loss needs torchvision's ImageNet VGG19 weights file vgg19-dcbb9e9d.pth "
    "(https://download.pytorch.org/models/vgg19-dcbb9e9d.pth, or ~/.cache/torch/hub/checkpoints/ on a "
    "machine where torchvision downloaded it); pass it with "
    "--set loss.perceptual.weights=/path/to/vgg19-dcbb9e9d.pth, "
    "or choose the offline network with --set loss.perceptual.network=stlpips-vgg16 (a different network)"
)


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file the run needs is absent; the message names it and where to get it."""


class VGG19Features(nn.Module):
    """VGG19 conv stack returning pre-ReLU features: (B, 3, H, W) float -> {layer name: (B, C_l, h_l, w_l)}.

    ``layers`` are the names whose pre-ReLU outputs are returned; the stack stops after the deepest one.
    Module indices match torchvision's ``vgg19().features`` (conv, ReLU, …, pool), so its state dict loads.
    """

    def __init__(self, layers: tuple[str, ...] = tuple(VGG19_LAYER_WEIGHTS)) -> None:
        super().__init__()
        self.layers = tuple(layers)
        convs = vgg_conv_indices(VGG19_CFG)
        unknown = [n for n in self.layers if n not in convs]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {list(convs)}")
        last = max(convs[n] for n in self.layers)
        self.index_of: dict[str, int] = {n: i for n, i in convs.items() if i <= last}
        self.features = nn.Sequential(*vgg_layers(VGG19_CFG)[: last + 2])  # up to the deepest conv's ReLU

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised (B, 3, H, W) input -> dict of pre-ReLU conv outputs for ``self.layers``."""
        want = {self.index_of[n]: n for n in self.layers}
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.features):
            x = m(x)
            if i in want:
                out[want[i]] = x
                if len(out) == len(want):
                    break
        return out

    def load_torchvision(self, path: str | Path) -> None:
        """Load conv weights from a torchvision VGG19 state dict file (``features.<i>.*``; rest ignored)."""
        path = Path(path)
        if not path.is_file():
            raise MissingWeightsError(f"{path}: no such file; {VGG19_FILE_HELP}")
        missing = load_torchvision_features(self.features, path)
        if missing:
            raise ValueError(
                f"{path}: not a torchvision VGG19 state dict (missing {missing[:3]}…); {VGG19_FILE_HELP}"
            )


class PerceptualLoss(nn.Module):
    """Weighted L1 between pre-ReLU VGG19 features of SR and GT, both (B, 3, H, W) in [0, 1]; 0-dim output.

    The network is frozen (no parameter gradients); gradients flow to SR only, GT features are detached.
    """

    def __init__(self, features: VGG19Features, layer_weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.layer_weights = dict(layer_weights or VGG19_LAYER_WEIGHTS)
        self.net = features.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The feature network stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Σ_l w_l · mean |φ_l(SR) − φ_l(GT)| over the configured layers."""
        f_sr = self.net((sr - self.mean) / self.std)
        with torch.no_grad():
            f_gt = self.net((gt - self.mean) / self.std)
        total = sr.new_zeros(())
        for name, w in self.layer_weights.items():
            total = total + w * F.l1_loss(f_sr[name], f_gt[name].detach())
        return total


def build_vgg19_perceptual(weights: str | Path | None) -> PerceptualLoss:
    """The paper's perceptual loss from a torchvision VGG19 file; ``MissingWeightsError`` if it is absent."""
    if not weights:
        raise MissingWeightsError(f"loss.perceptual.weights is not set; {VGG19_FILE_HELP}")
    feats = VGG19Features()
    feats.load_torchvision(weights)
    return PerceptualLoss(feats)


PERCEPTUAL_NETWORKS = ("vgg19", "stlpips-vgg16")


class _STLPIPSLoss(nn.Module):
    """The offline perceptual loss: batch-mean ST-LPIPS distance (a different network from the paper's)."""

    def __init__(self) -> None:
        super().__init__()
        from kdsr.metrics.stlpips_net import STLPIPSVGG16

        self.net = STLPIPSVGG16()

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pair in [0, 1] -> 0-dim mean ST-LPIPS(SR, GT), GT side without gradient."""
        return self.net(sr, gt.detach()).mean()


def build_perceptual(network: str, weights: str | Path | None) -> nn.Module:
    """``loss.perceptual.{network, weights}`` -> the loss module; call it before any training work.

    ``vgg19`` (the paper's) needs torchvision's ImageNet file in ``weights`` and stops with
    ``MissingWeightsError`` naming it; ``stlpips-vgg16`` needs the ``[gan]`` extra and stops with
    ``STLPIPSUnavailable`` otherwise. Neither ever falls back to the other.
    """
    if network == "vgg19":
        return build_vgg19_perceptual(weights)
    if network == "stlpips-vgg16":
        if weights:
            raise ValueError(
                "loss.perceptual.weights is for network vgg19; stlpips-vgg16 reads its weights from the "
                "stlpips-pytorch package — unset one of the two"
            )
        return _STLPIPSLoss()
    raise ValueError(f"unknown loss.perceptual.network {network!r}; choose one of {PERCEPTUAL_NETWORKS}")
