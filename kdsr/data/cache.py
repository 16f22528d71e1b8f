"""Decoded training images by index, from RAM, a memory-mapped .npy cache on disk, or the file each time.

    store = ImageStore(files, "disk", cache_dir)   # decodes missing/stale cache files once, then mmaps
    img = store.array(3)                           # (3, H, W) uint8 / uint16 numpy array (read-only for disk)
    copy_samples(out, img[:, :64, :64])            # into a store.dtype buffer (8-bit scaled x257 if mixed)

Images keep the file's depth (kdsr.data.io.read_samples): uint8 for 8-bit files, uint16 for 16-bit ones, so
8-bit data costs what it did and 16-bit data is not rounded. ``store.dtype`` is uint16 when any kept file is
16-bit (else uint8): batch buffers use it, and `copy_samples` puts 8-bit images of a mixed folder on the
16-bit scale exactly (k·257 / 65535 == k / 255).

Modes (config key `data.cache`):

* ``ram``: every image decoded once at construction into a numpy array (3 bytes/pixel for 8-bit images,
  6 for 16-bit; 8-bit DF2K needs ~29 GB). DataLoader workers are forked after that, so they read the same
  pages (copy-on-write, never written): no copies.
* ``disk``: every image decoded once into ``<cache_dir>/<file name>.<size>-<mtime_ns>.npy`` (16-bit files:
  ``...<mtime_ns>-u16.npy``; written atomically with kdsr.atomic), then memory-mapped read-only; the OS page
  cache shares it between workers and runs. A cache file whose source changed (size or mtime) is stale: it
  is rewritten, the old one removed. The depth is in the name, so a cache written before 16-bit sources kept
  their depth (uint8, no suffix) is stale for them and rebuilt; 8-bit entries keep their names and stay valid.
* ``none``: decode the file on every access (a 2040×1356 PNG takes ~190 ms).

The old boolean ``cache`` values still work: true is ``ram``, false is ``none``.
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kdsr.atomic import atomic_write

from .io import image_bits, read_samples

__all__ = ["CACHE_MODES", "CACHE_DIR_NAME", "ImageStore", "cache_mode", "copy_samples", "default_cache_dir"]

CACHE_MODES = ("ram", "disk", "none")
CACHE_DIR_NAME = ".kdsr_cache"


def cache_mode(value: object) -> str:
    """The cache mode of a `data.cache` value: "ram" | "disk" | "none" (true -> ram, false -> none).

    Raises ValueError for anything else.
    """
    if value is True:
        return "ram"
    if value is False:
        return "none"
    if isinstance(value, str) and value in CACHE_MODES:
        return value
    raise ValueError(f"data.cache must be one of ram, disk, none (or true/false), got {value!r}")


def default_cache_dir(train_dir: str | os.PathLike) -> Path:
    """Where `data.cache: disk` writes when `data.cache_dir` is null: ``<train_dir>/.kdsr_cache``."""
    return Path(train_dir) / CACHE_DIR_NAME


def _cache_name(path: Path, bits: int) -> str:
    st = path.stat()
    return f"{path.name}.{st.st_size}-{st.st_mtime_ns}{'-u16' if bits == 16 else ''}.npy"


def _header_bits(path: Path) -> int:
    """The file's depth from its header; 8 when the header does not open (the decode reports that)."""
    try:
        return image_bits(path)
    except (OSError, ValueError):
        return 8


def copy_samples(out: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into ``out`` (same shape): as is when the dtypes match, uint8 into uint16 scaled by 257.

    Exact: an 8-bit level k is k / 255 == 257·k / 65535. Raises TypeError for uint16 into uint8.
    """
    if out.dtype == src.dtype:
        np.copyto(out, src)
    elif out.dtype == np.uint16 and src.dtype == np.uint8:
        np.multiply(src, 257, out=out, dtype=np.uint16)
    else:
        raise TypeError(f"cannot copy {src.dtype} samples into a {out.dtype} buffer")


class ImageStore:
    """(3, H, W) uint8 / uint16 arrays of ``files`` by index, in one of CACHE_MODES (see the module doc).

    Files that fail to decode while a ram/disk cache is built are dropped with one warning each; ``files``
    lists the ones kept. Raises ValueError if none is left, OSError if the disk cache cannot be written.
    """

    def __init__(
        self,
        files: list[Path],
        mode: str = "none",
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self.mode = cache_mode(mode)
        self.files = [Path(f) for f in files]
        self.bits = [_header_bits(f) for f in self.files]
        self._ram: list[np.ndarray] | None = None
        self._disk: list[Path] | None = None
        self._maps: dict[int, np.ndarray] = {}
        if self.mode == "ram":
            self._build_ram(progress)
        elif self.mode == "disk":
            if cache_dir is None:
                raise ValueError("ImageStore: mode 'disk' needs a cache_dir")
            self.cache_dir = Path(cache_dir)
            self._build_disk(progress)
        if not self.files:
            raise ValueError("none of the training images could be decoded")

    def __len__(self) -> int:
        return len(self.files)

    def _decode_all(self, progress: bool, desc: str, todo: list[int]):
        for i in tqdm(todo, desc=desc, unit="img", leave=False, disable=not progress or not todo):
            try:
                yield i, read_samples(self.files[i])
            except (OSError, ValueError) as exc:
                warnings.warn(f"skipping undecodable image {self.files[i]}: {exc}", stacklevel=3)
                yield i, None

    def _build_ram(self, progress: bool) -> None:
        arrays = dict(self._decode_all(progress, "caching HR images in RAM", list(range(len(self.files)))))
        kept = [i for i in range(len(self.files)) if arrays[i] is not None]
        self.files = [self.files[i] for i in kept]
        self.bits = [16 if arrays[i].dtype == np.uint16 else 8 for i in kept]
        self._ram = [arrays[i] for i in kept]

    def _build_disk(self, progress: bool) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        targets = [self.cache_dir / _cache_name(f, b) for f, b in zip(self.files, self.bits, strict=True)]
        todo = [i for i, t in enumerate(targets) if not t.is_file()]
        bad = set()
        for i, arr in self._decode_all(progress, f"caching HR images in {self.cache_dir}", todo):
            if arr is None:
                bad.add(i)
                continue
            atomic_write(targets[i], lambda handle, a=arr: np.save(handle, a, allow_pickle=False))
            for stale in self.cache_dir.glob(f"{glob.escape(self.files[i].name)}.*.npy"):
                if stale != targets[i]:  # (DDP ranks may build the same cache at once: keep the fresh one)
                    stale.unlink(missing_ok=True)
        kept = [i for i in range(len(self.files)) if i not in bad]
        self.files = [self.files[i] for i in kept]
        self.bits = [self.bits[i] for i in kept]
        self._disk = [targets[i] for i in kept]

    @property
    def dtype(self) -> torch.dtype:
        """torch.uint16 when any image is 16-bit, else torch.uint8: the dtype of batches from the store."""
        return torch.uint16 if 16 in self.bits else torch.uint8

    def array(self, index: int) -> np.ndarray:
        """Image ``index`` as a (3, H, W) array at its file's depth (uint8 / uint16; a read-only memory map
        in disk mode: do not write). Copy crops into batches with `copy_samples`.

        Mode none decodes the file (OSError / ValueError when it does not decode).
        """
        if self._ram is not None:
            return self._ram[index]
        if self._disk is not None:
            arr = self._maps.get(index)
            if arr is None:
                arr = np.load(self._disk[index], mmap_mode="r", allow_pickle=False)
                self._maps[index] = arr
            return arr
        return read_samples(self.files[index])
