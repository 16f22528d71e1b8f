"""Drew (issue 9) docs/realworld_lr_samples.png: 8 RealWorldDegradation LR samples of one crop, seed 0.

The top-left tile is a 128-px view of the image's top-left 256x256 crop; the other eight are LR samples
(64 px) shown 2x nearest.

    python experiments/realworld_grid.py --image ../shared/data/Set14/baboon.png
"""

from __future__ import annotations

import argparse

import torch

from kdsr.data.io import read_image, write_image
from kdsr.degradations import RealWorldDegradation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="RGB image, at least 256x256 (the figure: Set14 baboon)")
    p.add_argument("-o", "--out", default="docs/realworld_lr_samples.png", help="PNG to write")
    args = p.parse_args()
    torch.set_num_threads(1)
    img = read_image(args.image)
    hr = img[:, :256, :256][None].expand(8, -1, -1, -1).contiguous()
    lr = RealWorldDegradation(scale=4)(hr, generator=torch.Generator().manual_seed(0))
    up = torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest")  # 128 px tiles
    tiles = [hr[0, :, ::2, ::2], *up]
    grid = torch.cat([torch.cat(tiles[row : row + 3], -1) for row in (0, 3, 6)], -2)
    write_image(args.out, grid)
    print(f"{args.out}: {tuple(grid.shape)}")


if __name__ == "__main__":
    main()
