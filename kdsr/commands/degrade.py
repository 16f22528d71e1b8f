"""`kdsr degrade`: write a deterministic LR/HR benchmark set (PNGs + manifest.json) from HR images."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdsr.commands._common import (
    KERNELS_HELP,
    add_runtime_flags,
    apply_threads,
    fail,
    kernels_arg,
    kernels_label,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "degrade",
        help="make a deterministic LR/HR test set (Gaussian8 or anisotropic kernels) as PNGs + manifest",
        description=(
            "Degrade every HR image of a folder with a set of test kernels (21x21 Gaussian blur with "
            "reflect padding, MATLAB bicubic downscaling, optional Gaussian noise, 8-bit rounding; "
            "spec §6a). HR images are modcropped to the scale. Output: OUT/HR/<image>.png, "
            "OUT/LR/<image>_<kernel>.png and OUT/manifest.json listing every pair with its kernel "
            "parameters. The same inputs and seed give pixel-identical output on every run and machine."
        ),
    )
    p.add_argument("--hr-dir", required=True, type=Path, help="folder of HR images (PNG/JPEG/BMP/TIFF/WebP)")
    p.add_argument("--kernels", type=kernels_arg, default="gaussian8", help=KERNELS_HELP)
    p.add_argument(
        "--scale",
        type=int,
        default=4,
        help="downscaling factor; gaussian8 is defined for 2, 3, 4 (default: 4)",
    )
    p.add_argument(
        "--noise", type=float, default=0.0, help="Gaussian noise level in 8-bit units, e.g. 10 (default: 0)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the noise; each pair derives its own from it (default: 0)",
    )
    p.add_argument(
        "--realworld",
        action="store_true",
        help="instead of test kernels, one Real-ESRGAN second-order degradation per image (random blur, "
        "resize, noise, JPEG, sinc; kdsr.degradations.RealWorldDegradation), seeded by (--seed, image "
        "name); the parameters drawn for each image go into manifest.json. --kernels/--noise are ignored",
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created; files overwritten)")
    add_runtime_flags(p, device=False)  # the degradation runs on the CPU in float64 by design
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import benchmark_pairs, write_benchmark

    apply_threads(args)
    if args.realworld:
        return _run_realworld(args)
    try:
        pairs = benchmark_pairs(
            args.hr_dir,
            args.scale,
            args.kernels,
            noise=args.noise,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        return fail("degrade", str(exc))
    info = {
        "hr_dir": str(args.hr_dir),
        "kernels": kernels_label(args.kernels),
        "scale": args.scale,
        "noise": args.noise,
        "seed": args.seed,
        "pipeline": "blur 21x21 reflect -> MATLAB bicubic down -> noise -> 8-bit (kdsr.degradations.degrade)",
    }
    manifest = write_benchmark(pairs, args.out, info, progress=not args.no_progress)
    images = len({p.params["image"] for p in pairs})
    print(
        f"wrote {len(pairs)} LR images ({images} HR images x {len(pairs) // images} kernels) and {manifest}"
    )
    return 0


def _run_realworld(args: argparse.Namespace) -> int:
    from ..data import write_benchmark
    from ..data.realworld_benchmark import realworld_pairs

    try:
        pairs = realworld_pairs(args.hr_dir, args.scale, seed=args.seed, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        return fail("degrade", str(exc))
    info = {
        "hr_dir": str(args.hr_dir),
        "scale": args.scale,
        "seed": args.seed,
        "pipeline": "Real-ESRGAN second-order, float64 on CPU (kdsr.degradations.RealWorldDegradation)",
    }
    manifest = write_benchmark(pairs, args.out, info, progress=not args.no_progress)
    print(f"wrote {len(pairs)} real-world LR/HR pairs and {manifest}")
    return 0
