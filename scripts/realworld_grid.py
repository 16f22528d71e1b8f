"""The README grid: a 128-px view of a baboon crop (top-left) and 8 LR samples of RealWorldDegradation
(seed 0, 2x nearest) -> docs/realworld_lr_samples.png.  Run: PYTHONPATH=. python scripts/realworld_grid.py"""

import numpy as np
import torch
from PIL import Image

from kdsr.data.io import read_image
from kdsr.degradations import RealWorldDegradation

torch.set_num_threads(1)
img = read_image("../shared/data/Set14/baboon.png")
hr = img[:, :256, :256][None].expand(8, -1, -1, -1).contiguous()
lr = RealWorldDegradation(scale=4)(hr, generator=torch.Generator().manual_seed(0))
up = torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest")  # 128 px tiles
tiles = [hr[0, :, ::2, ::2]] + [t for t in up]
row1 = torch.cat(tiles[:3], -1)
row2 = torch.cat(tiles[3:6], -1)
row3 = torch.cat(tiles[6:9], -1)
grid = torch.cat([row1, row2, row3], -2)
Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
    "docs/realworld_lr_samples.png", optimize=True
)
print(grid.shape)
