"""`kdsr eval`: Y-channel PSNR/SSIM of a model (or bicubic) on benchmark folders with synthetic kernels.

kdsr eval --checkpoint runs/iso_x4_M_student/best.pt --hr-dir data/Set5 --kernels gaussian8 --scale 4
kdsr eval --checkpoint iso-x4-student --hr-dir data/Set5 data/Set14 --json results.json
kdsr eval --checkpoint bicubic --hr-dir data/Set5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdsr.atomic import atomic_write_text
from kdsr.commands._common import (
    KERNELS_HELP,
    UsageError,
    add_runtime_flags,
    add_trust_checkpoint_flag,
    apply_threads,
    check_folder,
    check_output_folder,
    fail,
    kernels_arg,
    kernels_label,
    load_model,
    positive_int,
    resolve_device,
)


def add_parser(subparsers) -> None:
    """Register `kdsr eval` and its flags."""
    p = subparsers.add_parser(
        "eval",
        help="PSNR/SSIM of a checkpoint on benchmark HR folders (Gaussian8 etc.)",
        description="Degrade each HR image of each folder with the chosen kernels (21x21 blur, MATLAB "
        "bicubic down, 8-bit), super-resolve, and report PSNR/SSIM on the Y channel with a "
        "`scale`-pixel border (the classic KDSR protocol). "
        "Teachers also see the HR image (an upper bound, not blind SR).",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="model file, training checkpoint (last.pt/best.pt), shipped weights name (e.g. "
        "iso-x4-student), "
        "or 'bicubic' for the MATLAB-bicubic baseline",
    )
    p.add_argument(
        "--hr-dir", nargs="+", required=True, help="one or more folders of HR images (e.g. Set5 Set14)"
    )
    p.add_argument(
        "--lr-dir",
        help="paired-folder mode: score the LR images of this folder against the --hr-dir image of the same "
        "name (or the name before '_', as `kdsr degrade` writes); no synthetic degradation",
    )
    p.add_argument("--kernels", type=kernels_arg, default="gaussian8", help=KERNELS_HELP)
    p.add_argument("--scale", type=int, default=4, help="SR scale; must match the model (default 4)")
    p.add_argument("--noise", type=float, default=0.0, help="noise level in [0,255] units added to the LR")
    p.add_argument(
        "--max-images", type=positive_int, metavar="N", help="use only the first N images of each folder"
    )
    p.add_argument(
        "--fused-kernels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fused IDR-DDC kernels on/off (default: as saved in the checkpoint)",
    )
    p.add_argument(
        "--lpips",
        metavar="BACKBONE",
        help="also report LPIPS (VGG) using this torchvision vgg16-397923af.pth file and lpips's heads "
        "(pip install --no-deps lpips==0.1.4)",
    )
    p.add_argument(
        "--st-lpips",
        action="store_true",
        help="also report ST-LPIPS (offline, not comparable to LPIPS; needs the [gan] extra)",
    )
    p.add_argument(
        "--json", dest="json_out", help="also write the results (means, per kernel, per image) here"
    )
    add_runtime_flags(p)
    add_trust_checkpoint_flag(p)
    p.set_defaults(func=run)


def check_small_images(folder: Path, scale: int, synthetic: bool = True) -> None:
    """UsageError naming the first image of `folder` too small to evaluate at `scale` (headers only): LR
    MIN_LR_SIZE pixels a side, an 11-pixel SSIM window inside the `scale` border, and (synthetic) the 21x21
    test kernels inside the image cropped to a multiple of the scale."""
    from PIL import Image

    from kdsr.data.io import list_images
    from kdsr.models.checks import MIN_LR_SIZE

    need = max(MIN_LR_SIZE * scale, 11 + 2 * scale, -(-21 // scale) * scale if synthetic else 0)
    for path in list_images(folder):
        try:
            with Image.open(path) as img:
                width, height = img.size
        except OSError:
            continue  # not an image: reported, with its name, when it is read
        if min(width, height) < need:
            raise UsageError(
                f"{path} is {width}x{height} pixels; eval at x{scale} needs images of at least {need}x{need} "
                "(remove it or use a larger image)"
            )


def run(args) -> int:
    """Evaluate and print a table; returns 0, or 2 (one line) on bad input or an unreadable checkpoint."""
    import kdsr
    from kdsr.training.evaluate import BICUBIC, evaluate_model, limit_images

    apply_threads(args)
    device = resolve_device(args.device)
    for folder in args.hr_dir:
        if not Path(folder).is_dir():  # image-less folders are named after the model and metric checks
            raise UsageError(f"--hr-dir {folder} is not a folder; give a folder of HR images")
    if args.lr_dir is not None:
        check_folder(args.lr_dir, "--lr-dir")
        if len(args.hr_dir) != 1:
            return fail("eval", "--lr-dir takes exactly one --hr-dir (its HR partner folder)")
    if args.json_out:
        check_output_folder(Path(args.json_out).parent, "--json")
    if args.checkpoint == BICUBIC:
        model = BICUBIC
    else:
        model = load_model(
            args.checkpoint, device, trust=args.trust_checkpoint, fused_kernels=args.fused_kernels
        )
        model_scale = int(getattr(model, "config", {}).get("scale", args.scale))
        if model_scale != args.scale:
            return fail("eval", f"the model is x{model_scale} but --scale is {args.scale}")
        model = model.to(device).eval()
    extra = {}
    try:
        if args.lpips:
            from kdsr.metrics.lpips_net import LPIPS

            extra["lpips"] = LPIPS("vgg", backbone=args.lpips).to(device)
        if args.st_lpips:
            from kdsr.metrics.stlpips_net import STLPIPSVGG16

            extra["st-lpips"] = STLPIPSVGG16().to(device)
    except RuntimeError as exc:  # LPIPSUnavailable / STLPIPSUnavailable: a missing file or extra
        return fail("eval", str(exc))
    for folder in args.hr_dir:
        check_folder(folder, "--hr-dir")
        check_small_images(Path(folder), args.scale, args.lr_dir is None)
    kernels = kernels_label(args.kernels)
    results = {}
    for folder in args.hr_dir:
        try:
            if args.lr_dir is not None:
                from kdsr.data.realworld_benchmark import paired_folder_pairs

                pairs = paired_folder_pairs(args.lr_dir, folder, args.scale)
            else:
                pairs = kdsr.data.benchmark_pairs(
                    folder, args.scale, kernels=args.kernels, noise=args.noise, progress=not args.no_progress
                )
        except (FileNotFoundError, ValueError) as exc:  # e.g. no images, gaussian8 at an unknown scale
            return fail("eval", f"{folder}: {exc}")
        pairs = limit_images(pairs, args.max_images)
        name = Path(folder).name
        results[name] = evaluate_model(
            model, pairs, args.scale, device, progress=not args.no_progress, desc=name, extra_metrics=extra
        )
    setting = f"paired LR {args.lr_dir}" if args.lr_dir else f"kernels={kernels}  noise={args.noise}"
    print(f"{args.checkpoint}  x{args.scale}  {setting}")
    print(f"{'dataset':<12}{'pairs':>7}{'PSNR':>9}{'SSIM':>9}" + "".join(f"{m.upper():>10}" for m in extra))
    for name, res in results.items():
        cells = "".join(f"{res[m]:>10.4f}" for m in extra)
        print(f"{name:<12}{res['count']:>7}{res['psnr']:>9.3f}{res['ssim']:>9.4f}{cells}")
    if args.json_out:
        payload = {
            "checkpoint": args.checkpoint,
            "scale": args.scale,
            "kernels": kernels,
            "noise": args.noise,
            "results": results,
        }
        atomic_write_text(args.json_out, json.dumps(payload, indent=2))
    return 0
