"""`kdsr tsne`: t-SNE of the degradation representation D for one or more models (paper Fig. 6).

kdsr tsne --checkpoint iso-x4-teacher iso-x4-student --hr-dir data/B100 -o idr_tsne.png
"""

from __future__ import annotations

from pathlib import Path

from kdsr.commands._common import (
    add_runtime_flags,
    add_trust_checkpoint_flag,
    apply_threads,
    check_folder,
    check_output_folder,
    fail,
    load_model,
    positive_int,
    resolve_device,
)


def add_parser(subparsers) -> None:
    """Register `kdsr tsne` and its flags."""
    p = subparsers.add_parser(
        "tsne",
        help="t-SNE plot of the degradation representation D (one panel per model)",
        description="Crop HR images, degrade every crop with each isotropic blur sigma (Gaussian8 by "
        "default), encode with each model and embed D in 2-D with t-SNE. Clusters per sigma "
        "mean the encoder separates degradations.",
    )
    p.add_argument(
        "--checkpoint", nargs="+", required=True, help="one or more model files / checkpoints / shipped names"
    )
    p.add_argument("--label", nargs="+", help="panel titles, one per checkpoint (default: file names)")
    p.add_argument("--hr-dir", required=True, help="folder of HR images to crop (e.g. B100)")
    p.add_argument("-o", "--output", default="idr_tsne.png", help="PNG to write (default idr_tsne.png)")
    p.add_argument(
        "--sigmas", type=float, nargs="+", help="iso blur sigmas (default: Gaussian8 x4, 1.8 to 3.2 step 0.2)"
    )
    p.add_argument(
        "--crops",
        type=positive_int,
        default=40,
        help="HR crops; each is degraded with every sigma (default 40)",
    )
    p.add_argument("--lr-patch", type=positive_int, default=32, help="LR crop size in pixels (default 32)")
    p.add_argument("--feature", choices=("d", "dprime"), default="d", help="embed D (B,C) or D' (B,4C)")
    p.add_argument("--seed", type=int, default=0, help="seed for crops and t-SNE")
    p.add_argument(
        "--readout-dir",
        nargs="+",
        help="HR folder(s) for the read-out (default: --hr-dir): crops blurred with 8 sigmas in 0.2-4.0, "
        "ridge regression σ <- D, folds by image (no image in both fit and test); R² is printed per model",
    )
    p.add_argument(
        "--readout-realworld",
        action="store_true",
        help="read out the real-world degradation instead of σ: each crop degraded --readout-draws times by "
        "the Real-ESRGAN pipeline; R² of final JPEG quality, noise level and blur width of each stage",
    )
    p.add_argument(
        "--readout-draws", type=positive_int, default=3, help="real-world draws per crop (default 3)"
    )
    p.add_argument(
        "--readout-crops", type=positive_int, default=4, help="crops per image for the read-out (default 4)"
    )
    p.add_argument("--readout-json", help="also write {label: R²} of the read-out to this JSON file")
    add_runtime_flags(p, progress=False)
    add_trust_checkpoint_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Write the PNG; returns 0, or 2 (one line) on bad input or a checkpoint that cannot be loaded."""
    from kdsr.training.tsne import GAUSSIAN8_X4, plot_tsne

    apply_threads(args)
    check_folder(args.hr_dir, "--hr-dir")
    readout_dirs = args.readout_dir or [args.hr_dir]
    for folder in readout_dirs:
        check_folder(folder, "--readout-dir")
    check_output_folder(Path(args.output).parent, "-o")
    labels = args.label or [Path(c).stem if Path(c).suffix else c for c in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        return fail("tsne", "give one --label per --checkpoint")
    device = resolve_device(args.device)
    models = {}
    scales = set()
    for label, name in zip(labels, args.checkpoint, strict=True):
        model = load_model(name, device, trust=args.trust_checkpoint)
        models[label] = model.to(device).eval()
        scales.add(int(model.config["scale"]))
    if len(scales) != 1:
        return fail("tsne", f"the models have different scales {sorted(scales)}")
    out = plot_tsne(
        models,
        args.hr_dir,
        args.output,
        scale=scales.pop(),
        sigmas=args.sigmas or GAUSSIAN8_X4,
        crops=args.crops,
        lr_patch=args.lr_patch,
        feature=args.feature,
        seed=args.seed,
    )
    print(f"wrote {out}")
    from kdsr.training.readout_report import run_readout

    return run_readout(args, models, readout_dirs, int(model.config["scale"]))
