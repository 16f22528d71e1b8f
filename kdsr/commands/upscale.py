"""`kdsr upscale`: super-resolve image files with a KDSR student.

kdsr upscale photo.jpg scans/ -o out/ --checkpoint iso-x4-student
kdsr upscale big.png -o out/ --checkpoint student.pt --tile 256 --device cuda --half
kdsr upscale photos/ -o out/ --checkpoint student.pt --precision bf16     # fast CPU path
kdsr upscale photos/ -o out/ --onnx kdsr_s.onnx                           # onnxruntime (kdsr export)

PNG / JPEG / BMP (anything Pillow reads when named explicitly); grayscale images come back grayscale, RGBA
images get their alpha channel upscaled separately (bicubic), 16-bit PNGs are read and written at 16 bits.
A file that cannot be read or processed gets a message and the others continue; the exit code is 1 if any
file failed (2 for a bad command line, checkpoint or device).
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsr.commands._common import add_runtime_flags, add_trust_checkpoint_flag
from kdsr.data.io import Pixels

SCAN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# Smallest tile the out-of-memory retry (CUDA, or a CPU allocator that raises) halves the tile to.
MIN_RETRY_TILE = 32
LUMA = (0.299, 0.587, 0.114)
STREAM_ROWS = 64  # output rows quantised at a time (bounds the float temporaries of the output sink)


# ----------------------------------------------------------------------------------------------------
# command
# ----------------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    """Register `kdsr upscale` and its flags."""
    p = subparsers.add_parser(
        "upscale",
        help="super-resolve image files with a KDSR student (optionally in blended tiles)",
        description="Super-resolve PNG/JPEG/BMP files with a KDSR student model. Grayscale stays "
        "grayscale, alpha is upscaled separately (bicubic), 16-bit PNGs stay 16-bit. With --tile, the "
        "image is processed in overlapping tiles blended without seams, all restored under ONE degradation "
        "estimate of the whole image; by default the tile is chosen so the peak memory stays under "
        "--max-memory, and the result is streamed into an 8/16-bit array (never a float copy). Exit "
        "code: 0 all done, 1 some file failed, 2 bad arguments / checkpoint / device.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, or folders (their .png/.jpg/.jpeg/.bmp)"
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        metavar="PATH_OR_NAME",
        help="student model file (model.save / a training checkpoint) or a shipped weights name "
        "(e.g. iso-x4-student)",
    )
    source.add_argument(
        "--onnx",
        metavar="FILE",
        help="run an exported student (`kdsr export --format onnx -o FILE`) with onnxruntime on the CPU "
        "instead of PyTorch; same tiling, one whole-image degradation estimate",
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
        help="memory budget per image for --tile auto, e.g. 2GiB or 800MB: on CPU for everything (decoded "
        "image, output array, blending band, network); on CUDA for device memory. Default: on CPU half the "
        "free RAM but at most 1 GiB beyond the image's own arrays; on CUDA 80%% of the free VRAM",
    )
    p.add_argument(
        "--tile-pad",
        type=int,
        default=10,
        metavar="N",
        help="LR context pixels around each tile; neighbouring tiles overlap by 2N and are blended "
        "(default 10)",
    )
    p.add_argument("--tile-batch", type=int, default=1, metavar="N", help="tiles per model call (default 1)")
    p.add_argument(
        "--fused-kernels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run IDR-DDC with the fused kdsr_kernels backends (default) or the plain PyTorch grouped conv",
    )
    p.add_argument("--half", action="store_true", help="run the network in float16 on CUDA (bfloat16 on CPU)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="fp32 (default); bf16: autocast bfloat16 + channels_last (CPU or CUDA); fp16: autocast "
        "float16 (CUDA); auto: the fastest path measured for the device (benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--ext",
        default="auto",
        choices=["auto", "png", "jpg", "bmp"],
        help="output format; auto keeps the input's format (PNG for 16-bit or alpha images it cannot hold)",
    )
    p.add_argument(
        "--suffix",
        default=None,
        help="appended to each output file name (default _x<scale>, e.g. photo_x4.png; '' for none)",
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


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files named directly, plus the .png/.jpg/.jpeg/.bmp files directly inside named folders (sorted)."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCAN_EXTENSIONS)
        else:
            files.append(path)  # a missing file is reported when it is processed
    return files


def output_path(src: Path, data: Pixels, outdir: Path, ext: str, suffix: str) -> Path:
    """Where the result of `src` goes: <outdir>/<stem><suffix>.<ext>, with the format picked by `ext`."""
    if ext == "auto":
        ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp"}.get(data.format, "png")
        if (ext == "jpg" and (data.alpha is not None or data.bits == 16)) or (
            ext == "bmp" and data.bits == 16
        ):
            ext = "png"
    return outdir / f"{src.stem}{suffix}.{ext}"


def check_output_folder(outdir: Path) -> None:
    """Raise ValueError (one line) unless `outdir` is a folder or can be created as one."""
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"-o {outdir} is an existing file; give a folder (created if missing)")
    for parent in outdir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"-o {outdir}: {parent} is a file, not a folder; give a folder path")
            break
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"-o {outdir}: cannot create the folder ({exc.strerror or exc})") from exc


def parse_tile(text: str) -> int | str | None:
    """--tile: "auto" -> "auto", "0" -> None (no tiling), "N" (N >= 4) -> N; ValueError otherwise."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        tile = int(text)
    except ValueError:
        tile = -1
    if tile == 0:
        return None
    if tile < 4:
        raise ValueError(f"--tile must be auto, 0 (no tiling) or a size >= 4, got {text!r}")
    return tile


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom)


class ArraySink:
    """Receives `kdsr.tiling.upscale_stream`'s (1, 3, n, sW) bands and quantises them into `out`.

    out: (sH, sW, 3) -- or (sH, sW, 1) luma for grayscale -- uint8 or uint16, preallocated; the float
    temporaries are at most STREAM_ROWS rows.
    """

    def __init__(self, out: np.ndarray, grayscale: bool):
        self.out, self.grayscale = out, grayscale
        self.top = 65535 if out.dtype == np.uint16 else 255
        self.finite = True

    def __call__(self, y: int, block) -> None:
        import torch

        for a in range(0, block.shape[2], STREAM_ROWS):
            x = block[0, :, a : a + STREAM_ROWS].float()
            if not bool(torch.isfinite(x).all()):
                self.finite = False
            if self.grayscale:
                x = (x[0] * LUMA[0] + x[1] * LUMA[1] + x[2] * LUMA[2]).clamp_(0, 1)[None]
            q = (x * self.top).round_().to(torch.int32).permute(1, 2, 0).cpu().numpy()
            self.out[y + a : y + a + q.shape[0]] = q


def upscale_alpha(alpha: np.ndarray, scale: int, chunk: int = 128) -> np.ndarray:
    """(H, W) uint8/uint16 alpha -> (scale*H, scale*W) of the same dtype, bicubic (clamped, rounded), in
    bands of `chunk` LR rows (with 4 rows of context each side: the same values as one whole-image call)."""
    import torch
    import torch.nn.functional as F

    H, W = alpha.shape
    top = 65535 if alpha.dtype == np.uint16 else 255
    out = np.empty((scale * H, scale * W), alpha.dtype)
    for a in range(0, H, chunk):
        b = min(a + chunk, H)
        c0, c1 = max(a - 4, 0), min(b + 4, H)
        part = torch.from_numpy(alpha[c0:c1].astype(np.float32) / np.float32(top))[None, None]
        up = F.interpolate(part, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0, 1)
        up = up[0, 0, scale * (a - c0) : scale * (b - c0)]
        out[scale * a : scale * b] = (up * top).round_().to(torch.int32).numpy()
    return out


@dataclass
class Plan:
    """How `upscale_pixels` sizes its tiles: tile ("auto", None = whole image, or N), the measured
    MemoryModel (for "auto"), the --max-memory budget in bytes (None: the default), tile_pad, tile_batch."""

    tile: int | str | None
    tile_pad: int = 10
    tile_batch: int = 1
    memory: object = None
    max_memory: int | None = None


def fixed_bytes(px: Pixels, scale: int) -> int:
    """Host bytes of `upscale_pixels`' own arrays for `px`: the decoded samples, the float32 LR tensor, the
    output array(s), and the writer's copies (rgb + alpha joined; Pillow keeps 4 bytes per RGB pixel)."""
    H, W = px.rgb.shape[:2]
    sample = px.rgb.dtype.itemsize
    has_alpha = px.alpha is not None
    decoded = H * W * (3 + has_alpha) * sample
    out = scale * scale * H * W * ((1 if px.grayscale else 3) + has_alpha) * sample
    writer = out * has_alpha + max(out, 4 * scale * scale * H * W)
    return decoded + 3 * H * W * 4 + out + writer


def choose_tile(plan: Plan, px: Pixels, runner, device) -> int | None:
    """The tile for one image: plan.tile, or for "auto" `kdsr.tiling.plan_tile` under the budget."""
    import torch

    from kdsr import memory
    from kdsr.tiling import plan_tile

    if plan.tile != "auto":
        return plan.tile
    fixed = fixed_bytes(px, runner.scale)
    host_default = memory.default_budget(torch.device("cpu"), fixed)
    if device.type == "cuda":
        budget = plan.max_memory or memory.default_budget(device)
        host_budget = host_default
    else:
        budget, host_budget = plan.max_memory or host_default, None
    H, W = px.rgb.shape[:2]
    return plan_tile(
        plan.memory,
        (H, W),
        runner.scale,
        plan.tile_pad,
        runner.encoder_radius,
        budget,
        fixed,
        tile_batch=plan.tile_batch,
        host_budget=host_budget,
    )


def upscale_pixels(runner, px: Pixels, plan: Plan, device, say, progress: bool = True, steer=None) -> Pixels:
    """Super-resolve decoded `px` with a TileRunner into a new Pixels of the same bit depth.

    The result is streamed into a preallocated uint8/uint16 array; alpha is upscaled separately (bicubic).
    Tiles as `plan` says; a tile (or whole image) that runs out of memory is retried in half-size tiles.
    `steer(lr (1, 3, H, W), tile)`: the degradation every tile shares (kdsr.steering), or None (blind).
    """
    import torch
    from tqdm import tqdm

    from kdsr.data.io import pixels_to_tensor
    from kdsr.tiling import sr_steps, upscale_stream

    s = runner.scale
    H, W = px.rgb.shape[:2]
    tile = choose_tile(plan, px, runner, device)
    lr = pixels_to_tensor(px)[None]
    degradation = None if steer is None else steer(lr, tile)
    out = np.empty((s * H, s * W, 1 if px.grayscale else 3), px.rgb.dtype)
    if plan.tile == "auto":
        steps = sr_steps(runner, (H, W), tile, plan.tile_pad)
        say(f"  {W}x{H}: " + ("whole image" if steps == 1 else f"tile {tile}, {steps} tiles"))
    while True:
        sink = ArraySink(out, px.grayscale)
        bar = None
        several = sr_steps(runner, (H, W), tile, plan.tile_pad) > 1  # a bar only over several tiles

        def report(done: int, total: int, several: bool = several) -> None:
            nonlocal bar
            if bar is None and several and progress:
                bar = tqdm(total=total, desc="  tiles", leave=False, unit="tile")
            if bar is not None:
                bar.update(done - bar.n)

        try:
            upscale_stream(runner, lr, sink, tile, plan.tile_pad, plan.tile_batch, degradation, report)
            break
        except Exception as exc:
            if not _is_out_of_memory(exc) or (tile is not None and tile <= MIN_RETRY_TILE):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            tile = max((max(H, W) if tile is None else tile) // 2, MIN_RETRY_TILE)
            say(f"  out of memory; retrying with --tile {tile}")
        finally:
            if bar is not None:
                bar.close()
    if not sink.finite:
        raise RuntimeError("the network produced NaN/Inf (float16 overflow?); run again without --half")
    del lr
    alpha = None if px.alpha is None else upscale_alpha(px.alpha, s)
    return Pixels(out, alpha, px.grayscale, px.bits, px.format, px.icc_profile)


def _load_onnx(args, device):
    """The OnnxStudent of --onnx; flags that only apply to the PyTorch path are an error."""
    from kdsr.deploy.ort_runner import OnnxStudent

    if device.type != "cpu" or args.half or args.precision != "fp32":
        raise ValueError("--onnx runs float32 on the CPU (onnxruntime); drop --device/--half/--precision")
    return OnnxStudent(args.onnx, threads=args.threads)


def _steering(args, model):
    """None (blind), or a function (lr, tile, runner) -> the degradation for --blur-sigma / --strength;
    ValueError (exit 2) for a model without a matching calibration or a σ outside its range."""
    from kdsr.steering import load_calibration, resolve_degradation
    from kdsr.steering.steer import check_steering

    check_steering(args.blur_sigma, args.strength)
    if args.blur_sigma is None and args.strength in (None, 1.0):
        return None
    if args.strength is not None and args.onnx is not None:
        raise ValueError("--strength needs the PyTorch model (--checkpoint); with --onnx use --blur-sigma")
    cal = load_calibration(model, args.calibration)
    if args.blur_sigma is not None:
        d = resolve_degradation(model, None, blur_sigma=args.blur_sigma, calibration=cal)  # range checked now
        return lambda lr, tile, runner: (
            d.to(model.sr_net.head.weight.dtype) if hasattr(model, "sr_net") else d
        )
    return lambda lr, tile, runner: resolve_degradation(
        model, lr, strength=args.strength, calibration=cal, tile=tile, runner=runner
    )


def run(args) -> int:
    """Upscale every input; returns 0, 1 if any file failed, 2 on bad arguments / checkpoint / device."""
    import torch
    from tqdm import tqdm

    import kdsr
    import kdsr.tiling
    from kdsr.data.io import read_pixels, write_pixels
    from kdsr.deploy.ort_runner import OnnxStudent
    from kdsr.device import pick_device
    from kdsr.memory import parse_size

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        tile = parse_tile(args.tile)
        max_memory = None if args.max_memory is None else parse_size(args.max_memory)
        if args.tile_pad < 0 or args.tile_batch < 1:
            raise ValueError("--tile-pad must be >= 0 and --tile-batch >= 1")
        if args.half and args.precision != "fp32":
            raise ValueError("--half and --precision both set the precision; use --precision alone")
        outdir = Path(args.output)
        check_output_folder(outdir)
        device = pick_device("cpu" if args.onnx is not None and args.device is None else args.device)
        if args.onnx is not None:
            model = _load_onnx(args, device)
        else:
            model = kdsr.load(
                args.checkpoint,
                map_location=device,
                fused_kernels=args.fused_kernels,
                trust_pickle=args.trust_checkpoint,
            )
            kdsr.tiling.resolve_precision(args.precision, device)  # fp16 on CPU: a clear error now
        if not isinstance(model, kdsr.KDSRStudent | OnnxStudent):
            raise ValueError(
                f"{args.checkpoint} holds a {type(model).__name__}; upscaling needs a student (a teacher "
                "needs the HR image)"
            )
        steering = _steering(args, model)  # before --half: the fingerprint is of the stored weights
        if args.half:
            model.to(torch.float16 if device.type == "cuda" else torch.bfloat16)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"kdsr upscale: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(model, OnnxStudent):
        runner, how = model.runner(), "rss"
    else:
        runner, how = kdsr.tiling.runner_for(model, args.precision), "torch"
    plan = Plan(tile, args.tile_pad, args.tile_batch, None, max_memory)
    steer = None if steering is None else functools.partial(steering, runner=runner)
    suffix = f"_x{model.scale}" if args.suffix is None else args.suffix
    files = collect_inputs(args.inputs)
    if not files:
        print("kdsr upscale: error: no input images found", file=sys.stderr)
        return 2
    failed: list[Path] = []
    written: dict[Path, Path] = {}
    for src in tqdm(files, desc="upscale", unit="img", disable=args.no_progress):
        try:
            data = read_pixels(src)
            dst = output_path(src, data, outdir, args.ext, suffix)
            if dst.resolve() in written:
                raise ValueError(f"output {dst} would overwrite the result of {written[dst.resolve()]}")
            if dst.resolve() == src.resolve():
                raise ValueError(f"output {dst} would overwrite the input; use another -o or --suffix")
            if plan.tile == "auto" and plan.memory is None:  # measured once per model / precision / device
                plan.memory = kdsr.tiling.measure_memory(runner, device, how)
            result = upscale_pixels(runner, data, plan, device, say, not args.no_progress, steer)
            del data
            write_pixels(dst, result)
            written[dst.resolve()] = src
        except Exception as exc:  # noqa: BLE001 - report the file, continue with the others
            failed.append(src)
            say(f"kdsr upscale: {src}: {type(exc).__name__}: {exc}")
    done = len(files) - len(failed)
    say(f"kdsr upscale: {done}/{len(files)} images written to {outdir}")
    if failed:
        say(f"kdsr upscale: {len(failed)} failed: {', '.join(str(f) for f in failed)}")
        return 1
    return 0
