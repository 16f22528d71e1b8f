"""How big is the final JPEG's footprint next to the picture's own variation? (#20)

Seeded 128-px crops of ``--hr-dir`` go through ``RealWorldDegradation(scale=4)`` twice with the same generator
seed, so every draw is the same except the one under test: the final JPEG quality forced to ``--q-lo`` then
``--q-hi`` (and, for comparison, the stage-2 noise forced to the bottom then the top of its ranges). For each
pair it prints the mean |ΔLR| in 8-bit levels and the luma PSNR between the two LRs, and the shift of the
LR's log Laplacian std against that statistic's spread across crops (the picture's own variation), split by
the drawn final order: JPEG last (blocking on the LR grid) or JPEG before the final resize + sinc (smeared).

    python experiments/rw_jpeg_effect.py --hr-dir ../shared/data/B100 --images 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from kdsr.data.io import read_image
from kdsr.degradations.realworld import RealWorldDegradation

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _crops(folder: Path, images: int, per_image: int, size: int, seed: int) -> torch.Tensor:
    """(N, 3, size, size) float32 crops in [0, 1], `per_image` seeded crops of the first `images` files."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".bmp"})[:images]:
        img = read_image(path)
        h, w = img.shape[1:]
        for _ in range(per_image):
            i = int(torch.randint(0, h - size + 1, (1,), generator=gen))
            j = int(torch.randint(0, w - size + 1, (1,), generator=gen))
            out.append(img[:, i : i + size, j : j + size])
    return torch.stack(out)


def _log_highpass(lr: torch.Tensor) -> torch.Tensor:
    """(N,) log std of the luma Laplacian, 1-px border dropped."""
    y = (lr * LUMA).sum(1, keepdim=True)
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(y, lap).std((1, 2, 3)).add(1e-5).log()


def _pair(hr: torch.Tensor, seed: int, lo: dict, hi: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen_lo, gen_hi = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    lr_lo, params = RealWorldDegradation(scale=4, **lo)(hr, generator=gen_lo, return_params=True)
    lr_hi = RealWorldDegradation(scale=4, **hi)(hr, generator=gen_hi)
    return lr_lo, lr_hi, params.jpeg_first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hr-dir", type=Path, default=Path("../shared/data/B100"))
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--per-image", type=int, default=3)
    parser.add_argument("--q-lo", type=float, default=30.0)
    parser.add_argument("--q-hi", type=float, default=95.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hr = _crops(args.hr_dir, args.images, args.per_image, 128, args.seed)
    print(f"{len(hr)} crops of {args.hr_dir} (first {args.images} files, {args.per_image} each), LR 32 px")
    tests = {
        f"final JPEG q{args.q_lo:.0f} vs q{args.q_hi:.0f}": (
            {"jpeg_range2": (args.q_lo, args.q_lo)},
            {"jpeg_range2": (args.q_hi, args.q_hi)},
        ),
        "stage-2 noise bottom vs top": (
            {"noise_range2": (1.0, 1.0), "poisson_scale_range2": (0.05, 0.05)},
            {"noise_range2": (25.0, 25.0), "poisson_scale_range2": (2.5, 2.5)},
        ),
    }
    print(
        "| change | final order | crops | mean abs ΔLR (levels) | luma PSNR between (median) "
        "| Δ log HP std (mean) | spread of log HP std across crops |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (lo, hi) in tests.items():
        lr_lo, lr_hi, jpeg_first = _pair(hr, args.seed + 1, lo, hi)
        spread = _log_highpass(lr_hi).std().item()
        for label, mask in (("JPEG last", ~jpeg_first), ("JPEG, then resize + sinc", jpeg_first)):
            a, b = lr_lo[mask], lr_hi[mask]
            levels = (a - b).abs().mean().item() * 255
            mse = ((a - b) * LUMA).sum(1).pow(2).mean((1, 2)).clamp_min(1e-12)
            psnr = (10 * torch.log10(1 / mse)).median().item()
            shift = (_log_highpass(b) - _log_highpass(a)).mean().item()
            print(
                f"| {name} | {label} | {int(mask.sum())} | {levels:.2f} | {psnr:.1f} dB | {shift:+.2f} | "
                f"{spread:.2f} |"
            )


if __name__ == "__main__":
    main()
