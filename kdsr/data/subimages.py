"""BasicSR-style sub-images: cut large HR images into overlapping crop×crop tiles for faster loading.

    report = extract_subimages("DF2K/HR", "DF2K/HR_sub", crop=480, step=240, thresh_size=0)

Tiles start every ``step`` pixels; when the last tile leaves more than ``thresh_size`` pixels uncovered at the
bottom/right, one more tile flush with that edge is added (BasicSR's extract_subimages.py; its DIV2K defaults
are crop 480, step 240, thresh_size 0). Tile k (row-major, from 1) of ``name.ext`` is written as
``name_s{k:03d}.png`` through kdsr.data.io (atomic; samples unchanged: 8 or 16 bits, alpha, grayscale and ICC
profile kept; EXIF orientation applied, as training reads images). Images smaller than the crop are skipped
and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from .io import list_images, read_pixels, write_pixels

__all__ = ["SubimageReport", "extract_subimages", "tile_starts"]


@dataclass
class SubimageReport:
    """What extract_subimages did: images read, tiles written, images skipped (smaller than the crop)."""

    images: int = 0
    tiles: int = 0
    skipped: list[str] | None = None


def tile_starts(length: int, crop: int, step: int, thresh_size: int = 0) -> list[int]:
    """Start offsets of the tiles along one side of ``length`` pixels ([] when length < crop)."""
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh_size:
        starts.append(length - crop)
    return starts


def extract_subimages(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    crop: int = 480,
    step: int = 240,
    thresh_size: int = 0,
    progress: bool = True,
) -> SubimageReport:
    """Write the tiles of every image directly inside ``in_dir`` into ``out_dir`` (created); see the module.

    Raises ValueError for crop/step < 1, thresh_size < 0 or out_dir == in_dir;
    FileNotFoundError / ValueError (list_images) for a missing or image-less in_dir; OSError when an image
    does not decode or a tile cannot be written.
    """
    if crop < 1 or step < 1 or thresh_size < 0:
        raise ValueError(
            f"need --crop >= 1, --step >= 1, --thresh-size >= 0; got {crop}, {step}, {thresh_size}"
        )
    src, dst = Path(in_dir), Path(out_dir)
    files = list_images(src)
    if dst.resolve() == src.resolve():
        raise ValueError(f"OUT_DIR must differ from IN_DIR ({src}); the tiles would mix with the images")
    report = SubimageReport(skipped=[])
    for path in tqdm(files, desc="sub-images", unit="img", disable=not progress):
        try:
            px = read_pixels(path)
        except OSError as exc:
            raise OSError(f"{path} does not decode ({exc}); remove or replace it") from None
        height, width = px.rgb.shape[:2]
        rows, cols = tile_starts(height, crop, step, thresh_size), tile_starts(width, crop, step, thresh_size)
        report.images += 1
        if not rows or not cols:
            report.skipped.append(path.name)
            continue
        index = 0
        for top in rows:
            for left in cols:
                index += 1
                window = (slice(top, top + crop), slice(left, left + crop))
                alpha = None if px.alpha is None else px.alpha[window].copy()
                tile = replace(px, rgb=px.rgb[window].copy(), alpha=alpha)
                write_pixels(dst / f"{path.stem}_s{index:03d}.png", tile)
                report.tiles += 1
    return report
