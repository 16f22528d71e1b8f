"""The flags of `kdsr upscale` and the parsers of their values (the command itself: kdsr.commands.upscale)."""

from __future__ import annotations

import argparse

from kdsr.commands._common import EXIT_CODES_HELP, UsageError, add_runtime_flags, add_trust_checkpoint_flag
from kdsr.data.io import IMAGE_EXTENSIONS, JPEG_QUALITY
from kdsr.inference.catalog import DEFAULT_MODEL, DEFAULT_REASON
from kdsr.inference.pixels import RESIZE_FILTER
from kdsr.inference.tiling import ENCODER_PIXELS

METADATA_NOTE = (
    "EXIF orientation is applied to the pixels (the result is upright, with no orientation tag); the ICC "
    "colour profile is kept; other EXIF metadata (camera, date, GPS) is dropped"
)


def add_upscale_parser(subparsers, run) -> None:
    """Register `kdsr upscale`, its flags and `run` (the command's body, kdsr.commands.upscale.run)."""
    p = subparsers.add_parser(
        "upscale",
        help="super-resolve image files with a KDSR student (default model for photos included)",
        description="Super-resolve images with a KDSR student. Grayscale stays grayscale, alpha is upscaled "
        "separately (bicubic), 16-bit PNGs stay 16-bit; " + METADATA_NOTE + ". Large images run in "
        "overlapping tiles blended without seams, all restored under ONE degradation estimate of the whole "
        "image, sized so the peak memory stays under --max-memory. Progress shows two stages, "
        "'estimating degradation' and 'restoring tiles', with the image's ETA. " + DEFAULT_REASON + ".",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=f"image files, or folders (their {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        "--checkpoint",
        dest="checkpoint",
        default=None,
        metavar="NAME_OR_PATH",
        help=f"a shipped model name (`kdsr models`) or a student file (model.save / a training checkpoint); "
        f"default: {DEFAULT_MODEL} (photos). --checkpoint is the same flag",
    )
    source.add_argument(
        "--onnx",
        metavar="FILE",
        help="run an exported student (`kdsr export --format onnx -o FILE`) with onnxruntime on the CPU",
    )
    p.add_argument(
        "--tile",
        default="auto",
        metavar="auto|N|0",
        help="LR tile size in pixels. auto (default): the largest tile whose measured peak memory fits "
        "--max-memory (the whole image when it fits); N: tiles of N pixels; 0: the whole image at once",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="memory budget per image for --tile auto, e.g. 2GiB or 800MB: on CPU for everything; on CUDA "
        "for device memory. Default: on CPU half the free RAM but at most 1 GiB beyond the image's own "
        "arrays; on CUDA 80%% of the free VRAM",
    )
    p.add_argument(
        "--tile-pad", type=int, default=10, metavar="N", help="LR context pixels per tile (default 10)"
    )
    p.add_argument("--tile-batch", type=int, default=1, metavar="N", help="tiles per model call (default 1)")
    p.add_argument(
        "--encoder-pixels",
        default=str(ENCODER_PIXELS),
        metavar="N|all",
        help=f"the degradation estimate of an image with more LR pixels reads N of them, in evenly spread "
        f"tiles (default {ENCODER_PIXELS}, about 1 MP: the encoder's share of a 12 MP photo drops from ~40%% "
        f"to ~3%%); all: read every pixel",
    )
    p.add_argument(
        "--fused-kernels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run IDR-DDC with the fused kdsr_kernels backends (default) or the plain PyTorch grouped conv",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="fp32 (default); bf16: autocast bfloat16 (CPU or CUDA; slower than fp32 on a CPU without "
        "native bf16); fp16: autocast float16 (CUDA); auto: bf16 on a CPU with AVX-512 BF16 or AMX, fp16 on "
        "CUDA, else fp32",
    )
    p.add_argument("--half", action="store_true", help="deprecated alias of --precision auto (warns)")
    p.add_argument(
        "--outscale",
        type=float,
        default=None,
        metavar="F",
        help=f"final size factor (e.g. 2 or 3.5): the result of the model's own scale is resized with a "
        f"{RESIZE_FILTER} filter (default: the model's scale)",
    )
    p.add_argument(
        "--ext",
        default="auto",
        choices=["auto", "png", "jpg", "bmp", "webp", "tif"],
        help="output format; auto keeps the input's format (PNG for 16-bit or alpha images it cannot hold)",
    )
    p.add_argument(
        "--jpeg-quality",
        type=int,
        default=JPEG_QUALITY,
        metavar="Q",
        help=f"quality of JPEG (and WebP) outputs, 1-100 (default {JPEG_QUALITY})",
    )
    p.add_argument(
        "--suffix",
        default=None,
        help="appended to each output file name (default _x<scale>, e.g. photo_x4.png; '' for none)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that already exist (default: skip them, so a re-run over a big folder resumes)",
    )
    p.add_argument(
        "--blur-sigma",
        type=float,
        default=None,
        metavar="S",
        help="non-blind: restore as if blurred by Gaussian σ = S (HR pixels), using the model's calibration "
        "(<model>.calibration.safetensors beside it, `kdsr calibrate`); S must be in its calibrated range",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="X",
        help="restoration strength relative to the model's own estimate: 1 = blind (identical to no flag), "
        "<1 gentler, >1 stronger (moves the estimated σ to X·σ along the calibration; PyTorch models only)",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration file for --blur-sigma/--strength (default: the one beside the model file)",
    )
    add_runtime_flags(p, device_default=None, device_default_help="auto; cpu with --onnx")
    add_trust_checkpoint_flag(p)
    p.set_defaults(func=run)


def parse_tile(text: str) -> int | str | None:
    """--tile: "auto" -> "auto", "0" -> None (no tiling), "N" (N >= 4) -> N; UsageError otherwise."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        tile = int(text)
    except ValueError:
        tile = -1
    if tile == 0:
        return None
    if tile < 4:
        raise UsageError(f"--tile must be auto, 0 (no tiling) or a size >= 4, got {text!r}")
    return tile


def parse_encoder_pixels(text: str) -> int | None:
    """--encoder-pixels: a positive integer, or None for "all"; UsageError otherwise."""
    if text == "all":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--encoder-pixels must be a positive integer or all, got {text!r}")
