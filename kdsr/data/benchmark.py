"""Deterministic LR/HR benchmark pairs: Gaussian8 (iso) or the 9 anisotropic kernels with a noise level."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from ..atomic import atomic_write_text
from ..degradations import ANISO_TEST_KERNELS, GAUSSIAN8, degrade, kernel_from_params
from .io import list_images, modcrop, read_image, read_samples, samples_to_float, write_image

__all__ = ["BenchmarkPair", "benchmark_kernels", "benchmark_pairs", "write_benchmark", "read_benchmark"]

MANIFEST = "manifest.json"


class BenchmarkPair(NamedTuple):
    """One test pair: ``name, lr, hr, params = pair``."""

    name: str  # e.g. "baby_sig1.80" or "baboon_aniso3_n10"
    lr: torch.Tensor  # (3, H/scale, W/scale) float32 in [0, 1], 8-bit levels
    hr: torch.Tensor  # (3, H, W) float32 in [0, 1] at the file's depth (8 or 16 bits), modcropped
    params: dict  # kind, sigma | lambda1/lambda2/theta_deg, noise, scale, kernel_index, image, seed


def benchmark_kernels(kernels: str | Sequence, scale: int) -> list[dict]:
    """Kernel parameter dicts for a named set or an explicit list.

    ``kernels``: "gaussian8" (the Gaussian8 σ list for ``scale``), "aniso" (ANISO_TEST_KERNELS), or a
    list whose items are σ values (iso) or (λ1, λ2, θ_degrees) triples (aniso). Each dict has "kind",
    "kernel_index", "tag" and the kernel's parameters.
    """
    if isinstance(kernels, str):
        if kernels == "gaussian8":
            if scale not in GAUSSIAN8:
                raise ValueError(f"Gaussian8 is defined for scales {sorted(GAUSSIAN8)}, got {scale}")
            kernels = GAUSSIAN8[scale]
        elif kernels == "aniso":
            kernels = ANISO_TEST_KERNELS
        else:
            raise ValueError(f"kernels must be 'gaussian8', 'aniso' or a list, got {kernels!r}")
    out = []
    for i, k in enumerate(kernels):
        if isinstance(k, (int, float)) and not isinstance(k, bool):
            out.append({"kind": "iso", "sigma": float(k), "kernel_index": i, "tag": f"sig{float(k):.2f}"})
        elif isinstance(k, Sequence) and len(k) == 3:
            l1, l2, theta = (float(v) for v in k)
            out.append(
                {
                    "kind": "aniso",
                    "lambda1": l1,
                    "lambda2": l2,
                    "theta_deg": theta,
                    "kernel_index": i,
                    "tag": f"aniso{i + 1}",
                }
            )
        else:
            raise ValueError(
                f"kernel {i}: expected a sigma or a (lambda1, lambda2, theta_deg) triple, got {k!r}"
            )
    if not out:
        raise ValueError("the kernel list is empty")
    return out


def _pair_seed(seed: int, name: str) -> int:
    """A 63-bit seed from (seed, pair name): stable across runs, machines and subsets of the image list."""
    digest = hashlib.sha256(f"{seed}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def benchmark_pairs(
    hr_dir: str | os.PathLike,
    scale: int,
    kernels: str | Sequence = "gaussian8",
    noise: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> list[BenchmarkPair]:
    """Build the LR/HR test pairs of a benchmark folder, the same on every run and machine.

    Every HR image (sorted by file name) is read at its depth (samples / 255, or / 65535 for 16-bit files),
    modcropped to ``scale`` and degraded with every kernel by
    ``kdsr.degradations.degrade`` (21×21 blur, reflect pad, MATLAB bicubic ↓scale, noise, 8-bit rounding),
    computed on the CPU in float64 so the rounded LR does not depend on the machine's float32 kernels. The
    noise of each pair is drawn from a CPU generator seeded from (seed, pair name).

    Args:
        hr_dir: folder of HR images (e.g. shared/data/Set5).
        scale: integer scale factor.
        kernels: "gaussian8", "aniso" or an explicit list (see benchmark_kernels).
        noise: Gaussian noise level in 8-bit units (Table 2 uses 0, 10, 20).
        seed: base seed for the noise.
        progress: show a tqdm bar.

    Returns:
        A list of BenchmarkPair, kernel-major (all images for kernel 1, then kernel 2, ...).
    """
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite level >= 0 in 8-bit units, got {noise!r}")
    specs = benchmark_kernels(kernels, scale)
    files = list_images(hr_dir)
    hrs = [modcrop(torch.from_numpy(read_samples(f)), scale) for f in files]
    kernels_t = [kernel_from_params(s, dtype=torch.float64) for s in specs]
    pairs = []
    bar = tqdm(total=len(specs) * len(files), desc="building benchmark", unit="pair", disable=not progress)
    for spec, kernel in zip(specs, kernels_t, strict=True):
        for path, samples in zip(files, hrs, strict=True):
            name = f"{path.stem}_{spec['tag']}" + (f"_n{noise:g}" if noise > 0 else "")
            gen = torch.Generator().manual_seed(_pair_seed(seed, name))
            hr = samples_to_float(samples, torch.float64)
            lr = degrade(hr, kernel, scale, float(noise), generator=gen)
            params = {k: v for k, v in spec.items() if k != "tag"}
            params.update(noise=float(noise), scale=scale, image=path.stem, seed=seed)
            pairs.append(BenchmarkPair(name, lr.to(torch.float32), hr.to(torch.float32), params))
            bar.update()
    bar.close()
    return pairs


def write_benchmark(
    pairs: Sequence[BenchmarkPair],
    out_dir: str | os.PathLike,
    info: dict | None = None,
    progress: bool = True,
) -> Path:
    """Write pairs as PNGs (HR/<image>.png once per image, LR/<name>.png) and manifest.json (returned);
    `progress` shows a tqdm bar. An HR off the 8-bit grid (from a 16-bit file) is written as a 16-bit PNG."""
    out = Path(out_dir)
    entries, written_hr = [], set()
    for pair in tqdm(pairs, desc="writing PNGs", unit="pair", leave=False, disable=not progress):
        image = pair.params.get("image", pair.name)
        hr_rel = f"HR/{image}.png"
        if hr_rel not in written_hr:
            write_image(out / hr_rel, pair.hr, bits=_bits_needed(pair.hr))
            written_hr.add(hr_rel)
        lr_rel = f"LR/{pair.name}.png"
        write_image(out / lr_rel, pair.lr)
        entries.append({"name": pair.name, "lr": lr_rel, "hr": hr_rel, "params": pair.params})
    manifest = {"format": "kdsr-benchmark/1", **(info or {}), "pairs": entries}
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return path


def _bits_needed(img: torch.Tensor) -> int:
    """8 when every value of the float image is an 8-bit level k / 255 (within float32 rounding), else 16.

    16-bit levels off the 8-bit grid are at least 1/65535 ≈ 1.5e-5 from it; float32 rounding is < 6e-8.
    """
    x = img.detach().to("cpu", torch.float64)
    return 8 if bool(((x * 255.0).round() / 255.0 - x).abs().max() <= 1e-6) else 16


def read_benchmark(out_dir: str | os.PathLike) -> list[BenchmarkPair]:
    """Load pairs written by write_benchmark / ``kdsr degrade`` (same order, same values)."""
    root = Path(out_dir)
    path = root / MANIFEST if root.is_dir() else root
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {root}; create one with `kdsr degrade`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "kdsr-benchmark/1":
        raise ValueError(f"{path} is not a kdsr benchmark manifest")
    base = path.parent
    return [
        BenchmarkPair(e["name"], read_image(base / e["lr"]), read_image(base / e["hr"]), e["params"])
        for e in manifest["pairs"]
    ]
