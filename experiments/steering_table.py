"""Issue 22: regenerate docs/steering.md's measurements for the shipped classic student on Set14.

    OMP_NUM_THREADS=1 python experiments/steering_table.py [--crops 1] [--out docs/results/steering]

Set14 (held out: the calibration was made on B100) HR crops of 256 px (LR 64) are blurred with a true σ,
MATLAB-bicubic downscaled and 8-bit quantised, then
  1. table: super-resolved with their own D and with the calibration's D at each σ of a bank (PSNR-Y, dB);
  2. inspect: the estimated σ (kdsr.estimate_degradation) against the true σ on the grid 0.4..3.6, and
     --blur-sigma at the true σ / two grid steps (±0.8) away against blind;
  3. strength: X in 0.5..1.5 with the shipped definition (σ̂ -> X·σ̂ along the calibration curve) against
     scaling the pooled features linearly around the no-blur end of the curve, with the σ read from each D;
  4. a figure: one crop at five strengths, its estimate printed.
Writes results.json, table.md and strengths.png into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import kdsr
from kdsr.metrics import psnr
from kdsr.steering import estimate_degradation, load_calibration, resolve_degradation
from kdsr.steering.calibrate import degrade_setting, sample_crops

TABLE_ROWS = (0.8, 2.0, 3.2)
BANK = (0.2, 0.8, 1.4, 2.0, 2.6, 3.2, 3.8)
GRID = tuple(round(0.4 * k, 1) for k in range(1, 10))  # 0.4 .. 3.6
STRENGTHS = (0.5, 0.75, 1.0, 1.25, 1.5)


def score(model, lr, hr, degradation=None) -> float:
    """Mean PSNR-Y (4-px border) of kdsr.upscale over the crops."""
    return float(psnr(kdsr.upscale(model, lr, degradation=degradation), hr).mean())


def linear_pooled(model, cal, lr_one, x: float) -> torch.Tensor:
    """The alternative strength: P = P_cal(σ_min) + X·(P_own − P_cal(σ_min)), as D."""
    from kdsr.steering.steer import pooled_features, runner_of

    own = pooled_features(runner_of(model), lr_one)
    anchor = cal.interpolate("blur_sigma", cal.parameter("blur_sigma").low)
    return model.encoder.head((anchor + x * (own - anchor)).float())[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="iso-x4-student")
    ap.add_argument("--hr-dir", default="../shared/data/Set14")
    ap.add_argument("--crops", type=int, default=1, help="crops per Set14 image")
    ap.add_argument("--out", default="docs/results/steering")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    model = kdsr.load(args.model)
    cal = load_calibration(model)
    hr, _ = sample_crops(args.hr_dir, 256, args.crops, seed=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"model": args.model, "n_crops": len(hr), "crop": "256 px HR / 64 px LR", "threads": 1}

    def bank_d(sigma: float) -> torch.Tensor:
        return resolve_degradation(model, None, blur_sigma=min(sigma, cal.parameter("blur_sigma").high))

    with torch.no_grad():
        # 1. the table
        table = {}
        for true in TABLE_ROWS:
            lr = degrade_setting(hr, 4, true, seed=7)
            table[true] = {"own": score(model, lr, hr), **{b: score(model, lr, hr, bank_d(b)) for b in BANK}}
        res["table"] = {str(k): {str(b): v for b, v in row.items()} for k, row in table.items()}
        # 2. inspect error + blur-sigma control on the grid
        grid = {}
        for true in GRID:
            lr = degrade_setting(hr, 4, true, seed=11)
            est = [estimate_degradation(model, x, cal).blur_sigma for x in lr]
            row = {
                "estimates": est,
                "blind": score(model, lr, hr),
                "at_true": score(model, lr, hr, bank_d(true)),
            }
            for name, other in (("minus_2_steps", true - 0.8), ("plus_2_steps", true + 0.8)):
                if 0.2 <= other <= 4.0 + 1e-9:
                    row[name] = score(model, lr, hr, bank_d(other))
            grid[str(true)] = row
        res["grid"] = grid
        errors = np.concatenate([np.abs(np.asarray(r["estimates"]) - float(t)) for t, r in grid.items()])
        res["estimate_median_abs_error"] = float(np.median(errors))
        res["estimate_mean_abs_error"] = float(errors.mean())
        # 3. strength: the shipped definition against linear scaling of the pooled features, at true σ 2.0
        lr = degrade_setting(hr, 4, 2.0, seed=13)
        strength = {}
        for x in STRENGTHS:
            shipped = [resolve_degradation(model, one, strength=x) for one in lr]
            linear = [linear_pooled(model, cal, one[None], x) for one in lr]
            for name, ds in (("sigma_shift", shipped), ("linear_pooled", linear)):
                ps, sig = [], []
                for one, h, d in zip(lr, hr, ds, strict=True):
                    ps.append(score(model, one[None], h[None], d))
                    d_used = d if d is not None else model.encode(one[None])[0]
                    sig.append(float(cal.read(d_used)[0, 0]))
                strength.setdefault(name, {})[str(x)] = {
                    "psnr": float(np.mean(ps)),
                    "read_sigma": float(np.mean(sig)),
                }
        res["strength"] = strength
        (out / "results.json").write_text(json.dumps(res, indent=1))  # in case the figure fails
        (out / "table.md").write_text(markdown(res))
        # 4. figure: one crop at five strengths
        figure(model, cal, hr[0:1], out / "strengths.png", res)
    res["seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "table.md").write_text(markdown(res))
    print(markdown(res))


def figure(model, cal, hr, path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lr = degrade_setting(hr, 4, 2.0, seed=17)
    est = estimate_degradation(model, lr[0], cal)
    fig, axes = plt.subplots(1, len(STRENGTHS) + 1, figsize=(3 * (len(STRENGTHS) + 1), 3.4))
    panels = [("HR (true σ 2.0)", hr[0])]
    for x in STRENGTHS:
        sr = kdsr.upscale(model, lr, degradation=resolve_degradation(model, lr[0], strength=x))
        panels.append((f"strength {x:g}: {float(psnr(sr, hr).mean()):.2f} dB", sr[0]))
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"kdsr inspect: {est}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    res["figure_estimate"] = str(est)


def cell(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "–"


def markdown(res: dict) -> str:
    lines = [
        "| true σ | own D | " + " | ".join(f"{b:g}" for b in BANK) + " |",
        "|---" * (len(BANK) + 2) + "|",
    ]
    for true, row in res["table"].items():
        best = max(BANK, key=lambda b: row[str(b)])
        cells = [f"**{row[str(b)]:.2f}**" if b == best else f"{row[str(b)]:.2f}" for b in BANK]
        lines.append(f"| {true} | {row['own']:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| true σ | median estimate | blind | --blur-sigma true | true − 0.8 | true + 0.8 |",
        "|---|---|---|---|---|---|",
    ]
    for true, row in res["grid"].items():
        lines.append(
            f"| {true} | {np.median(row['estimates']):.2f} | {row['blind']:.2f} | {row['at_true']:.2f} | "
            f"{cell(row, 'minus_2_steps')} | {cell(row, 'plus_2_steps')} |"
        )
    lines += [
        "",
        f"estimate |σ̂ − σ|: median {res['estimate_median_abs_error']:.3f}, "
        f"mean {res['estimate_mean_abs_error']:.3f}",
    ]
    lines += [
        "",
        "| strength X | σ-shift PSNR | σ-shift read σ | linear PSNR | linear read σ |",
        "|---|---|---|---|---|",
    ]
    for x in STRENGTHS:
        a, b = res["strength"]["sigma_shift"][str(x)], res["strength"]["linear_pooled"][str(x)]
        lines.append(
            f"| {x:g} | {a['psnr']:.2f} | {a['read_sigma']:.2f} | {b['psnr']:.2f} | {b['read_sigma']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
