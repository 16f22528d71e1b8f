"""D from a tile budget: the degradation estimate of a large image from evenly spread tiles covering a
fraction of it, instead of running the encoder over every pixel.

    d = estimate_from_budget(student, lr, fraction=0.1, tile=64)   # ~10 % of the pixels
    d_full, _ = student.encode(lr)                                  # whole image

KD-IDE ends in a global average pool, so D is the MLP head of the mean of per-pixel features. A budget
replaces that mean by the mean over the cores of `n` tiles laid on an even grid; each tile is encoded with
`encoder.receptive_radius` pixels of context, so its core's features are exactly the whole-image ones there.
`fraction >= 1` (or a grid that would cover the image) gives the whole-image estimate.
"""

from __future__ import annotations

import math

import torch

from .kdsr_model import KDSRStudent


def budget_tiles(height: int, width: int, fraction: float, tile: int) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) of tiles of `tile` px covering ~`fraction` of a height x width image, on an even
    grid (rows : cols ~ height : width, tile centres evenly spaced, no overlap when they fit)."""
    if not 0 < fraction or tile < 1:
        raise ValueError(f"fraction must be > 0 and tile >= 1, got {fraction!r}, {tile!r}")
    th, tw = min(tile, height), min(tile, width)
    wanted = max(1, math.ceil(fraction * height * width / (th * tw)))
    rows = max(1, min(height // th, round(math.sqrt(wanted * height * tw / (width * th)))))
    cols = max(1, min(width // tw, math.ceil(wanted / rows)))

    def starts(length: int, size: int, n: int) -> list[int]:
        return (
            [round((i + 0.5) * length / n - size / 2) for i in range(n)] if n > 1 else [(length - size) // 2]
        )

    return [
        (min(max(top, 0), height - th), min(max(left, 0), width - tw), th, tw)
        for top in starts(height, th, rows)
        for left in starts(width, tw, cols)
    ]


def covered_fraction(height: int, width: int, tiles: list[tuple[int, int, int, int]]) -> float:
    """Share of the image's pixels inside at least one tile."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for top, left, h, w in tiles:
        mask[top : top + h, left : left + w] = True
    return float(mask.float().mean())


def estimate_from_budget(
    model: KDSRStudent, image: torch.Tensor, fraction: float, tile: int = 64
) -> torch.Tensor:
    """D (B, C) of `image` (B, 3, H, W) in [0, 1] from tiles covering ~`fraction` of it (module doc).

    Runs under the caller's grad mode; returns the model's dtype on its device. fraction >= 1, or a tile
    grid covering >= 90 % of the image, returns the whole-image estimate `model.encode(image)[0]`.
    """
    _, _, H, W = image.shape
    tiles = budget_tiles(H, W, fraction, tile)
    if fraction >= 1 or covered_fraction(H, W, tiles) >= 0.9:
        return model.encode(image)[0]
    encoder, radius = model.encoder, model.encoder.receptive_radius
    param = model.sr_net.head.weight
    total, pixels = None, 0
    for top, left, h, w in tiles:
        y0, x0 = max(top - radius, 0), max(left - radius, 0)
        y1, x1 = min(top + h + radius, H), min(left + w + radius, W)
        window = image[:, :, y0:y1, x0:x1].to(param.device, param.dtype)
        feats = encoder.features(model._in_layout(window))
        core = feats[:, :, top - y0 : top - y0 + h, left - x0 : left - x0 + w]
        part = core.double().sum(dim=(2, 3))
        total = part if total is None else total + part
        pixels += h * w
    return encoder.head((total / pixels).to(param.dtype))[0]
