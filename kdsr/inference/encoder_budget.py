"""The tile layout of a budgeted degradation estimate: evenly spread tiles covering a fraction of an image.

    tiles = budget_tiles(H, W, fraction=0.1, tile=128)              # [(top, left, h, w), ...]
    d = encode_image(student, lr, max_pixels=2**20)   # reads ~1 MP of a larger image (tiling)

KD-IDE ends in a global average pool, so D is the MLP head of the mean of per-pixel features. A budget
replaces that mean by the mean over the cores of `n` tiles laid on an even grid; each tile is encoded with
`encoder.receptive_radius` pixels of context, so its core's features are exactly the whole-image ones there.
`encoder_windows` (kdsr.inference.tiling) uses the budget only for images with more pixels than it.
"""

from __future__ import annotations

import math


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
