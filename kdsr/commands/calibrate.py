"""`kdsr calibrate`: measure what a model's degradation vector D means, for `kdsr inspect` and steering.

kdsr calibrate --checkpoint iso-x4-student --hr-dir B100/ -o iso-x4-student.calibration.safetensors
kdsr calibrate --checkpoint runs/x/last.pt --hr-dir B100/ --config small_iso_x4_student \
    -o runs/x/last.calibration.safetensors

HR crops of the training images are degraded over the model's training range (blur σ, and noise levels when
the model saw noise), encoded, and the mean D per setting plus a ridge readout D -> parameter are written to
a small safetensors file (kdsr.steering.calibration). `kdsr.load` finds `<model>.calibration.safetensors`
beside the weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from kdsr.commands._common import UsageError, add_runtime_flags, add_trust_checkpoint_flag, apply_threads

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def add_parser(subparsers) -> None:
    """Register `kdsr calibrate` and its flags."""
    p = subparsers.add_parser(
        "calibrate",
        help="measure a model's degradation readout (for `kdsr inspect`, --blur-sigma, --strength)",
        description="Degrade HR crops over the model's training degradation range, record the mean "
        "degradation vector D per setting and a ridge readout D -> blur σ (held-out error by GroupKFold over "
        "images), and write them with a fingerprint of the weights to a safetensors file.",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH_OR_NAME", help="model file or shipped name")
    p.add_argument("--hr-dir", required=True, metavar="DIR", help="HR images (the training set, e.g. B100)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="calibration file to write")
    p.add_argument(
        "--config",
        metavar="NAME_OR_YAML",
        help="training config whose degradation block gives the range (sig_min, sig_max, noise); "
        "default: blur σ 0.2-4.0, no noise (the shipped classic models)",
    )
    p.add_argument("--sigma-step", type=float, default=0.2, metavar="S", help="σ grid step (default 0.2)")
    p.add_argument(
        "--noise-levels",
        metavar="N1,N2,...",
        help="noise levels (8-bit units) to calibrate over; default: 0, or 4 levels up to the config's noise",
    )
    p.add_argument("--crops-per-image", type=int, default=2, metavar="N", help="HR crops per image (2)")
    p.add_argument("--lr-patch", type=int, default=48, metavar="P", help="LR crop size (default 48)")
    p.add_argument("--seed", type=int, default=0, help="crop / noise seed (default 0)")
    add_runtime_flags(p)
    add_trust_checkpoint_flag(p)
    p.set_defaults(func=run)


def degradation_range(config: str | None) -> tuple[float, float, float]:
    """(sig_min, sig_max, noise) of a training config's `degradation` block (classic iso models only)."""
    if config is None:
        return 0.2, 4.0, 0.0
    import yaml

    path = Path(config)
    if not path.is_file():
        path = CONFIG_DIR / f"{config}.yaml"
    if not path.is_file():
        raise UsageError(f"--config {config}: no such file or shipped config (see kdsr/configs/)")
    try:
        block = (yaml.safe_load(path.read_text()) or {}).get("degradation", {})
        if block.get("kind", "iso") != "iso":
            raise UsageError(
                f"--config {config}: degradation kind {block.get('kind')!r}; calibrate supports classic "
                "isotropic models so far"
            )
        return (
            float(block.get("sig_min", 0.2)),
            float(block.get("sig_max", 4.0)),
            float(block.get("noise", 0)),
        )
    except (yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
        raise UsageError(f"--config {config}: cannot read its degradation block ({exc})") from None


def run(args) -> int:
    """Calibrate and write the file; 0 done, 2 bad input."""
    import torch
    from tqdm import tqdm

    import kdsr
    from kdsr.commands._common import resolve_device
    from kdsr.steering.calibrate import calibrate

    apply_threads(args)
    low, high, noise = degradation_range(args.config)
    if not (args.sigma_step > 0 and low > 0 and high >= low):
        raise UsageError(
            f"need 0 < sig_min <= sig_max and --sigma-step > 0 (got {low}, {high}, {args.sigma_step})"
        )
    if args.crops_per_image < 1 or args.lr_patch < 8:
        raise UsageError("--crops-per-image must be >= 1 and --lr-patch >= 8")
    sigmas = np.round(np.arange(low, high + 1e-9, args.sigma_step), 4)
    try:
        noises = (
            [float(v) for v in args.noise_levels.split(",") if v.strip()]
            if args.noise_levels
            else ([0.0] if noise == 0 else list(np.round(np.linspace(0, noise, 4), 3)))
        )
    except ValueError:
        raise UsageError(
            f"--noise-levels must be comma-separated numbers, got {args.noise_levels!r}"
        ) from None
    if not Path(args.hr_dir).is_dir():
        raise UsageError(f"--hr-dir {args.hr_dir} is not a folder of HR images")
    device = resolve_device(args.device)
    try:
        model = kdsr.load(args.checkpoint, map_location=device, trust_pickle=args.trust_checkpoint)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    bar = tqdm(total=len(sigmas) * len(noises), desc="calibrate", unit="setting", disable=args.no_progress)
    try:
        with torch.no_grad():
            cal = calibrate(
                model,
                args.hr_dir,
                sigmas,
                noises,
                args.crops_per_image,
                args.lr_patch,
                args.seed,
                progress=lambda done, _total: bar.update(done - bar.n),
                provenance={"checkpoint": Path(str(args.checkpoint)).name, "command": "kdsr calibrate"},
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    cal.save(args.output)
    for p in cal.parameters:
        print(
            f"{p.label}: range {p.low:g}-{p.high:g}, held-out error {p.heldout_mae:.3f} (mean) / "
            f"{p.heldout_median_ae:.3f} (median), {cal.config['n_crops']} crops of {cal.config['n_images']} "
            f"images; wrote {args.output}",
            file=sys.stderr,
        )
    return 0
