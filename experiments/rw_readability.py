"""How readable is a real-world degradation from one training-size crop at all? (issue 20)

Before asking an encoder to put JPEG quality and noise level into D, measure what simple, hand-written
statistics of the same crops can tell: if a ridge regression on them reads the targets, an encoder of the
right shape can too; if not, the crop size or the target is the limit, not the training.

    python experiments/rw_readability.py --hr ../shared/data/Set5 ../shared/data/Set14 \
        --model ~/kdsr-runs/rw_teacher_aux01/last.pt --lr-patch 16 32 48

Features (all per crop, on the luma of the LR, and for the teacher the LR minus the bicubic-downscaled HR):
  * energy of a 3x3 Laplacian (noise, blur), in 4 quantiles;
  * blockiness: mean |horizontal/vertical difference| across 8-px column/row boundaries over that inside
    blocks, at each of the 8 grid phases (the crop's JPEG grid phase is unknown in training);
  * the residual LR - bicubic(HR) std and its Laplacian energy (what a teacher, which sees HR, can use).
Readout: the library's cross-validated ridge R² (GroupKFold by source image), as the val log reports it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from kdsr.degradations.realworld_targets import REALWORLD_TARGETS
from kdsr.training.readout import RealWorldReadout, encode_all, ridge_r2

LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) BT.601 luma."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def laplace_stats(y: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) -> (N,5): log mean energy and log quantiles (10/50/90/99 %) of |Laplacian|."""
    lap = F.conv2d(y, LAPLACE).abs().flatten(1)
    q = torch.quantile(lap, torch.tensor([0.1, 0.5, 0.9, 0.99]), dim=1).T
    return torch.log(torch.cat([lap.pow(2).mean(1, keepdim=True), q], 1) + 1e-6)


def blockiness(y: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) -> (N,2): max and mean over the 8 grid phases of boundary/interior |diff| ratio (h+v)."""
    dh = (y[..., :, 1:] - y[..., :, :-1]).abs().mean(2).squeeze(1)  # (N, W-1): column boundaries
    dv = (y[..., 1:, :] - y[..., :-1, :]).abs().mean(3).squeeze(1)  # (N, H-1)
    ratios = []
    for phase in range(8):
        cols = torch.arange(phase, dh.shape[1], 8)
        rows = torch.arange(phase, dv.shape[1], 8)
        edge = dh[:, cols].mean(1) + dv[:, rows].mean(1)
        inside = dh.mean(1) + dv.mean(1)
        ratios.append(edge / (inside + 1e-6))
    r = torch.stack(ratios, 1)
    return torch.stack([r.max(1).values, r.mean(1)], 1)


def handmade(lr: torch.Tensor, hr: torch.Tensor, scale: int, teacher: bool) -> np.ndarray:
    """(N, F) float64 hand-written statistics of each crop (LR only, or LR and residual for a teacher)."""
    y = luma(lr)
    feats = [laplace_stats(y), blockiness(y)]
    if teacher:
        down = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
        res = luma(lr) - luma(down)
        feats += [torch.log(res.flatten(1).std(1, keepdim=True) + 1e-6), laplace_stats(res), blockiness(res)]
    return torch.cat(feats, 1).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hr", nargs="+", required=True, help="HR folders to crop (the model never trained on)"
    )
    parser.add_argument("--model", default=None, help="optional checkpoint: also read its D and D'")
    parser.add_argument("--lr-patch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--crops", type=int, default=4, help="crops per image")
    parser.add_argument("--draws", type=int, default=3, help="degradation draws per crop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = None
    if args.model:
        import kdsr

        model = kdsr.load(args.model)
    header = f"{'source':<28}" + "".join(f"{k:>8}" for k in REALWORLD_TARGETS)
    for patch in args.lr_patch:
        probe = RealWorldReadout(args.hr, 4, crops_per_image=args.crops, draws=args.draws, lr_patch=patch)
        print(f"\nLR patch {patch}: {probe.lr.shape[0]} crops; CV ridge R² (GroupKFold by image)")
        print(header)
        rows = {
            "LR statistics": handmade(probe.lr, probe.hr, 4, teacher=False),
            "LR + residual statistics": handmade(probe.lr, probe.hr, 4, teacher=True),
        }
        if model is not None:
            rows["model D"] = encode_all(model, probe.lr, probe.hr, "d")
            rows["model D'"] = encode_all(model, probe.lr, probe.hr, "dprime")
        for name, feats in rows.items():
            r2 = [ridge_r2(feats, probe.targets[:, i], probe.groups) for i in range(len(REALWORLD_TARGETS))]
            print(f"{name:<28}" + "".join(f"{v:8.2f}" for v in r2))


if __name__ == "__main__":
    main()
