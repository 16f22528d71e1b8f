"""Measured (issue 12): how peaked softmax(D'/τ) is per model, i.e. how much a KL KD loss at τ can see.

    python experiments/dprime_softmax_entropy.py --checkpoint iso-x4-teacher runs/small_iso_x4_teacher/last.pt
        [--temperatures 0.15 0.5 1 2] [--json F]

Set14 crops (32x32 LR, seeded) blurred with 8 σ in 0.2-4.0, as the σ read-out. For each model: mean |D'|, the
within-vector std of D' (the scale the temperature divides), and per τ the mean entropy of softmax(D'/τ) over
the 4C entries (nats; log(4C) is uniform) and its mean top-1 probability. Teachers see LR + HR, students LR.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

import kdsr
from kdsr.training.tsne import READOUT_SIGMAS, degrade_with_sigmas, encode_all, sample_hr_crops


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True, help="model files, checkpoints or shipped names")
    p.add_argument("--temperatures", nargs="+", type=float, default=[0.15, 0.5, 1.0, 2.0])
    p.add_argument("--hr-dir", default="../shared/data/Set14")
    p.add_argument("--crops", type=int, default=24, help="crops per image (default 24)")
    p.add_argument("--json", help="write {checkpoint: statistics} here")
    args = p.parse_args()
    torch.set_num_threads(1)
    hr = sample_hr_crops(args.hr_dir, 4, 32, args.crops)
    lr, hr_rep, _ = degrade_with_sigmas(hr, 4, READOUT_SIGMAS)
    out = {}
    for path in args.checkpoint:
        dprime = torch.from_numpy(encode_all(kdsr.load(path), lr, hr_rep, feature="dprime")).float()
        stats = {"mean_abs": dprime.abs().mean().item(), "within_std": dprime.std(1).mean().item(), "tau": {}}
        print(f"{path}: mean |D'| {stats['mean_abs']:.3f}, within-vector std {stats['within_std']:.3f}")
        for tau in args.temperatures:
            prob = torch.softmax(dprime / tau, dim=1)
            entropy = -(prob * prob.clamp_min(1e-30).log()).sum(1).mean().item()
            top1 = prob.max(1).values.mean().item()
            stats["tau"][str(tau)] = {"entropy": entropy, "top1": top1}
            uniform = math.log(dprime.shape[1])
            print(f"  τ {tau:<5g} entropy {entropy:.2f} of {uniform:.2f} nats, top-1 p {top1:.3f}")
        out[path] = stats
    if args.json:
        from kdsr.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
