"""Can the KD-IDE encoder represent a real-world degradation? Train it on the targets directly (issue 20).

The encoder (teacher: LR + pixel-unshuffled HR; student: LR only) with the high-pass init and a linear head
is trained on MSE to the normalised ``realworld_targets`` alone, no SR loss, on B100 crops degraded by
``RealWorldDegradation``. Every ``--every`` steps the library's validation read-out (cross-validated ridge on
D, Set5 + Set14 crops, grouped by image) is printed. This is the ceiling the aux loss can reach with this
encoder, crop size and step count; if it stays low, the aux weight is not what limits the real-world D.

    python experiments/rw_supervised_ceiling.py --role teacher --steps 1500 --lr-patch 32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from rw_target_batches import add_arguments, target_batches

import kdsr
from kdsr.degradations.realworld_targets import (
    REALWORLD_TARGETS,
)
from kdsr.models.encoder import highpass_init_
from kdsr.training.readout import RealWorldReadout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["teacher", "student"], default="teacher")
    parser.add_argument("--variant", default="tiny")
    add_arguments(parser, steps=1500, every=250)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cls = kdsr.KDSRTeacher if args.role == "teacher" else kdsr.KDSRStudent
    model = cls(args.variant, 4, fused_kernels=False)
    highpass_init_(model.encoder)
    dim = 4 * int(model.config["n_feats"])
    head = torch.nn.Linear(dim, len(REALWORLD_TARGETS))
    params = list(model.encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    batches = target_batches(args, range(len(REALWORLD_TARGETS)))
    probe = RealWorldReadout(args.val_dirs, 4, crops_per_image=4, draws=3, lr_patch=args.lr_patch)
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        lr, hr, target = next(batches)
        _, dprime = model.encode(lr, hr) if args.role == "teacher" else model.encode(lr)
        loss = F.mse_loss(head(dprime), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % args.every == 0:
            res = probe.result(model, "dprime")
            model.train()
            mse = np.mean(losses[-args.every :])
            print(
                f"step {step} ({time.time() - start:.0f} s): train MSE {mse:.3f}; val {res.summary()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
