"""Image file helpers: list, read (any PIL mode -> RGB float), write 8-bit PNG, modcrop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image", "read_image_uint8", "write_image", "modcrop"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """PIL image -> (H, W, 3) array, uint8, or float64 in [0, 1] for 16-bit / float modes."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0
        return np.repeat(np.clip(arr, 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")  # drop alpha (keep colour as stored)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_image_uint8(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a (3, H, W) uint8 tensor (grayscale/palette/alpha -> RGB; 16-bit rounded)."""
    with Image.open(path) as img:
        arr = _to_rgb_array(img)
    if arr.dtype != np.uint8:
        arr = np.round(arr * 255.0).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a (3, H, W) float32 tensor in [0, 1].

    PNG/JPEG/BMP/TIFF/WebP via Pillow; grayscale and palette images become RGB (channels repeated), alpha is
    dropped, 16-bit images keep their precision, EXIF orientation is applied. Raises FileNotFoundError for a
    missing file and OSError (PIL.UnidentifiedImageError) for one that does not decode.
    """
    with Image.open(path) as img:
        arr = _to_rgb_array(img)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32) / scale


def write_image(path: str | os.PathLike, img: torch.Tensor) -> None:
    """Save a (3, H, W) or (1, H, W) float image in [0, 1] as 8-bit (rounded, clamped); format by suffix."""
    if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] not in (1, 3):
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"write_image expects a (3, H, W) or (1, H, W) tensor, got {shape}")
    if not img.is_floating_point():
        raise TypeError(f"write_image expects a float image in [0, 1], got dtype {img.dtype}")
    arr = (img.detach().to("cpu", torch.float64) * 255.0).round().clamp(0, 255).to(torch.uint8)
    arr = arr.permute(1, 2, 0).numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (…, H, W) at the top-left to H - H % scale, W - W % scale (the reference's convention)."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = img.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"image {h}x{w} is smaller than the scale {scale}")
    return img[..., : h - h % scale, : w - w % scale]
