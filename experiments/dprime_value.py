"""Measured (issue 12): what the degradation representation D is worth to each model's SR network, in dB.

    python experiments/dprime_value.py --teacher T --students S1 S2 [--labels L1 L2] [--json F]

On the Gaussian8 x4 pairs of --hr-dir (Y PSNR, 4-px border, as `kdsr eval`), each SR network is run with:
  own       its own D (the model as evaluated);
  mean D    one constant D, its own D averaged over every pair (no degradation information at all);
  teacher D (students only) the teacher's D of the same pair, i.e. a student whose distillation were perfect.
own - mean D is how much the blur information in D adds; teacher D - own is what better KD could still buy.
"""

from __future__ import annotations

import argparse
import json

import torch

import kdsr
from kdsr.data.benchmark import benchmark_pairs
from kdsr.metrics import psnr


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--students", nargs="*", default=[])
    p.add_argument("--labels", nargs="*")
    p.add_argument("--hr-dir", default="../shared/data/Set14")
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    pairs = [(p[1][None].float(), p[2][None].float()) for p in benchmark_pairs(args.hr_dir, 4, "gaussian8")]
    teacher = kdsr.load(args.teacher).eval()
    teacher_d = [teacher.encode(lr, hr)[0] for lr, hr in pairs]

    def score(model, ds) -> float:
        vals = []
        for (lr, hr), d in zip(pairs, ds, strict=True):
            sr = model.sr_net(lr, d).float().clamp(0, 1)
            hr_crop = hr[..., : sr.shape[-2], : sr.shape[-1]]
            vals.append(float(psnr(sr, hr_crop, crop_border=4, y_channel=True)))
        return sum(vals) / len(vals)

    def mean_of(ds):
        mean = torch.cat(ds).mean(0, keepdim=True)
        return [mean] * len(ds)

    out = {"teacher": {"own": score(teacher, teacher_d), "mean D": score(teacher, mean_of(teacher_d))}}
    for label, path in zip(args.labels or args.students, args.students, strict=True):
        student = kdsr.load(path).eval()
        own = [student.encode(lr)[0] for lr, _ in pairs]
        out[label] = {
            "own": score(student, own),
            "mean D": score(student, mean_of(own)),
            "teacher D": score(student, teacher_d),
        }
    for label, row in out.items():
        cells = "  ".join(f"{k} {v:.3f}" for k, v in row.items())
        print(f"{label:<12} {cells}   (own - mean D {row['own'] - row['mean D']:+.3f} dB)")
    if args.json:
        from kdsr.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
