"""No picture to mask it: how much of the LR's high-frequency energy do the recorded targets explain? (#20)

A smooth 8-bit horizontal ramp (0.2 -> 0.8, 128 x 128 HR: almost no Laplacian energy of its own) goes through
``RealWorldDegradation(scale=4)`` ``--draws`` times. For each LR, log std of its Laplacian (border cropped) is
correlated with each of ``REALWORLD_TARGETS``; a least-squares fit on all five gives the share they explain.
What they leave is the unrecorded choices of the second-order pipeline (grey/colour noise, resize modes, sinc,
the order of the final JPEG and resize).

    python experiments/rw_ramp_energy.py --draws 300
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from kdsr.degradations.realworld import RealWorldDegradation
from kdsr.degradations.realworld_targets import REALWORLD_TARGETS, realworld_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    deg = RealWorldDegradation(scale=4)
    gen = torch.Generator().manual_seed(args.seed)
    ramp = torch.linspace(0.2, 0.8, 128)
    hr = (ramp.view(1, 1, 1, -1) * torch.ones(args.draws, 3, 128, 1)).mul(255).round().div(255)
    lr, params = deg(hr, generator=gen, return_params=True)
    targets = realworld_targets(params, deg)
    laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    high = F.conv2d(lr.float(), laplacian, groups=3)[..., 2:-2, 2:-2]
    energy = np.log(high.std((1, 2, 3)).double().numpy() + 1e-5)
    for j, name in enumerate(REALWORLD_TARGETS):
        print(f"corr(log high-pass std, {name}) = {np.corrcoef(energy, targets[:, j])[0, 1]:+.2f}")
    design = np.c_[targets, np.ones(len(targets))]
    beta, *_ = np.linalg.lstsq(design, energy, rcond=None)
    residual = energy - design @ beta
    print(f"R² of log high-pass std from all five targets: {1 - residual.var() / energy.var():.2f}")


if __name__ == "__main__":
    main()
