"""KD-IDE: the knowledge-distillation implicit degradation estimator (spec kdsr.md §2).

Teacher and student share this module; they differ only in the first conv's input channels (3 for the
student's LR image, 3 + 3*s^2 for the teacher's LR ⊕ PixelUnshuffle_s(HR)).
"""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.1


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 conv, stride 1, 'same' zero padding, with bias (every conv in KDSR)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)


class ResBlock(nn.Module):
    """conv3x3 -> LeakyReLU(0.1) -> conv3x3, plus the block input. No activation after the add, no scaling."""

    def __init__(self, n_feats: int):
        super().__init__()
        self.conv1 = conv3x3(n_feats, n_feats)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.conv2 = conv3x3(n_feats, n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        return self.conv2(self.act(self.conv1(x))) + x


class KDIDE(nn.Module):
    """Implicit degradation estimator: image -> (D (B, C), D' (B, 4C)).

    Layers: conv(Cin->C)+LReLU, n_res ResBlocks, conv(C->2C)+LReLU, conv(2C->2C)+LReLU, conv(2C->4C)+LReLU,
    global average pool, mlp [Linear(4C,4C)+LReLU]x2 -> D', compress Linear(4C,C)+LReLU -> D.

    The forward pass is split into `features` (per-pixel, before the pool) and `head` (after the pool) so a
    caller can pool the features of a big image tile by tile and still get exactly the whole-image D
    (see `kdsr.upscale`); `receptive_radius` says how much context a tile needs for that.
    """

    def __init__(self, in_channels: int, n_feats: int, n_res: int):
        super().__init__()
        if in_channels < 1 or n_feats < 1 or n_res < 0:
            raise ValueError(f"KDIDE: bad sizes in_channels={in_channels}, n_feats={n_feats}, n_res={n_res}")
        C = n_feats
        self.in_channels = in_channels
        self.n_feats = n_feats
        self.n_res = n_res
        act = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.body = nn.Sequential(
            conv3x3(in_channels, C),
            act,
            *[ResBlock(C) for _ in range(n_res)],
            conv3x3(C, 2 * C),
            act,
            conv3x3(2 * C, 2 * C),
            act,
            conv3x3(2 * C, 4 * C),
            act,
        )
        self.mlp = nn.Sequential(nn.Linear(4 * C, 4 * C), act, nn.Linear(4 * C, 4 * C), act)
        self.compress = nn.Sequential(nn.Linear(4 * C, C), act)

    @property
    def receptive_radius(self) -> int:
        """Context pixels per side that make a tile's features equal the whole image's (one per 3x3 conv)."""
        return 1 + 2 * self.n_res + 3

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in_channels, H, W) float -> per-pixel features (B, 4C, H, W), before the global pool."""
        return self.body(x)

    def head(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pooled (B, 4C) spatial mean of `features` -> (D (B, C), D' (B, 4C))."""
        d_prime = self.mlp(pooled)
        return self.compress(d_prime), d_prime

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, in_channels, H, W) float -> (D (B, C), D' (B, 4C)); D' is the distilled vector."""
        return self.head(self.features(x).mean(dim=(2, 3)))


def kaiming_init_(encoder: nn.Module) -> nn.Module:
    """Re-initialise every conv / linear of `encoder` in place: He-normal for LeakyReLU(0.1), zero biases.

    PyTorch's default init shrinks the signal layer by layer while the biases do not shrink, so a fresh
    KD-IDE's D' is nearly the same vector for every input (its spread across 64 B100 crops is ~2 % of its
    magnitude); with this init ~37 % (docs/reproduction.md). The forward is unchanged. Returns `encoder`.
    """
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return encoder


LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def highpass_init_(encoder: KDIDE, gain: float = 30.0) -> KDIDE:
    """kaiming_init_, then the first conv's first channels become ±gain·Laplacian detectors, in place.

    For each colour: +lap and -lap of the LR channel and, for a teacher (3 + 3s² inputs), of the colour's s²
    pixel-unshuffled HR channels averaged (the HR image box-downsampled), so that LeakyReLU after the conv
    gives |high-pass| maps whose pooled ratio tracks the blur (docs/reproduction.md: with these detectors a
    supervised probe reads σ in a few hundred steps; from a random init it does not in 1,800). Returns
    `encoder`.
    """
    kaiming_init_(encoder)
    conv = encoder.body[0]
    n_hr = (conv.in_channels - 3) // 3  # s² HR sub-pixels per colour; 0 for a student
    needed = 2 * 3 * (2 if n_hr else 1)
    if conv.out_channels < needed:
        raise ValueError(
            f"highpass_init_ needs >= {needed} encoder features, the encoder has {conv.out_channels}"
        )
    lap = torch.tensor(LAPLACIAN, dtype=conv.weight.dtype, device=conv.weight.device) * gain
    with torch.no_grad():
        conv.weight[:needed].zero_()
        for c in range(3):
            for k, sign in enumerate((1.0, -1.0)):
                conv.weight[2 * c + k, c] = sign * lap
                if n_hr:
                    hr = slice(3 + c * n_hr, 3 + (c + 1) * n_hr)
                    conv.weight[6 + 2 * c + k, hr] = sign * lap / n_hr
    return encoder
