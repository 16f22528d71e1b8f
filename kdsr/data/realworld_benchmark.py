"""Paired real-world test sets: a deterministic Real-ESRGAN-degraded set, and (LR, HR) folders by name.

pairs = realworld_pairs("Set14", scale=4, seed=0)       # params["realworld"] is what was drawn per image
pairs = paired_folder_pairs("real/LR", "real/HR", 4)    # AIM19 / NTIRE20-style folders
"""

from __future__ import annotations

import os

import torch
from tqdm import tqdm

from kdsr.degradations.realworld import RealWorldDegradation

from .benchmark import BenchmarkPair, _pair_seed
from .io import list_images, modcrop, read_image, read_samples, samples_to_float

__all__ = ["realworld_pairs", "paired_folder_pairs"]


def realworld_pairs(
    hr_dir: str | os.PathLike, scale: int = 4, seed: int = 0, progress: bool = False
) -> list[BenchmarkPair]:
    """One real-world LR per HR image (modcropped, at its depth: 8 or 16 bits), seeded by (seed, image name),
    computed in float64 on CPU.

    Returns BenchmarkPairs named "<image>_realworld"; params hold scale, image, seed and the per-image draws.
    """
    deg = RealWorldDegradation(scale=scale)
    pairs = []
    for path in tqdm(list_images(hr_dir), desc="real-world pairs", unit="img", disable=not progress):
        name = f"{path.stem}_realworld"
        hr = samples_to_float(modcrop(torch.from_numpy(read_samples(path)), scale), torch.float64)
        gen = torch.Generator().manual_seed(_pair_seed(seed, name))
        lr, drawn = deg(hr[None], generator=gen, return_params=True)
        params = {"kind": "realworld", "scale": scale, "image": path.stem, "seed": seed}
        params["realworld"] = drawn.record(0)
        pairs.append(BenchmarkPair(name, lr[0].to(torch.float32), hr.to(torch.float32), params))
    return pairs


def paired_folder_pairs(
    lr_dir: str | os.PathLike, hr_dir: str | os.PathLike, scale: int
) -> list[BenchmarkPair]:
    """Match each LR file to the HR file of the same stem (or whose stem + "_" starts the LR stem).

    Raises ValueError naming the first LR file without an HR partner or with a size that is not HR / scale.
    """
    hr_files = {p.stem: p for p in list_images(hr_dir)}
    lr_files = list_images(lr_dir)
    if not lr_files:
        raise ValueError(f"no images in --lr-dir {lr_dir}")
    pairs = []
    for lr_path in lr_files:
        stem = lr_path.stem
        match = hr_files.get(stem) or next(
            (p for s, p in sorted(hr_files.items(), key=lambda kv: -len(kv[0])) if stem.startswith(s + "_")),
            None,
        )
        if match is None:
            raise ValueError(f"LR image {lr_path.name} has no HR image of the same name in {hr_dir}")
        lr, hr = read_image(lr_path), modcrop(read_image(match), scale)
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
            raise ValueError(
                f"{lr_path.name} is {lr.shape[-1]}x{lr.shape[-2]} but {match.name} is "
                f"{hr.shape[-1]}x{hr.shape[-2]}: not x{scale} (check --scale)"
            )
        pairs.append(BenchmarkPair(stem, lr, hr, {"kind": "paired", "image": match.stem, "scale": scale}))
    return pairs
