"""The package's one image I/O module: list, read and write image files at 8 or 16 bits per sample.

    img = read_image("a.png")                 # (3, H, W) float32 in [0, 1] (degrade, upscale, paired eval)
    arr = read_samples("a.png")               # (3, H, W) uint8 / uint16 at the file's depth (training, eval)
    hr = samples_to_float(torch.from_numpy(arr), torch.float64)   # arr / 255 or / 65535
    px = read_pixels("a.png")                 # Pixels: uint8 / uint16 (H, W, 3) rgb, alpha, bit depth, ICC
    write_pixels("b.png", px)                 # the same, written back (16-bit PNG stays 16-bit)
    write_image("c.png", img, bits=16)        # a float (3|1, H, W) tensor as an 8- or 16-bit file

Codecs: Pillow for everything it reads exactly (8-bit anything, 16-bit grayscale), kornia-rs (a kornia
dependency) for 16-bit RGB/RGBA PNG and 16-bit RGB TIFF, which Pillow truncates to 8 bits on read and cannot
write. Every write goes through `kdsr.atomic` (temp file + rename; the file gets 0o666 & ~umask).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from kdsr.atomic import atomic_write, atomic_write_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "WRITE_FORMATS",
    "Pixels",
    "list_images",
    "read_pixels",
    "read_image",
    "read_image_uint8",
    "read_samples",
    "image_bits",
    "image_header",
    "samples_to_float",
    "SAMPLE_DTYPES",
    "write_pixels",
    "write_image",
    "pixels_to_tensor",
    "modcrop",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Suffix -> Pillow format name of the formats `write_pixels` / `write_image` produce.
WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
# Formats that hold 16-bit samples when written by `write_pixels` (the others get 8 bits).
FORMATS_16_BIT = ("PNG",)
JPEG_QUALITY = 95
LUMA = (0.299, 0.587, 0.114)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow modes of 16-bit (and wider, clipped to 16-bit) grayscale images.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
# Sample dtype -> the sample value that means 1.0.
SAMPLE_DTYPES = {torch.uint8: 255, torch.uint16: 65535}


@dataclass
class Pixels:
    """A decoded image as stored, without float conversion.

    rgb: (H, W, 3) uint8 or uint16 (grayscale images repeat their channel; a grayscale image to write may
    also hold just (H, W, 1)); alpha: (H, W) of the same dtype,
    or None; grayscale: stored as one channel (written back as one); bits: 8 or 16 (= the dtype's width);
    format: Pillow's name of the source format ("PNG", "JPEG", ...); icc_profile: the embedded profile.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    grayscale: bool = False
    bits: int = 8
    format: str = "PNG"
    icc_profile: bytes | None = None

    @property
    def max_value(self) -> int:
        """255 or 65535: the sample value that means 1.0."""
        return (1 << self.bits) - 1


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension, case-insensitive) directly inside ``folder``, sorted by name.

    Raises FileNotFoundError if the folder does not exist and ValueError if it holds no images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}")
    return files


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None if `path` is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _wide_colour(path: Path, img: Image.Image) -> tuple[str, str] | None:
    """("png" | "tiff", "rgb" | "rgba") when `img` is a 16-bit colour image Pillow would truncate."""
    if img.format == "PNG":
        header = _png_header(path)
        if header is not None and header[0] == 16 and header[1] in (2, 6):
            return "png", "rgb" if header[1] == 2 else "rgba"
    if img.format == "TIFF" and img.mode == "RGB":
        bits = img.tag_v2.get(258)  # BitsPerSample
        if isinstance(bits, tuple) and bits and bits[0] == 16:
            return "tiff", "rgb"
    return None


def _read_wide_colour(path: Path, kind: tuple[str, str]) -> np.ndarray:
    """(H, W, 3|4) uint16 samples of a 16-bit colour PNG / TIFF, decoded by kornia-rs."""
    import kornia_rs.io as krs

    reader = krs.read_image_png_u16 if kind[0] == "png" else krs.read_image_tiff_u16
    try:
        return np.asarray(reader(str(path), kind[1]), dtype=np.uint16)
    except ValueError as exc:
        raise OSError(f"cannot decode the 16-bit {kind[0].upper()} {path}: {exc}") from exc


def read_pixels(path: str | os.PathLike) -> Pixels:
    """Decode an image file to its stored samples (EXIF orientation applied).

    8-bit images give uint8, 16-bit ones (grayscale, RGB, RGBA PNG; grayscale/RGB TIFF) uint16; 32-bit
    integer grayscale is clipped to 16 bits, float grayscale (mode "F") clipped to [0, 1] and rounded to 16
    bits; palette images become RGB(A). Raises FileNotFoundError for a missing file and OSError
    (PIL.UnidentifiedImageError) for one that does not decode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with Image.open(path) as img:
        fmt = img.format or "PNG"
        icc = img.info.get("icc_profile") or None
        wide = _wide_colour(path, img)
        if wide is not None:
            samples = _read_wide_colour(path, wide)
            alpha = samples[..., 3].copy() if samples.shape[-1] == 4 else None
            return Pixels(np.ascontiguousarray(samples[..., :3]), alpha, False, 16, fmt, icc)
        img.load()
        img = ImageOps.exif_transpose(img)
        mode = img.mode
        if mode in _WIDE_GRAY_MODES:
            gray = np.asarray(img)
            if mode == "F":
                gray = np.round(np.clip(gray, 0.0, 1.0) * 65535.0)
            gray = np.clip(gray, 0, 65535).astype(np.uint16)
            return Pixels(np.repeat(gray[..., None], 3, axis=2), None, True, 16, fmt, icc)
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        grayscale = mode in ("1", "L", "LA", "La")
        arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)
    alpha = np.ascontiguousarray(arr[..., 3]) if has_alpha else None
    return Pixels(np.ascontiguousarray(arr[..., :3]), alpha, grayscale, 8, fmt, icc)


def image_header(path: str | os.PathLike) -> tuple[str, bool, int]:
    """(Pillow format name, has alpha, bits 8 | 16) of an image file from its header, without decoding.

    Raises FileNotFoundError / OSError as `PIL.Image.open` for a missing or unrecognised file.
    """
    path = Path(path)
    with Image.open(path) as img:
        alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        wide = _wide_colour(path, img)
        if wide is not None:
            alpha = wide[1] == "rgba"
        bits = 16 if wide is not None or img.mode in _WIDE_GRAY_MODES else 8
        return img.format or "PNG", alpha, bits


def pixels_to_tensor(px: Pixels) -> torch.Tensor:
    """Pixels -> (3, H, W) float32 tensor in [0, 1] (sample / 255 or / 65535; alpha dropped)."""
    chw = torch.from_numpy(np.ascontiguousarray(px.rgb.transpose(2, 0, 1)).astype(np.float32))
    return chw.div_(px.max_value)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a (3, H, W) float32 tensor in [0, 1].

    PNG/JPEG/BMP/TIFF/WebP; grayscale and palette images become RGB (channels repeated), alpha is dropped,
    16-bit images keep all 16 bits, EXIF orientation is applied. Errors as `read_pixels`.
    """
    return pixels_to_tensor(read_pixels(path))


def read_image_uint8(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a (3, H, W) uint8 tensor (grayscale/palette/alpha -> RGB; 16-bit rounded)."""
    rgb = read_samples(path)
    if rgb.dtype == np.uint16:
        rgb = np.round(rgb.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return torch.from_numpy(rgb)


def read_samples(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to its (3, H, W) samples, C-contiguous, at the file's depth.

    uint8 for 8-bit files, uint16 for 16-bit ones (see `read_pixels`; `image_bits` tells which without
    decoding); grayscale/palette -> RGB, alpha dropped. Errors as `read_pixels`.
    """
    return np.ascontiguousarray(read_pixels(path).rgb.transpose(2, 0, 1))


def image_bits(path: str | os.PathLike) -> int:
    """8 or 16: the depth `read_samples` / `read_pixels` decode ``path`` at, from the header only.

    Raises FileNotFoundError / OSError as `PIL.Image.open` for a missing or unrecognised file.
    """
    path = Path(path)
    with Image.open(path) as img:
        return 16 if _wide_colour(path, img) is not None or img.mode in _WIDE_GRAY_MODES else 8


def samples_to_float(
    samples: torch.Tensor, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 / uint16 samples (any shape) -> ``samples / 255`` or ``/ 65535`` as ``dtype`` on ``device``.

    uint16 goes through int32 on the CPU first (exact; torch has few uint16 kernels), so pinned-memory
    transfers of 16-bit batches are synchronous copies. Raises TypeError for another dtype.
    """
    top = SAMPLE_DTYPES.get(samples.dtype)
    if top is None:
        raise TypeError(f"expected uint8 or uint16 samples, got {samples.dtype}")
    if samples.dtype == torch.uint16:
        samples = samples.to(torch.int32)
    return samples.to(device, non_blocking=True).to(dtype) / float(top)


def _encode_16_bit_png(path: Path, samples: np.ndarray) -> Callable[[Path], None]:
    """A writer of (H, W, 1|3|4) uint16 `samples` as a 16-bit PNG file, by kornia-rs (Pillow cannot)."""
    import kornia_rs.io as krs

    mode = {1: "mono", 3: "rgb", 4: "rgba"}[samples.shape[-1]]
    return lambda tmp: krs.write_image_png_u16(str(tmp), np.ascontiguousarray(samples), mode)


def _with_icc(data: bytes, icc_profile: bytes) -> bytes:
    """A PNG file's bytes with an iCCP chunk inserted after IHDR (kornia-rs writes none)."""
    import zlib

    payload = b"ICC profile\x00\x00" + zlib.compress(icc_profile)
    chunk = struct.pack(">I", len(payload)) + b"iCCP" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iCCP" + payload))
    end_of_ihdr = len(_PNG_SIGNATURE) + 8 + 13 + 4
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]


def write_pixels(path: str | os.PathLike, px: Pixels, *, jpeg_quality: int = JPEG_QUALITY) -> Path:
    """Write `px` to `path` atomically; the format comes from the suffix (see WRITE_FORMATS).

    16-bit samples stay 16-bit in PNG (grayscale, RGB, RGBA) and are rounded to 8 bits in other formats;
    grayscale images are written with one channel (the luma of rgb: identical to the stored channel when the
    three are equal); alpha is kept except in JPEG; the ICC profile is kept. Creates missing parent folders.
    Raises ValueError for an unknown suffix or a bad array.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {path.name}: use one of {', '.join(sorted(WRITE_FORMATS))}")
    rgb = px.rgb
    want = np.uint16 if px.bits == 16 else np.uint8
    if rgb.ndim != 3 or rgb.shape[-1] not in ((1, 3) if px.grayscale else (3,)) or rgb.dtype != want:
        raise ValueError(f"Pixels.rgb must be (H, W, 3) {np.dtype(want)}, got {rgb.shape} {rgb.dtype}")
    channels = [_luma(rgb)] if px.grayscale else [rgb]
    if px.alpha is not None and fmt != "JPEG":
        channels.append(px.alpha[..., None])
    samples = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=-1)
    if px.bits == 16 and fmt in FORMATS_16_BIT:
        if samples.shape[-1] == 2:  # gray + alpha: kornia-rs has no 16-bit LA writer
            samples = np.concatenate([np.repeat(samples[..., :1], 3, axis=-1), samples[..., 1:]], -1)
        write = _encode_16_bit_png(path, samples)
        if px.icc_profile:
            return atomic_write_path(
                path, lambda tmp: (write(tmp), tmp.write_bytes(_with_icc(tmp.read_bytes(), px.icc_profile)))
            )
        return atomic_write_path(path, write)
    if px.bits == 16:
        samples = np.round(samples.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.uint8)
    pil = Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples)  # L, LA, RGB or RGBA
    if pil.mode == "LA" and fmt in ("BMP", "WEBP"):
        pil = pil.convert("RGBA")
    options: dict = {"quality": jpeg_quality} if fmt in ("JPEG", "WEBP") else {}
    if px.icc_profile:
        options["icc_profile"] = px.icc_profile
    return atomic_write(path, lambda handle: pil.save(handle, format=fmt, **options))


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint -> (H, W, 1) the same dtype: round(0.299 R + 0.587 G + 0.114 B), exact for R = G = B."""
    if rgb.shape[-1] == 1:
        return rgb
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., :1].copy()
    weights = np.asarray(LUMA, np.float32)
    top = np.iinfo(rgb.dtype).max
    return np.clip(np.round(rgb.astype(np.float32) @ weights), 0, top).astype(rgb.dtype)[..., None]


def write_image(path: str | os.PathLike, img: torch.Tensor, *, bits: int = 8) -> Path:
    """Save a (3, H, W) or (1, H, W) float image in [0, 1] at `bits` (8 or 16; clamped, rounded) atomically.

    The format comes from the suffix (16 bits need .png). Creates missing parent folders.
    """
    if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] not in (1, 3):
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"write_image expects a (3, H, W) or (1, H, W) tensor, got {shape}")
    if not img.is_floating_point():
        raise TypeError(f"write_image expects a float image in [0, 1], got dtype {img.dtype}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if bits == 16 and WRITE_FORMATS.get(Path(path).suffix.lower()) not in FORMATS_16_BIT:
        raise ValueError(f"16-bit images need a .png path, got {Path(path).name}")
    top = (1 << bits) - 1
    arr = (img.detach().to("cpu", torch.float64) * top).round().clamp(0, top).to(torch.int32)
    arr = arr.permute(1, 2, 0).numpy().astype(np.uint16 if bits == 16 else np.uint8)
    gray = arr.shape[2] == 1
    return write_pixels(path, Pixels(np.repeat(arr, 3, axis=2) if gray else arr, None, gray, bits))


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (…, H, W) at the top-left to H - H % scale, W - W % scale (the reference's convention)."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = img.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"image {h}x{w} is smaller than the scale {scale}")
    return img[..., : h - h % scale, : w - w % scale]
