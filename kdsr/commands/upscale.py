"""`kdsr upscale`: super-resolve image files with a KDSR student.

kdsr upscale photo.jpg scans/ -o out/ --checkpoint tiny-iso-x4-student
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
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsr.atomic import atomic_write, atomic_write_bytes
from kdsr.commands._common import add_runtime_flags, add_trust_checkpoint_flag

SCAN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP"}
JPEG_QUALITY = 95
# Largest tile tried first when the whole image does not fit in device memory; halved down to MIN_RETRY_TILE.
FIRST_RETRY_TILE = 512
MIN_RETRY_TILE = 32
LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------------
# image files
# ----------------------------------------------------------------------------------------------------
@dataclass
class ImageData:
    """A decoded image: rgb (H, W, 3) float32 in [0, 1]; alpha (H, W) float32 or None; how it was stored."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool
    bits: int  # 8 or 16
    format: str  # Pillow format name of the source ("PNG", "JPEG", ...)
    icc_profile: bytes | None


def _png16_channels(path: Path, rawmode: str, im) -> np.ndarray | None:
    """Exact 16-bit samples of an RGB/RGBA 16-bit PNG, which Pillow itself truncates to 8 bits.

    Pillow's PNG decoder unfilters with the right 6/8-byte pixel stride for the raw modes "RGB;16B" /
    "RGBA;16B" (which keep the high bytes) and "RGB;16L" / "RGBA;16L" (which keep the byte at offset 1 --
    for big-endian PNG data, the low byte); decoding twice and combining gives the 16-bit values. None if
    that fails.
    """
    from PIL import Image

    base = rawmode.split(";")[0]
    planes = []
    try:
        for variant in (f"{base};16B", f"{base};16L"):
            with Image.open(path) as again:
                tile = again.tile[0]
                args = variant if isinstance(tile.args, str) else (variant, *tuple(tile.args)[1:])
                again.tile = [tile._replace(args=args)]
                again.load()
                planes.append(np.asarray(again, dtype=np.uint16))
    except Exception:  # noqa: BLE001 - a Pillow internals change: fall back to its 8-bit decode
        return None
    if planes[0].shape[:2] != (im.height, im.width):
        return None
    return planes[0] * 256 + planes[1]


def read_image(path: str | os.PathLike) -> ImageData:
    """Decode an image file. Raises OSError / ValueError with a readable message when it cannot."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with Image.open(path) as im:
        fmt = im.format or "PNG"
        icc = im.info.get("icc_profile")
        rawmode = ""
        if im.tile and hasattr(im.tile[0], "args"):
            args = im.tile[0].args
            rawmode = (
                args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
            )
        if fmt == "PNG" and rawmode in ("RGB;16B", "RGBA;16B"):
            values = _png16_channels(path, rawmode, im)
            if values is not None:
                data = values.astype(np.float32) / 65535.0
                alpha = data[..., 3] if data.shape[-1] == 4 else None
                return ImageData(data[..., :3], alpha, False, 16, fmt, icc)
        im.load()
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            gray = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)
            return ImageData(np.repeat(gray[..., None], 3, axis=2), None, True, 16, fmt, icc)
        if mode == "F":
            gray = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
            return ImageData(np.repeat(gray[..., None], 3, axis=2), None, True, 16, fmt, icc)
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
        grayscale = mode in ("1", "L", "LA", "La")
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    alpha = arr[..., 3] if has_alpha else None
    return ImageData(arr[..., :3], alpha, grayscale, 8, fmt, icc)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png16(samples: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """(H, W, C) uint16 samples, C in 1..4 (gray, gray+alpha, RGB, RGBA) -> bytes of a 16-bit PNG file.

    Pillow cannot write 16-bit colour PNGs; this writes the PNG structure directly (every row 'Up'-filtered,
    zlib level 6).
    """
    H, W, C = samples.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[C]
    rows = np.ascontiguousarray(samples.astype(">u2")).view(np.uint8).reshape(H, W * C * 2)
    previous = np.vstack([np.zeros((1, rows.shape[1]), np.uint8), rows[:-1]])
    filtered = np.hstack([np.full((H, 1), 2, np.uint8), rows - previous])  # uint8 wraps: mod 256
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, color_type, 0, 0, 0))]
    if icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def write_image(path: Path, image: ImageData) -> None:
    """Encode `image` into `path`; the format comes from the suffix (.png / .jpg / .jpeg / .bmp).

    16-bit images are written at 16 bits when the format is PNG (8 bits otherwise); alpha is kept except in
    JPEG (the caller picks PNG for images with alpha).
    """
    from PIL import Image

    fmt = OUTPUT_FORMATS[path.suffix.lower().lstrip(".")]
    channels = (
        [image.rgb @ np.asarray(LUMA, np.float32)]
        if image.grayscale
        else [image.rgb[..., c] for c in range(3)]
    )
    if image.alpha is not None and fmt != "JPEG":
        channels.append(image.alpha)
    stacked = np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
    extra = {"icc_profile": image.icc_profile} if image.icc_profile else {}
    if image.bits == 16 and fmt == "PNG":
        samples = np.round(stacked * 65535.0).astype(np.uint16)
        if samples.shape[-1] == 1:
            pil = Image.fromarray(samples[..., 0])  # Pillow writes 16-bit grayscale itself
            atomic_write(path, lambda handle: pil.save(handle, format="PNG", **extra))
        else:
            data = encode_png16(samples, image.icc_profile)
            atomic_write_bytes(path, data)
        return
    samples = np.round(stacked * 255.0).astype(np.uint8)
    pil = Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples)  # L, LA, RGB or RGBA
    if pil.mode == "LA" and fmt == "BMP":
        pil = pil.convert("RGBA")
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    atomic_write(path, lambda handle: pil.save(handle, format=fmt, **options, **extra))


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
        "estimate of the whole image; device memory is then bounded by the tile size. Exit code: 0 all "
        "done, 1 some file failed, 2 bad arguments / checkpoint / device.",
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
        "(e.g. tiny-iso-x4-student)",
    )
    source.add_argument(
        "--onnx",
        metavar="FILE",
        help="run an exported student (`kdsr export --format onnx -o FILE`) with onnxruntime on the CPU "
        "instead of PyTorch; same tiling, one whole-image degradation estimate",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="LR tile size in pixels (default: whole image; on out-of-memory the image is retried in tiles "
        f"of {FIRST_RETRY_TILE}, then smaller)",
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


def output_path(src: Path, data: ImageData, outdir: Path, ext: str, suffix: str) -> Path:
    """Where the result of `src` goes: <outdir>/<stem><suffix>.<ext>, with the format picked by `ext`."""
    if ext == "auto":
        ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp"}.get(data.format, "png")
        if (ext == "jpg" and (data.alpha is not None or data.bits == 16)) or (
            ext == "bmp" and data.bits == 16
        ):
            ext = "png"
    return outdir / f"{src.stem}{suffix}.{ext}"


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom)


def upscale_image(
    model,
    data: ImageData,
    tile: int | None,
    tile_pad: int,
    tile_batch: int,
    device,
    say,
    precision: str = "fp32",
) -> ImageData:
    """Run the model (a KDSRStudent, or a kdsr.deploy.OnnxStudent) on one decoded image (retrying in
    smaller tiles on out-of-memory); returns the result."""
    import functools

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from kdsr.tiling import upscale

    if isinstance(model, torch.nn.Module):
        upscale = functools.partial(upscale, model, precision=precision)
    else:
        upscale = model.upscale

    lr = torch.from_numpy(np.ascontiguousarray(data.rgb.transpose(2, 0, 1))).unsqueeze(0)
    while True:
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None and total > 1:
                bar = tqdm(total=total, desc="  tiles", leave=False, unit="tile")
            if bar is not None:
                bar.update(done - bar.n)

        try:
            sr = upscale(lr, tile=tile, tile_pad=tile_pad, tile_batch=tile_batch, progress=progress)
            break
        except Exception as exc:
            if not _is_out_of_memory(exc) or (tile is not None and tile <= MIN_RETRY_TILE):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            longest = max(lr.shape[-2:])
            tile = min(FIRST_RETRY_TILE, longest // 2) if tile is None else tile // 2
            tile = max(tile, MIN_RETRY_TILE)
            say(f"  out of memory; retrying with --tile {tile}")
        finally:
            if bar is not None:
                bar.close()
    if not bool(torch.isfinite(sr).all()):
        raise RuntimeError("the network produced NaN/Inf (float16 overflow?); run again without --half")
    rgb = sr[0].permute(1, 2, 0).numpy()
    alpha = None
    if data.alpha is not None:
        a = torch.from_numpy(np.ascontiguousarray(data.alpha))[None, None]
        alpha = F.interpolate(a, scale_factor=model.scale, mode="bicubic", align_corners=False)
        alpha = alpha.clamp(0, 1)[0, 0].numpy()
    return ImageData(rgb, alpha, data.grayscale, data.bits, data.format, data.icc_profile)


def _load_onnx(args, device):
    """The OnnxStudent of --onnx; flags that only apply to the PyTorch path are an error."""
    from kdsr.deploy.ort_runner import OnnxStudent

    if device.type != "cpu" or args.half or args.precision != "fp32":
        raise ValueError("--onnx runs float32 on the CPU (onnxruntime); drop --device/--half/--precision")
    return OnnxStudent(args.onnx, threads=args.threads)


def run(args) -> int:
    """Upscale every input; returns 0, 1 if any file failed, 2 on bad arguments / checkpoint / device."""
    import torch
    from tqdm import tqdm

    import kdsr
    import kdsr.tiling
    from kdsr.deploy.ort_runner import OnnxStudent
    from kdsr.device import pick_device

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        if args.tile is not None and args.tile < 4:
            raise ValueError(f"--tile must be >= 4, got {args.tile}")
        if args.tile_pad < 0 or args.tile_batch < 1:
            raise ValueError("--tile-pad must be >= 0 and --tile-batch >= 1")
        if args.half and args.precision != "fp32":
            raise ValueError("--half and --precision both set the precision; use --precision alone")
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
        if args.half:
            model.to(torch.float16 if device.type == "cuda" else torch.bfloat16)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"kdsr upscale: error: {exc}", file=sys.stderr)
        return 2
    suffix = f"_x{model.scale}" if args.suffix is None else args.suffix
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    files = collect_inputs(args.inputs)
    if not files:
        print("kdsr upscale: error: no input images found", file=sys.stderr)
        return 2
    failed: list[Path] = []
    written: dict[Path, Path] = {}
    for src in tqdm(files, desc="upscale", unit="img", disable=args.no_progress):
        try:
            data = read_image(src)
            dst = output_path(src, data, outdir, args.ext, suffix)
            if dst.resolve() in written:
                raise ValueError(f"output {dst} would overwrite the result of {written[dst.resolve()]}")
            if dst.resolve() == src.resolve():
                raise ValueError(f"output {dst} would overwrite the input; use another -o or --suffix")
            result = upscale_image(
                model, data, args.tile, args.tile_pad, args.tile_batch, device, say, args.precision
            )
            write_image(dst, result)
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
