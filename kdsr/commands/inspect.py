"""`kdsr inspect`: what degradation the model sees in each image, in the units of its calibration.

kdsr inspect photo.png scans/                       # blur σ ≈ 2.10 ± 0.15 (training range 0.2–4.0)
kdsr inspect photo.png --json --checkpoint runs/x/last.pt --calibration runs/x/last.calibration.safetensors

Exit code: 0 all read, 1 some image could not be read, 2 bad arguments / model / calibration.
"""

from __future__ import annotations

import json
import sys

from kdsr.commands._common import UsageError, add_runtime_flags, add_trust_checkpoint_flag, apply_threads


def add_parser(subparsers) -> None:
    """Register `kdsr inspect` and its flags."""
    p = subparsers.add_parser(
        "inspect",
        help="estimate each image's degradation (blur σ) with a calibrated student",
        description="Print the degradation a calibrated KDSR student estimates for each image (e.g. "
        "'blur σ ≈ 2.1 ± 0.15 (training range 0.2–4.0)'): the readout of its degradation vector D, with "
        "the calibration's held-out error, flagged when outside the training range. Exit code: 0 done, "
        "1 some image could not be read, 2 bad arguments / model / calibration.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IMAGE", help="image files, or folders (their .png/.jpg/.bmp)"
    )
    p.add_argument(
        "--checkpoint",
        default="iso-x4-student",
        metavar="PATH_OR_NAME",
        help="student model file or shipped name (default iso-x4-student)",
    )
    p.add_argument("--calibration", metavar="FILE", help="calibration file (default: beside the model)")
    p.add_argument("--json", action="store_true", help="print one JSON list (image, estimates) to stdout")
    add_runtime_flags(p)
    add_trust_checkpoint_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Inspect every image; 0 done, 1 some image failed, 2 bad model / calibration."""
    from tqdm import tqdm

    import kdsr
    from kdsr.commands._common import resolve_device, scan_images
    from kdsr.data.io import read_image
    from kdsr.steering import CalibrationError, estimate_degradation, load_calibration

    apply_threads(args)
    device = resolve_device(args.device)
    try:
        model = kdsr.load(args.checkpoint, map_location=device, trust_pickle=args.trust_checkpoint)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(model, kdsr.KDSRStudent):
        raise UsageError(f"{args.checkpoint} holds a {type(model).__name__}; inspect needs a student")
    try:
        calibration = load_calibration(model, args.calibration)
    except CalibrationError as exc:
        raise UsageError(str(exc)) from None
    files = scan_images(args.inputs)
    results, failed = [], 0
    for path in tqdm(files, desc="inspect", unit="img", disable=args.no_progress or len(files) < 2):
        try:
            estimate = estimate_degradation(model, read_image(path), calibration)
        except Exception as exc:  # noqa: BLE001 - report the file, continue with the others
            failed += 1
            tqdm.write(f"kdsr inspect: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        results.append({"image": str(path), **estimate.as_dict()})
        if not args.json:
            tqdm.write(f"{path}: {estimate}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failed else 0
