"""Training dataset: random HR crops from a folder of images (degradation happens later, on the batch)."""

from __future__ import annotations

import os
import warnings

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from .io import list_images, read_image_uint8

__all__ = ["HRImageDataset"]


class HRImageDataset(Dataset):
    """Random ``scale·lr_patch`` square HR crops, with flip/transpose augmentation, as float32 in [0, 1].

    Each item is a (3, P, P) float32 tensor, P = scale · lr_patch (the reference: LR patch 64, HR crop 256).
    The LR is *not* made here: degrade the collated (B, 3, P, P) batch on the training device with
    ``kdsr.degradations.ClassicDegradation`` — one vectorised call instead of per-image Python work.

    Args:
        folder: directory of HR images (PNG/JPEG/BMP/TIFF/WebP; grayscale becomes RGB).
        scale: SR scale factor (int >= 1).
        lr_patch: LR patch side; the HR crop is scale · lr_patch.
        augment: random horizontal flip, vertical flip and transpose, each with p = 0.5.
        cache: decode every image once at construction and keep it in memory as uint8 (about 3 bytes/pixel;
            DF2K would need ~30 GB, B100 ~46 MB). Without it each item decodes its file.
        repeat: the dataset length is ``repeat × number of images`` (EDSR-style epochs; item i uses image
            i mod n).

    Files that cannot be read, or are smaller than the crop, are skipped with one warning each (at
    construction from the file header, or on first failed decode). Randomness comes from torch's global RNG,
    which DataLoader seeds per worker, so ``torch.manual_seed`` makes runs repeatable and workers draw
    different crops.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        scale: int,
        lr_patch: int,
        augment: bool = True,
        cache: bool = False,
        repeat: int = 1,
    ) -> None:
        for name, value in (("scale", scale), ("lr_patch", lr_patch), ("repeat", repeat)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.scale, self.lr_patch, self.repeat = scale, lr_patch, repeat
        self.patch = scale * lr_patch
        self.augment = bool(augment)
        self.files = []
        for path in list_images(folder):
            try:
                with Image.open(path) as img:
                    width, height = img.size
            except (OSError, ValueError) as exc:
                warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
                continue
            if height < self.patch or width < self.patch:
                warnings.warn(
                    f"skipping {path}: {width}x{height} is smaller than the {self.patch}-pixel HR crop",
                    stacklevel=2,
                )
                continue
            self.files.append(path)
        self._cache: list[torch.Tensor] | None = None
        if cache:
            images, kept = [], []
            for path in tqdm(self.files, desc="caching HR images", unit="img", leave=False):
                try:
                    images.append(read_image_uint8(path))
                    kept.append(path)
                except (OSError, ValueError) as exc:
                    warnings.warn(f"skipping undecodable image {path}: {exc}", stacklevel=2)
            self.files, self._cache = kept, images
        if not self.files:
            raise ValueError(f"no usable images of at least {self.patch}x{self.patch} pixels in {folder}")
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _load(self, index: int) -> torch.Tensor:
        """(3, H, W) uint8 of image ``index``, falling back to the next decodable image."""
        n = len(self.files)
        for step in range(n):
            j = (index + step) % n
            if j in self._bad:
                continue
            if self._cache is not None:
                return self._cache[j]
            try:
                return read_image_uint8(self.files[j])
            except (OSError, ValueError) as exc:
                self._bad.add(j)
                warnings.warn(f"skipping undecodable image {self.files[j]}: {exc}", stacklevel=2)
        raise RuntimeError("none of the training images could be decoded")

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} crops")
        img = self._load(index % len(self.files))
        _, h, w = img.shape
        p = self.patch
        top = int(torch.randint(0, h - p + 1, ()))
        left = int(torch.randint(0, w - p + 1, ()))
        crop = img[:, top : top + p, left : left + p]
        if self.augment:
            hflip, vflip, transpose = (torch.rand(3) < 0.5).tolist()
            if hflip:
                crop = crop.flip(-1)
            if vflip:
                crop = crop.flip(-2)
            if transpose:
                crop = crop.transpose(-2, -1)
        return crop.to(torch.float32).div_(255.0).contiguous()
