"""`kdsr upscale`: super-resolve image files with a KDSR student (the library half is kdsr.inference).

kdsr upscale photo.jpg -o out/                                    # the default model (see `kdsr models`)
kdsr upscale scans/ -o out/ --model iso-x4-student --outscale 2 --jpeg-quality 90
kdsr upscale photos/ -o out/ --checkpoint student.pt --precision bf16     # fast CPU path
kdsr upscale photos/ -o out/ --onnx kdsr_s.onnx                           # onnxruntime (kdsr export)

Exit codes: 0 all written (or already there), 1 some file failed, 2 bad arguments / input path / model /
device (reported before any work; the output folder is created only when the first file is written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdsr.commands._common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    UsageError,
    add_runtime_flags,
    add_trust_checkpoint_flag,
    apply_threads,
    check_output_folder,
    load_model,
    resolve_device,
    say_file_error,
    scan_images,
)
from kdsr.data.io import IMAGE_EXTENSIONS, JPEG_QUALITY
from kdsr.inference.catalog import DEFAULT_MODEL, DEFAULT_REASON
from kdsr.inference.pixels import RESIZE_FILTER
from kdsr.inference.tiling import ENCODER_PIXELS

METADATA_NOTE = (
    "EXIF orientation is applied to the pixels (the result is upright, with no orientation tag); the ICC "
    "colour profile is kept; other EXIF metadata (camera, date, GPS) is dropped"
)


def add_parser(subparsers) -> None:
    """Register `kdsr upscale` and its flags."""
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


def output_path(src: Path, header: tuple[str, bool, int], outdir: Path, ext: str, suffix: str) -> Path:
    """<outdir>/<stem><suffix>.<ext>; ext "auto" keeps the input's format ((format, alpha, bits) header)
    unless it cannot hold 16 bits or alpha (then PNG)."""
    fmt, alpha, bits = header
    if ext == "auto":
        ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}.get(fmt, "png")
        if (ext == "jpg" and (alpha or bits == 16)) or (ext != "png" and bits == 16):
            ext = "png"
    return outdir / f"{src.stem}{suffix}.{ext}"


def _setup(args):
    """Validate everything before any work: (runner, files, plan, device, outdir, how, steer)."""
    import kdsr
    from kdsr.deploy.ort_runner import OnnxStudent
    from kdsr.inference.memory import parse_size
    from kdsr.inference.pixels import Plan
    from kdsr.inference.tiling import resolve_precision, runner_for

    tile = parse_tile(args.tile)
    try:
        max_memory = None if args.max_memory is None else parse_size(args.max_memory)
    except ValueError as exc:
        raise UsageError(f"--max-memory: {exc}") from None
    if args.tile_pad < 0 or args.tile_batch < 1:
        raise UsageError("--tile-pad must be >= 0 and --tile-batch >= 1")
    encoder_pixels = _encoder_pixels(args.encoder_pixels)
    if not 1 <= args.jpeg_quality <= 100:
        raise UsageError(f"--jpeg-quality must be 1-100, got {args.jpeg_quality}")
    if args.outscale is not None and not 0 < args.outscale <= 16:
        raise UsageError(f"--outscale must be > 0 and <= 16, got {args.outscale:g}")
    if args.half:
        if args.precision != "fp32":
            raise UsageError("--half and --precision both set the precision; use --precision alone")
        print("kdsr upscale: warning: --half is deprecated; use --precision auto (the same)", file=sys.stderr)
        args.precision = "auto"
    outdir = check_output_folder(args.output)
    files = scan_images(args.inputs)
    device = resolve_device("cpu" if args.onnx is not None and args.device is None else args.device)
    if args.onnx is not None:
        if device.type != "cpu" or args.precision != "fp32":
            raise UsageError("--onnx runs float32 on the CPU (onnxruntime); drop --device/--precision")
        try:
            model = OnnxStudent(args.onnx, threads=args.threads)
        except (OSError, ValueError, RuntimeError) as exc:
            raise UsageError(f"--onnx {args.onnx}: {exc}") from None
        runner, how = model.runner(), "rss"
    else:
        name = args.checkpoint or DEFAULT_MODEL
        model = load_model(
            name, device, flag="--model", trust=args.trust_checkpoint, fused_kernels=args.fused_kernels
        )
        if not isinstance(model, kdsr.KDSRStudent):
            raise UsageError(
                f"--model {name} holds a {type(model).__name__}; upscaling needs a student (a teacher needs "
                "the HR image); `kdsr models` lists the students"
            )
        try:
            resolve_precision(args.precision, device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        runner, how = runner_for(model, args.precision), "torch"
    plan = Plan(tile, args.tile_pad, args.tile_batch, None, max_memory, encoder_pixels=encoder_pixels)
    try:
        steer = _steering(args, model, runner, tile if isinstance(tile, int) else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return runner, files, plan, device, outdir, how, steer


def _encoder_pixels(text: str) -> int | None:
    """--encoder-pixels: a positive integer, or None for "all"; UsageError otherwise."""
    if text == "all":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--encoder-pixels must be a positive integer or all, got {text!r}")


def _steering(args, model, runner, tile: int | None):
    """None (blind), or a function lr (1, 3, H, W) -> the degradation every tile shares (kdsr.steering), for
    --blur-sigma / --strength; ValueError for a model without a matching calibration or a σ out of range."""
    from kdsr.steering import load_calibration, resolve_degradation
    from kdsr.steering.steer import check_steering

    check_steering(args.blur_sigma, args.strength)
    if args.blur_sigma is None and args.strength in (None, 1.0):
        return None
    if args.strength is not None and args.onnx is not None:
        raise ValueError("--strength needs the PyTorch model (--model); with --onnx use --blur-sigma")
    cal = load_calibration(model, args.calibration)
    if args.blur_sigma is not None:
        d = resolve_degradation(model, None, blur_sigma=args.blur_sigma, calibration=cal)  # range checked now
        return lambda lr: d.to(model.sr_net.head.weight.dtype) if hasattr(model, "sr_net") else d
    return lambda lr: resolve_degradation(
        model, lr, strength=args.strength, calibration=cal, tile=tile, runner=runner
    )


def run(args) -> int:
    """Upscale every input; returns 0, 1 if any file failed; bad input raises UsageError (exit 2)."""
    from tqdm import tqdm

    from kdsr.data.io import image_header, pixels_to_tensor, read_pixels, write_pixels
    from kdsr.inference import probe
    from kdsr.inference.pixels import resize_pixels, upscale_pixels

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    apply_threads(args)
    runner, files, plan, device, outdir, how, steer = _setup(args)
    s = runner.scale
    final = args.outscale if args.outscale is not None else s
    suffix = f"_x{final:g}" if args.suffix is None else args.suffix
    progress = not args.no_progress
    failed, skipped = [], 0
    written: dict[Path, Path] = {}
    for src in tqdm(files, desc="upscale", unit="img", disable=not progress):
        try:
            dst = output_path(src, image_header(src), outdir, args.ext, suffix)
            if dst.resolve() in written:
                raise ValueError(f"output {dst} would overwrite the result of {written[dst.resolve()]}")
            if dst.resolve() == src.resolve():
                raise ValueError(f"output {dst} would overwrite the input; use another -o or --suffix")
            if dst.exists() and not args.overwrite:
                skipped += 1
                continue
            data = read_pixels(src)
            if plan.tile == "auto" and plan.memory is None:  # measured once per model / precision / device
                plan.memory = probe.measure_memory(runner, device, how)
            if progress and plan.speed is None:
                plan.speed = probe.measure_speed(runner)
            degradation = None
            if steer is not None:
                degradation = steer(pixels_to_tensor(data)[None])
            result = upscale_pixels(
                runner, data, plan, device, say, progress=progress, degradation=degradation
            )
            del data
            if final != s:
                result = resize_pixels(result, final / s)
            write_pixels(dst, result, jpeg_quality=args.jpeg_quality)
            written[dst.resolve()] = src
        except Exception as exc:  # noqa: BLE001 - report the file, continue with the others
            failed.append(src)
            say_file_error("upscale", src, exc)
    note = f" ({skipped} already there, skipped; --overwrite to redo)" if skipped else ""
    say(f"kdsr upscale: {len(written)}/{len(files)} images written to {outdir}{note}")
    if failed:
        say(f"kdsr upscale: {len(failed)} failed: {', '.join(str(f) for f in failed)}")
        return EXIT_FAILED
    return 0
