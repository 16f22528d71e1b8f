"""`kdsr prepare-subimages`: cut large HR images into overlapping sub-images (BasicSR's extract_subimages)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdsr.commands._common import EXIT_CODES_HELP, EXIT_FAILED, add_runtime_flags, fail

EPILOG = (
    "Example (DF2K as BasicSR prepares DIV2K): kdsr prepare-subimages datasets/DF2K/HR datasets/DF2K/HR_sub "
    "--crop 480 --step 240, then train with --set data.train_dir=datasets/DF2K/HR_sub. "
    + EXIT_CODES_HELP
    + "; here 2 also covers crop/step out of range and OUT_DIR = IN_DIR, 1 an image that does not decode "
    "or a tile that cannot be written"
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-subimages",
        help="cut large HR images into overlapping crop x crop PNG sub-images (BasicSR style)",
        description=(
            "Cut every image directly inside IN_DIR into overlapping CROP x CROP tiles, one every STEP "
            "pixels, plus one flush with the bottom/right edge when more than THRESH_SIZE pixels would be "
            "left uncovered (BasicSR's scripts/data_preparation/extract_subimages.py; DIV2K: crop 480, step "
            "240, thresh-size 0). Tile k of name.ext is written as OUT_DIR/name_s<k>.png (k from 001, row by "
            "row), atomically, with the samples unchanged (8/16 bits, alpha, grayscale and ICC profile kept; "
            "EXIF orientation applied as training applies it). Images smaller than CROP are skipped and "
            "listed. Training on the tiles decodes 480x480 PNGs instead of whole 2K images (data.cache: disk "
            "avoids the decode entirely)."
        ),
        epilog=EPILOG,
    )
    p.add_argument("in_dir", metavar="IN_DIR", type=Path, help="folder of HR images (PNG/JPEG/BMP/TIFF/WebP)")
    p.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="folder for the tiles (created; same names overwritten)"
    )
    p.add_argument("--crop", type=int, default=480, help="tile side in pixels (default: 480)")
    p.add_argument(
        "--step", type=int, default=240, help="distance between tile starts in pixels (default: 240)"
    )
    p.add_argument(
        "--thresh-size",
        type=int,
        default=0,
        help="add an edge-flush last tile only when more than this many pixels would stay uncovered "
        "(default: 0, always cover the whole image)",
    )
    add_runtime_flags(p, device=False, threads=False)  # image I/O only: no device, no torch threads
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.subimages import extract_subimages

    try:
        report = extract_subimages(
            args.in_dir,
            args.out_dir,
            crop=args.crop,
            step=args.step,
            thresh_size=args.thresh_size,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        return fail("prepare-subimages", str(exc))
    except OSError as exc:
        return fail("prepare-subimages", str(exc), EXIT_FAILED)
    skipped = ""
    if report.skipped:
        names = ", ".join(report.skipped[:5]) + (", ..." if len(report.skipped) > 5 else "")
        skipped = f"; skipped {len(report.skipped)} smaller than {args.crop}x{args.crop}: {names}"
    print(f"wrote {report.tiles} sub-images of {report.images} images to {args.out_dir}{skipped}")
    return 0
