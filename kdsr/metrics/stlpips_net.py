"""The shift-tolerant LPIPS VGG16 network (ST-LPIPS, Ghildyal & Liu 2022) from the ``stlpips-pytorch`` wheel.

Offline stand-in for the paper's ImageNet VGG19 (perceptual loss) and a metric reported as ``st-lpips`` —
**never** as LPIPS: this network was trained from scratch on BAPPS, not ImageNet, so its scores are not
comparable to published LPIPS numbers and a GAN trained with it is not the paper's recipe.

Our own module with the wheel's layout: VGG16 convs (3×3, pad 1) + ReLU, and every 2×2 max-pool replaced by a
stride-1 2×2 max-pool followed by a [1 2 1]ᵀ[1 2 1]/16 blur with stride 2 after reflect padding 2 on each side
(the filter is read from the file). Features: the five ReLU outputs relu1_2 … relu5_3; the distance is the
LPIPS formula with the file's linear heads and input scaling. The weights file
``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth`` is found by path (``importlib.util.find_spec``) and
read with ``kdsr.safe_load.torch_load`` (no code runs); the package is never imported (it imports
torchvision and IPython). Install: ``pip install --no-deps stlpips-pytorch==0.0.2`` or
``pip install -e ".[gan]"``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import torch_load
from .backbones import VGG16_CFG, vgg_layers
from .lpips_net import lpips_distance

__all__ = ["STLPIPSVGG16", "stlpips_weights_path", "STLPIPSUnavailable", "STLPIPS_INSTALL"]

STLPIPS_INSTALL = 'the [gan] extra: pip install --no-deps stlpips-pytorch==0.0.2 (or pip install -e ".[gan]")'
_SLICE_ENDS = (4, 10, 18, 26, 34)  # module index ranges of slice1..slice5 in the wheel's file


class STLPIPSUnavailable(RuntimeError):
    """The ST-LPIPS weights are not installed; the message names the extra to install."""


def stlpips_weights_path() -> Path:
    """Path of ``vgg_shift_tolerant.pth`` inside the installed stlpips-pytorch, found without importing it."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise STLPIPSUnavailable(f"the offline network stlpips-vgg16 needs {STLPIPS_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"
    if not path.is_file():
        raise STLPIPSUnavailable(f"{path}: missing; reinstall {STLPIPS_INSTALL}")
    return path


class _BlurDown(nn.Module):
    """Reflect-pad 2, depthwise 3×3 blur (buffer ``filt``, (C, 1, 3, 3)), stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (a[:, None] * a[None, :] / 16.0).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class STLPIPSVGG16(nn.Module):
    """ST-LPIPS VGG16: ``features(x)`` -> 5 ReLU maps; ``forward(x, y)`` -> (B,) distance, inputs in [0, 1].

    Frozen (no parameter gradients) and differentiable in its inputs, so it also serves as a perceptual loss.
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        mods = vgg_layers(VGG16_CFG, pool=lambda c: [nn.MaxPool2d(2, 1), _BlurDown(c)])
        self.net = nn.Module()
        start = 0
        for k, end in enumerate(_SLICE_ENDS, 1):
            sl = nn.Sequential()
            for i in range(start, end):
                sl.add_module(str(i), mods[i])
            setattr(self.net, f"slice{k}", sl)
            start = end
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.ones(1, 3, 1, 1))
        for k, c in enumerate((64, 128, 256, 512, 512)):
            lin = nn.Module()
            lin.model = nn.Sequential(nn.Identity(), nn.Conv2d(c, 1, 1, bias=False))
            setattr(self, f"lin{k}", lin)
        path = Path(weights) if weights is not None else stlpips_weights_path()
        self.load_state_dict(torch_load(path), strict=True)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> STLPIPSVGG16:
        """Always stays in eval mode (a fixed network)."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] maps."""
        h = ((2.0 * x - 1.0) - self.scaling_layer.shift) / self.scaling_layer.scale
        out = []
        for k in range(1, 6):
            h = getattr(self.net, f"slice{k}")(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ST-LPIPS(x, y) for (B, 3, H, W) images in [0, 1] -> (B,), differentiable in x."""
        heads = [getattr(self, f"lin{k}").model[1].weight for k in range(5)]
        return lpips_distance(self.features(x), self.features(y), heads)
