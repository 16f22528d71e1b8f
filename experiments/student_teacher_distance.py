"""Measured (issue 12): how close each student's D' is to its teacher's D' on held-out crops (KL and L1).

    python experiments/student_teacher_distance.py --teacher T --students S1 S2 [--labels L1 L2] [--json F]

Set14 crops (32x32 LR, seeded) blurred with 8 σ in 0.2-4.0; the teacher sees LR + HR, the students LR only.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import kdsr
from kdsr.training.losses import kd_loss
from kdsr.training.tsne import degrade_with_sigmas, sample_hr_crops


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--students", nargs="+", required=True)
    p.add_argument("--labels", nargs="+")
    p.add_argument("--hr-dir", default="../shared/data/Set14")
    p.add_argument("--crops", type=int, default=56)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    hr = sample_hr_crops(args.hr_dir, 4, 32, args.crops)
    lr, hr_rep, _ = degrade_with_sigmas(hr, 4, np.round(np.linspace(0.2, 4.0, 8), 3))
    _, t_dp = kdsr.load(args.teacher).eval().encode(lr, hr_rep)
    out = {}
    for label, path in zip(args.labels or args.students, args.students, strict=True):
        _, s_dp = kdsr.load(path).eval().encode(lr)
        out[label] = {"kl": kd_loss(s_dp, t_dp, "kl").item(), "l1": kd_loss(s_dp, t_dp, "l1").item()}
        print(f"{label:<16} KL(τ 0.15) {out[label]['kl']:.3e}   L1 {out[label]['l1']:.3e}")
    if args.json:
        from kdsr.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
