#!/usr/bin/env python
"""Bicubic baseline under Gaussian8 through kdsr's own pipeline, next to the paper's "Bicubic" row (Table 1).

Every HR image of each set is modcropped, degraded with the 8 Gaussian8 kernels (kdsr.data.benchmark_pairs:
21×21 blur, reflect pad, MATLAB bicubic ↓, 8-bit), upscaled back with MATLAB bicubic
(kdsr.degradations.imresize) and scored with kdsr.metrics (PSNR/SSIM on BT.601 studio-swing Y, 8-bit
quantised, ``scale`` pixels shaved).

The extra column "PSNR full-range luma" scores the same images on Y' = 0.299 R + 0.587 G + 0.114 B (0..255,
no 16..235 studio swing). It is a diagnostic only: errors on that scale are 255/219 times larger, i.e. PSNR is
20·log10(255/219) = 1.32 dB lower, which matches most of the gap to the paper's bicubic row (taken over
from IKC); whether IKC really used that luma is our inference, not documented.

    python scripts/bicubic_baseline.py                       # Set5 and Set14, x4, Gaussian8
    python scripts/bicubic_baseline.py --sets Set5 --kernels 2.6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kdsr import data, metrics  # noqa: E402
from kdsr import degradations as deg  # noqa: E402

# Table 1 of the paper, "Bicubic" row, x4 Gaussian8 (spec §8).
PAPER_X4 = {"Set5": (24.57, 0.7108), "Set14": (22.79, 0.6032), "B100": (23.29, 0.5786)}
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def full_range_luma_psnr(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> torch.Tensor:
    """(B,) PSNR on full-range luma 0.299R + 0.587G + 0.114B of 8-bit-quantised (B, 3, H, W) images."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).reshape(1, 3, 1, 1)
    ya = (metrics.quantize_8bit(sr) * w).sum(1)[:, crop:-crop, crop:-crop]
    yb = (metrics.quantize_8bit(hr) * w).sum(1)[:, crop:-crop, crop:-crop]
    return 10 * torch.log10(255.0**2 / (ya - yb).pow(2).mean(dim=(1, 2)))


def bicubic_baseline(hr_dir: str | Path, scale: int = 4, kernels="gaussian8") -> dict:
    """Mean bicubic PSNR-Y / SSIM-Y (and the full-range-luma PSNR) over images × kernels, plus per kernel."""
    pairs = data.benchmark_pairs(hr_dir, scale, kernels, progress=True)
    by_image = defaultdict(list)
    for pair in pairs:
        by_image[pair.params["image"]].append(pair)
    per_kernel = defaultdict(lambda: defaultdict(list))
    for group in by_image.values():  # the kernels of one image share a size: score them as one batch
        lr = torch.stack([p.lr for p in group]).double()
        hr = torch.stack([p.hr for p in group]).double()
        sr = deg.imresize(lr, scale)
        scores = {
            "psnr_y": metrics.psnr(sr, hr, crop_border=scale),
            "ssim_y": metrics.ssim(sr, hr, crop_border=scale),
            "psnr_full_range_luma": full_range_luma_psnr(sr, hr, scale),
        }
        for i, p in enumerate(group):
            label = (
                f"sigma={p.params['sigma']:g}"
                if p.params["kind"] == "iso"
                else f"k{p.params['kernel_index'] + 1}"
            )
            for name, values in scores.items():
                per_kernel[label][name].append(values[i].item())
    mean = {
        name: sum(sum(d[name]) for d in per_kernel.values()) / len(pairs)
        for name in next(iter(per_kernel.values()))
    }
    return {
        "pairs": len(pairs),
        "images": len(by_image),
        **mean,
        "per_kernel": {k: {n: sum(v) / len(v) for n, v in d.items()} for k, d in per_kernel.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="folder holding the sets")
    parser.add_argument(
        "--sets", nargs="+", default=["Set5", "Set14"], help="set folder names (default: Set5 Set14)"
    )
    parser.add_argument("--scale", type=int, default=4, help="scale factor (default: 4)")
    parser.add_argument(
        "--kernels", default="gaussian8", help="'gaussian8' or comma-separated sigmas (default: gaussian8)"
    )
    parser.add_argument("--per-kernel", action="store_true", help="also print one row per kernel")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    kernels = args.kernels if args.kernels == "gaussian8" else [float(s) for s in args.kernels.split(",")]
    torch.set_num_threads(min(4, torch.get_num_threads()))

    results = {}
    for name in args.sets:
        folder = args.data_root / name
        if not folder.is_dir():
            print(f"skipping {name}: {folder} not found", file=sys.stderr)
            continue
        results[name] = bicubic_baseline(folder, args.scale, kernels)

    print(f"\nBicubic x{args.scale}, kernels {args.kernels}, PSNR/SSIM on Y (BT.601), shave {args.scale}\n")
    print("| set | pairs | ours PSNR-Y / SSIM-Y | paper (Table 1) | ours - paper | PSNR full-range luma |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        paper = PAPER_X4.get(name) if args.scale == 4 and args.kernels == "gaussian8" else None
        paper_txt = f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "-"
        delta = f"{r['psnr_y'] - paper[0]:+.2f} dB / {r['ssim_y'] - paper[1]:+.4f}" if paper else "-"
        print(
            f"| {name} | {r['pairs']} | {r['psnr_y']:.2f} / {r['ssim_y']:.4f} | {paper_txt} | {delta} "
            f"| {r['psnr_full_range_luma']:.2f} |"
        )
        if args.per_kernel:
            for label, k in r["per_kernel"].items():
                print(
                    f"| {name} {label} | | {k['psnr_y']:.2f} / {k['ssim_y']:.4f} | | "
                    f"| {k['psnr_full_range_luma']:.2f} |"
                )
    print(f"\nstudio-swing offset 20*log10(255/219) = {20 * math.log10(255 / 219):.3f} dB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
