"""Shared by the real-world target experiments (rw_supervised_ceiling.py, rw_regressor_ceiling.py): their
common flags and the stream of (lr, hr, normalised targets) batches from B100 crops through
``RealWorldDegradation(scale=4)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

import torch

import kdsr
from kdsr.degradations.realworld import RealWorldDegradation
from kdsr.degradations.realworld_targets import TARGET_CENTER, TARGET_HALF_RANGE, realworld_targets


def add_arguments(parser: argparse.ArgumentParser, steps: int, every: int) -> None:
    """--steps --batch --lr-patch --lr --every --train-dir --val-dirs --seed."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-patch", type=int, default=32, help="LR crop side (HR = 4x)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=every)
    parser.add_argument("--train-dir", default="../shared/data/B100")
    parser.add_argument("--val-dirs", nargs="+", default=["../shared/data/Set5", "../shared/data/Set14"])
    parser.add_argument("--seed", type=int, default=0)


def target_batches(args: argparse.Namespace, cols: Sequence[int]) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless (lr (B,3,p,p), hr (B,3,4p,4p), target (B, len(cols))) float32 batches; target columns `cols` of
    ``realworld_targets``, scaled to about [-1, 1] by TARGET_CENTER / TARGET_HALF_RANGE; seeded by args.seed.
    """
    cols = list(cols)
    center = torch.tensor(TARGET_CENTER[cols], dtype=torch.float32)
    half = torch.tensor(TARGET_HALF_RANGE[cols], dtype=torch.float32)
    train = kdsr.data.HRImageDataset(
        args.train_dir, 4, args.lr_patch, augment=True, cache="ram", progress=False
    )
    deg = RealWorldDegradation(scale=4)
    gen = torch.Generator().manual_seed(args.seed)
    while True:
        idx = torch.randint(0, len(train), (args.batch,), generator=gen).tolist()
        hr = torch.stack([train[i] for i in idx]).float()
        with torch.no_grad():
            lr, p = deg(hr, generator=gen, return_params=True)
        yield lr, hr, (torch.from_numpy(realworld_targets(p, deg)[:, cols]).float() - center) / half
