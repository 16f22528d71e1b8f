"""How little of an image the degradation estimate needs: D from a tile budget vs whole-image D.

    OMP_NUM_THREADS=2 python experiments/encoder_budget.py --sets Set14 B100 --fractions 0.05 0.1 0.25 0.5

For each HR image of the sets (/work/shared/data by default), x4 LR = isotropic Gaussian blur (sigma per
--sigmas) + MATLAB bicubic + 8-bit rounding; the shipped student upscales it with whole-image D and with D
from evenly spread --tile px tiles covering each fraction (kdsr.inference.tiling.encode_image). Reported per
set, fraction: mean and worst PSNR change (Y, border 4) against whole-image D, and the relative D distance
|D_budget - D| / |D|. A budget "loses nothing" when its mean PSNR change is >= -0.01 dB.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import kdsr
from kdsr.data.io import list_images, modcrop, read_image
from kdsr.degradations.kernels import isotropic_gaussian_kernel
from kdsr.degradations.pipeline import degrade
from kdsr.inference.tiling import encode_image
from kdsr.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/work/shared/data")
    parser.add_argument("--sets", nargs="+", default=["Set14", "B100"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 0.5])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[1.2, 3.0])
    parser.add_argument("--tile", type=int, default=16, help="budget tile side in LR px (default 16)")
    parser.add_argument("--model", default="iso-x4-student")
    parser.add_argument("--limit", type=int, default=None, help="first N images per set")
    parser.add_argument(
        "--mosaic",
        type=int,
        default=0,
        help="K > 0: instead of single images, tile K x K images of the set (each centre-cropped to 320x480, "
        "portraits turned) into one large HR image per group: a stand-in for a large photo",
    )
    args = parser.parse_args()
    model = kdsr.load(args.model)
    model.validate_inputs = False
    print(f"model {args.model}, tile {args.tile} LR px, sigmas {args.sigmas}")
    print("| set | LR (median) | fraction | mean dPSNR dB | worst dPSNR dB | mean |dD|/|D| | max |dD|/|D| |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.sets:
        paths = list_images(Path(args.data) / name)[: args.limit]
        rows = {f: {"dpsnr": [], "dd": []} for f in args.fractions}
        sizes = []
        for hr in images(paths, args.mosaic):
            hr = hr.unsqueeze(0).double()
            for sigma in args.sigmas:
                lr = degrade(hr, isotropic_gaussian_kernel(sigma, dtype=torch.float64), 4).float()
                sizes.append(lr.shape[-2] * lr.shape[-1])
                with torch.no_grad():
                    lr_in = model._in_layout(lr)
                    d = model.encode(lr)[0]
                    base = float(psnr(model.sr_net(lr_in, d).clamp(0, 1), hr.float()))
                    for f in args.fractions:
                        px = int(f * lr.shape[-2] * lr.shape[-1])
                        db = encode_image(model, lr, max_pixels=px, budget_tile=args.tile)
                        rows[f]["dpsnr"].append(
                            float(psnr(model.sr_net(lr_in, db).clamp(0, 1), hr.float())) - base
                        )
                        rows[f]["dd"].append(float((db - d).norm() / d.norm()))
        side = int(statistics.median(sizes) ** 0.5)
        for f, r in rows.items():
            print(
                f"| {name} | ~{side}x{side} | {f:.0%} | {statistics.mean(r['dpsnr']):+.4f} | "
                f"{min(r['dpsnr']):+.4f} | {statistics.mean(r['dd']):.4f} | {max(r['dd']):.4f} |",
                flush=True,
            )


def centre(img: torch.Tensor, h: int = 320, w: int = 480) -> torch.Tensor:
    """(3, H, W) -> (3, h, w): portraits turned to landscape, then the centre crop."""
    if img.shape[1] > img.shape[2]:
        img = img.transpose(1, 2)
    top, left = (img.shape[1] - h) // 2, (img.shape[2] - w) // 2
    return img[:, top : top + h, left : left + w]


def images(paths: list, mosaic: int):
    """Each image (modcropped to 4), or with mosaic K the K x K mosaics of consecutive images."""
    if mosaic <= 0:
        for path in paths:
            yield modcrop(read_image(path), 4)
        return
    group = mosaic * mosaic
    for start in range(0, len(paths) - group + 1, group):
        tiles = [centre(read_image(p)) for p in paths[start : start + group]]
        rows = [torch.cat(tiles[r * mosaic : (r + 1) * mosaic], dim=2) for r in range(mosaic)]
        yield torch.cat(rows, dim=1)


if __name__ == "__main__":
    main()
