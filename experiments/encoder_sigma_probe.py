"""Measured (issue 12): whether an encoder can learn to read the blur σ at all when σ is its direct target.

Trains an encoder plus a linear head (MSE to σ scaled to [-1, 1]) on the teacher's input (LR ⊕ unshuffled HR)
of per-sample iso-blurred B100 crops, and prints the running MSE (1/3 = predicting the mean). Also prints the
correlation of two hand-made features with σ on the same crops, as a yardstick. docs/reproduction.md has the
numbers.

    python experiments/encoder_sigma_probe.py --encoder kdide --init torch --steps 400 --lr 5e-4
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import kdsr
from kdsr.data.dataset import HRImageDataset
from kdsr.degradations import ClassicDegradation
from kdsr.models.encoder import highpass_init_, kaiming_init_


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--encoder", choices=("kdide", "cnn2"), default="kdide", help="tiny KD-IDE or a 2-conv CNN"
    )
    p.add_argument(
        "--init", choices=("torch", "kaiming", "highpass"), default="torch", help="KD-IDE initialisation"
    )
    p.add_argument("--bn-head", action="store_true", help="BatchNorm1d before the linear head")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr-patch", type=int, default=32)
    p.add_argument("--data", default="../shared/data/B100")
    p.add_argument("--center", action="store_true", help="subtract each input's per-channel spatial mean")
    p.add_argument("--brightness", action="store_true", help="sanity check: regress the LR mean instead of σ")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = kdsr.KDSRTeacher(variant="tiny")
    if args.encoder == "cnn2":
        enc: nn.Module = nn.Sequential(
            nn.Conv2d(teacher.encoder_in_channels(4), 32, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        features, dim = enc, 64
    else:
        enc = teacher.encoder
        if args.init != "torch":
            (kaiming_init_ if args.init == "kaiming" else highpass_init_)(enc)
        features, dim = (lambda x: enc(x)[1]), 4 * 32
    head = nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, 1)) if args.bn_head else nn.Linear(dim, 1)
    data = HRImageDataset(args.data, 4, args.lr_patch, augment=True, cache=True)
    degrade = ClassicDegradation(scale=4, kind="iso", sigma=(0.2, 4.0), noise=(0.0, 0.0), per_sample=True)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], args.lr)
    g = torch.Generator().manual_seed(0)
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    hist, sig, f_lap, f_diff, t0 = [], [], [], [], time.time()
    for step in range(args.steps):
        hr = torch.stack(
            [data[i] for i in torch.randint(len(data), (args.batch,), generator=g).tolist()]
        ).float()
        lr, params = degrade(hr, generator=g)
        target = (lr.mean((1, 2, 3)) - 0.45) / 0.15 if args.brightness else (params["sigma"] - 2.1) / 1.9
        x = teacher.teacher_input(lr, hr)
        x = x - x.mean((2, 3), keepdim=True) if args.center else x
        loss = F.mse_loss(head(features(x)).squeeze(1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(loss.item())
        if step < 20:  # the yardstick features on the first 20 batches
            pooled = F.avg_pool2d(hr, 4)
            energy = F.conv2d(lr, lap, groups=3).abs().mean((1, 2, 3))
            f_lap.append(energy / (F.conv2d(pooled, lap, groups=3).abs().mean((1, 2, 3)) + 1e-6))
            f_diff.append((lr - pooled).abs().mean((1, 2, 3)))
            sig.append(params["sigma"])
        if step == 19:
            s = torch.cat(sig)
            print(f"yardstick r(σ, |lap LR|/|lap pool(HR)|) = {corr(s, torch.cat(f_lap)):.3f}, "
                  f"r(σ, |LR - pool(HR)|) = {corr(s, torch.cat(f_diff)):.3f}")  # fmt: skip
        if (step + 1) % 100 == 0:
            print(
                f"step {step + 1}: MSE {sum(hist[-100:]) / 100:.4f} (1/3: the mean) {time.time() - t0:.0f} s"
            )


if __name__ == "__main__":
    main()
