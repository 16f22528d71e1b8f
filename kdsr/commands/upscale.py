"""`kdsr upscale`: super-resolve image files with a KDSR student (the library half is kdsr.inference).

kdsr upscale photo.jpg -o out/                                    # the default model (see `kdsr models`)
kdsr upscale scans/ -o out/ --model iso-x4-student --outscale 2 --jpeg-quality 90
kdsr upscale photos/ -o out/ --checkpoint student.pt --precision bf16     # fast CPU path
kdsr upscale photos/ -o out/ --onnx kdsr_s.onnx                           # onnxruntime (kdsr export)

Exit codes: 0 all written (or already there), 1 some file failed, 2 bad arguments / input path / model /
device (reported before any work; the output folder is created only when the first file is written).
"""

from __future__ import annotations

import sys
from pathlib import Path

from kdsr.commands._common import (
    EXIT_FAILED,
    UsageError,
    apply_threads,
    check_output_folder,
    load_model,
    resolve_device,
    say_file_error,
    scan_images,
)
from kdsr.commands.upscale_flags import add_upscale_parser, parse_encoder_pixels, parse_tile
from kdsr.inference.catalog import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    """Register `kdsr upscale` (flags: kdsr.commands.upscale_flags)."""
    add_upscale_parser(subparsers, run)


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
    encoder_pixels = parse_encoder_pixels(args.encoder_pixels)
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
