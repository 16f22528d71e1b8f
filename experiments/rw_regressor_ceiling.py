"""How well can *any* small CNN read the real-world targets from an LR crop? (issue 20)

A dedicated regressor -- not the KD-IDE encoder -- is trained on MSE to the normalised
``realworld_targets`` (jpeg, noise2 by default) of B100 crops degraded by ``RealWorldDegradation``. Every
``--every`` steps it is scored on held-out crops (Set5 + Set14, the library's ``RealWorldReadout`` probe
set) two ways:

- ``direct``: R² of its own prediction (1 - SSE/SST over all probe rows);
- ``ridge``: the library's cross-validated ridge R² (grouped by image) on its pooled penultimate features --
  the readout definition the issue's bar uses, applied to a network built only for this.

If this stays far below the bar, no encoder of this size trained this long reads the drawn parameters, and
the bar is the thing to question; if it clears it, the encoder and its training are what to fix.

    python experiments/rw_regressor_ceiling.py --steps 3000 --lr-patch 32 [--teacher] [--width 48]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from rw_target_batches import add_arguments, target_batches
from torch import nn

from kdsr.degradations.realworld_targets import (
    REALWORLD_TARGETS,
    TARGET_CENTER,
    TARGET_HALF_RANGE,
)
from kdsr.training.readout import RealWorldReadout, ridge_r2


class Regressor(nn.Module):
    """conv-BN-ReLU stack (two stride-2 stages), global mean + std pooling, linear head.

    lr (B, 3, p, p) [+ hr (B, 3, 4p, 4p) pixel-unshuffled to 48 channels when ``teacher``] -> (B, T).
    """

    def __init__(self, width: int, targets: int, teacher: bool):
        super().__init__()
        self.teacher = teacher
        c_in = 3 + (48 if teacher else 0)

        def block(c_i: int, c_o: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(c_i, c_o, 3, stride, 1, bias=False), nn.BatchNorm2d(c_o), nn.ReLU(inplace=True)]

        layers = block(c_in, width, 1) + block(width, width, 1) + block(width, 2 * width, 2)
        wide = 2 * width
        layers += block(wide, wide, 1) + block(wide, wide, 2) + block(wide, wide, 1)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width, targets)

    def features(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        x = lr
        if self.teacher:
            x = torch.cat([lr, F.pixel_unshuffle(hr, 4)], 1)
        f = self.body(x * 2 - 1)
        return torch.cat([f.mean((2, 3)), f.std((2, 3))], 1)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(lr, hr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["jpeg", "noise2"], choices=REALWORLD_TARGETS)
    parser.add_argument("--teacher", action="store_true", help="also give it the HR crop (as the KD teacher)")
    parser.add_argument("--width", type=int, default=48)
    add_arguments(parser, steps=3000, every=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cols = [REALWORLD_TARGETS.index(t) for t in args.targets]
    center = torch.tensor(TARGET_CENTER[cols], dtype=torch.float32)
    half = torch.tensor(TARGET_HALF_RANGE[cols], dtype=torch.float32)
    model = Regressor(args.width, len(cols), args.teacher)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    batches = target_batches(args, cols)
    probe = RealWorldReadout(args.val_dirs, 4, crops_per_image=4, draws=3, lr_patch=args.lr_patch)
    val_t = probe.targets[:, cols]
    print(f"probe {probe.lr.shape[0]} rows; targets {args.targets}", flush=True)
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        lr, hr, target = next(batches)
        loss = F.mse_loss(model(lr.float(), hr), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            model.eval()
            batches = list(zip(probe.lr.split(64), probe.hr.split(64), strict=True))
            with torch.no_grad():
                feats = torch.cat([model.features(lr_b, hr_b) for lr_b, hr_b in batches])
                pred = model.head(feats)
            model.train()
            pred = (pred * half + center).double().numpy()
            parts = []
            for j, name in enumerate(args.targets):
                y = val_t[:, j]
                direct = 1 - ((pred[:, j] - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
                ridge = ridge_r2(feats.double().numpy(), y, probe.groups)
                parts.append(f"{name} direct {direct:.3f} ridge {ridge:.3f}")
            mse = np.mean(losses[-args.every :])
            head = f"step {step} ({time.time() - start:.0f} s): train MSE {mse:.3f}; "
            print(head + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
