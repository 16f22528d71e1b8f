"""Training dataset: random HR crops from a folder of images (degradation happens later, on the batch)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .cache import ImageStore, cache_mode, copy_samples, default_cache_dir
from .io import list_images, samples_to_float

__all__ = ["HRImageDataset"]


class HRImageDataset(Dataset):
    """Random ``scale·lr_patch`` square HR crops, with flip/transpose augmentation, as float32 in [0, 1].

    Each item is a (3, P, P) float32 tensor, P = scale · lr_patch (the reference: LR patch 64, HR crop 256):
    the file's samples / 255, or / 65535 for 16-bit files (their depth is kept; see ``dtype``).
    The LR is *not* made here: degrade the collated (B, 3, P, P) batch on the training device with
    ``kdsr.degradations.ClassicDegradation`` — one vectorised call instead of per-image Python work.

    Args:
        folder: directory of HR images (PNG/JPEG/BMP/TIFF/WebP; grayscale becomes RGB).
        scale: SR scale factor (int >= 1).
        lr_patch: LR patch side; the HR crop is scale · lr_patch.
        augment: random horizontal flip, vertical flip and transpose, each with p = 0.5.
        cache: "ram" (decode every image once at construction, keep it in memory at its depth: 3
            bytes/pixel for 8-bit images, 6 for 16-bit; 8-bit DF2K ~29 GB, B100 ~46 MB), "disk" (decode once
            into memory-mapped .npy files in ``cache_dir``, default ``<folder>/.kdsr_cache``) or "none"
            (decode on every access); true/false mean ram/none. See kdsr.data.cache.
        repeat: the dataset length is ``repeat × number of images`` (EDSR-style epochs; item i uses image
            i mod n).
        cache_dir: folder of the disk cache (mode "disk" only).
        progress: a tqdm bar while a cache is built.

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
        cache: bool | str = False,
        repeat: int = 1,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        for name, value in (("scale", scale), ("lr_patch", lr_patch), ("repeat", repeat)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        mode = cache_mode(cache)
        self.scale, self.lr_patch, self.repeat = scale, lr_patch, repeat
        self.patch = scale * lr_patch
        self.augment = bool(augment)
        files = []
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
            files.append(path)
        if not files:
            raise ValueError(f"no usable images of at least {self.patch}x{self.patch} pixels in {folder}")
        if mode == "disk" and cache_dir is None:
            cache_dir = default_cache_dir(folder)
        self.store = ImageStore(files, mode, cache_dir, progress=progress)
        self.files = self.store.files
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of `crop`: torch.uint16 if any image is 16-bit (8-bit ones scaled by 257), else uint8."""
        return self.store.dtype

    def _load(self, index: int) -> np.ndarray:
        """(3, H, W) uint8 / uint16 array of image ``index``, falling back to the next decodable image."""
        n = len(self.files)
        for step in range(n):
            j = (index + step) % n
            if j in self._bad:
                continue
            try:
                return self.store.array(j)
            except (OSError, ValueError) as exc:
                self._bad.add(j)
                warnings.warn(f"skipping undecodable image {self.files[j]}: {exc}", stacklevel=2)
        raise RuntimeError("none of the training images could be decoded")

    def crop(
        self, index: int, generator: torch.Generator | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(3, P, P) ``self.dtype`` crop of image ``index mod n``: position, then flips/transpose, from
        ``generator``.

        Draw order: top, left (torch.randint), then three flips (torch.rand(3) < 0.5) if augment. None uses
        torch's global RNG (what ``__getitem__`` does). The flips are numpy views, so the pixels are copied
        once, into ``out`` (a contiguous (3, P, P) tensor of ``self.dtype``, e.g. a slot of a batch) or a new
        tensor.
        """
        img = self._load(index % len(self.files))
        _, h, w = img.shape
        p = self.patch
        top = int(torch.randint(0, h - p + 1, (), generator=generator))
        left = int(torch.randint(0, w - p + 1, (), generator=generator))
        view = img[:, top : top + p, left : left + p]
        if self.augment:
            hflip, vflip, transpose = (torch.rand(3, generator=generator) < 0.5).tolist()
            if hflip:
                view = view[:, :, ::-1]
            if vflip:
                view = view[:, ::-1, :]
            if transpose:
                view = view.transpose(0, 2, 1)
        if out is None:
            out = torch.empty((3, p, p), dtype=self.dtype)
        copy_samples(out.numpy(), view)
        return out

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} crops")
        return samples_to_float(self.crop(index))
