"""VGG and AlexNet feature stacks in torchvision's layout: the backbones of LPIPS, ST-LPIPS, the VGG19 loss.

Module ``i`` of a list built here is module ``i`` of torchvision's ``vgg16().features`` /
``vgg19().features`` / ``alexnet().features`` (conv, ReLU, …, max-pool), so ``nn.Sequential(*layers)`` loads
a torchvision state dict by key ``features.<i>.weight/bias`` (``load_torchvision_features``). Callers cut the
list after the deepest layer they read. Used by ``kdsr.metrics.lpips_net`` (VGG16, AlexNet),
``kdsr.metrics.stlpips_net`` (VGG16 with blurred pools) and ``kdsr.training.perceptual`` (VGG19). Inputs
are (B, 3, H, W) float.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from ..safe_load import torch_load

__all__ = [
    "VGG16_CFG",
    "VGG19_CFG",
    "ALEXNET_CFG",
    "vgg_layers",
    "vgg_conv_indices",
    "alexnet_layers",
    "load_torchvision_features",
]

# out_channels per 3×3 conv (each followed by a ReLU); "M" is a pool (torchvision: 2×2 max-pool, stride 2).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
             512, 512, 512, 512, "M", 512, 512, 512, 512, "M")  # fmt: skip
# (out_channels, kernel, stride, padding) per conv (each followed by a ReLU); "M" is a 3×3 max-pool, stride 2.
ALEXNET_CFG = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M")


def _max_pool_2x2(channels: int) -> list[nn.Module]:
    return [nn.MaxPool2d(2, 2)]


def vgg_layers(
    cfg: Sequence[int | str], pool: Callable[[int], list[nn.Module]] = _max_pool_2x2
) -> list[nn.Module]:
    """Modules of a VGG ``features`` stack: Conv2d(3×3, pad 1) + ReLU per int of ``cfg``, ``pool(C)`` per "M".

    ``pool`` gets the channel count C at that point and returns the module(s) standing for one pool (default
    torchvision's single 2×2 max-pool; a pool of several modules shifts the later indices).
    """
    mods: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            mods += pool(cin)
        else:
            mods += [nn.Conv2d(cin, int(v), 3, 1, 1), nn.ReLU()]
            cin = int(v)
    return mods


def vgg_conv_indices(cfg: Sequence[int | str]) -> dict[str, int]:
    """``{"conv<block>_<n>": module index}`` of every conv in ``vgg_layers(cfg)`` (blocks end at each "M")."""
    out: dict[str, int] = {}
    block, n, index = 1, 0, 0
    for v in cfg:
        if v == "M":
            block, n, index = block + 1, 0, index + 1
        else:
            n += 1
            out[f"conv{block}_{n}"] = index
            index += 2
    return out


def alexnet_layers() -> list[nn.Module]:
    """Modules of torchvision's ``alexnet().features``: Conv2d + ReLU per conv of ``ALEXNET_CFG``, pools."""
    mods: list[nn.Module] = []
    cin = 3
    for c in ALEXNET_CFG:
        if c == "M":
            mods.append(nn.MaxPool2d(3, 2))
            continue
        cout, k, s, p = c
        mods += [nn.Conv2d(cin, cout, k, s, p), nn.ReLU()]
        cin = cout
    return mods


def load_torchvision_features(features: nn.Module, path: str | Path) -> list[str]:
    """Load ``features.<i>.*`` of a torchvision state dict file into ``features`` (the stack, keys ``<i>.*``).

    The file is read with ``kdsr.safe_load.torch_load`` (no code runs); other keys (``classifier.*``, deeper
    layers) are ignored. Returns ``[]`` once loaded, else the sorted torchvision keys the file lacks (nothing
    is loaded).
    """
    state = torch_load(Path(path))
    own = features.state_dict()
    picked = {k: state[f"features.{k}"] for k in own if f"features.{k}" in state}
    missing = sorted(f"features.{k}" for k in own if k not in picked)
    if not missing:
        features.load_state_dict(picked)
    return missing
