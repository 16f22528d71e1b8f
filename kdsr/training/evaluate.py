"""Benchmark evaluation (spec §7): Y-channel PSNR/SSIM with a `scale`-pixel border, on (LR, HR) pairs.

Pairs come from `kdsr.data.benchmark_pairs(hr_dir, scale, kernels, noise)`: (name, lr, hr, params).
Teachers see the HR as well (their encoder input is LR + PixelUnshuffle(HR)): their numbers are the
"oracle" upper bound of the method, not a blind result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

BICUBIC = "bicubic"


def _batched(image: torch.Tensor) -> torch.Tensor:
    return image.unsqueeze(0) if image.dim() == 3 else image


def _kernel_label(params: Any) -> str:
    """A short label for a benchmark pair's kernel, e.g. "sigma=1.8" or "aniso(2,0.2,0deg)", plus noise."""
    if not isinstance(params, dict):
        return str(params)
    if params.get("kind") == "iso":
        label = f"sigma={float(params['sigma']):g}"
    elif params.get("kind") == "aniso":
        label = f"aniso({params['lambda1']:g},{params['lambda2']:g},{params['theta_deg']:g}deg)"
    else:
        label = str(params.get("kernel_index", "?"))
    noise = float(params.get("noise", 0.0))
    return label + (f",noise={noise:g}" if noise > 0 else "")


def limit_images(pairs: Sequence[tuple], max_images: int | None) -> list:
    """The pairs of the first `max_images` images (sorted by name), every kernel of each; None keeps all."""
    if max_images is None:
        return list(pairs)

    def image_of(pair: tuple) -> str:
        params = pair[3]
        return params.get("image", pair[0]) if isinstance(params, dict) else pair[0]

    keep = set(sorted({image_of(p) for p in pairs})[:max_images])
    return [p for p in pairs if image_of(p) in keep]


def is_teacher(model: nn.Module | str) -> bool:
    """True for a KDSRTeacher (it needs the HR image too)."""
    return type(model).__name__ == "KDSRTeacher"


@torch.no_grad()
def super_resolve(model: nn.Module | str, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """SR of one LR batch (B,3,h,w) -> (B,3,s*h,s*w) float32 clamped to [0,1]; `model` may be "bicubic"."""
    import kdsr

    if model == BICUBIC:
        sr = kdsr.degradations.imresize(lr, scale)
    elif is_teacher(model):
        sr = model(lr, hr)
    else:
        sr = model(lr)
    return sr.float().clamp_(0, 1)


def evaluate_model(
    model: nn.Module | str,
    pairs: Sequence[tuple],
    scale: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
    extra_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mean PSNR/SSIM of `model` (or "bicubic") over the pairs.

    `extra_metrics` maps a name (e.g. "st-lpips") to a callable (sr, hr) (1, 3, H, W) in [0, 1] -> (1,)
    tensor, computed on the full RGB images (no crop) and reported as a mean and per image.

    Returns {"psnr": float, "ssim": float, "count": int, "per_kernel": {label: {"psnr", "ssim"}},
    "per_image": [{"name", "kernel", "psnr", "ssim"}]}. The HR is cropped to a multiple of `scale`
    before comparison, metrics use the Y channel and shave `scale` pixels.
    """
    import kdsr

    if not pairs:
        raise ValueError("evaluate_model: no (LR, HR) pairs; check the HR folder")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    rows = []
    try:
        for name, lr, hr, params in tqdm(pairs, desc=desc, disable=not progress, leave=False):
            lr_b, hr_b = _batched(lr).to(device, torch.float32), _batched(hr).to(device, torch.float32)
            sr = super_resolve(model, lr_b, hr_b, scale)
            h, w = sr.shape[-2], sr.shape[-1]
            hr_crop = hr_b[..., :h, :w]
            psnr = float(kdsr.metrics.psnr(sr, hr_crop, crop_border=scale, y_channel=True).mean())
            ssim = float(kdsr.metrics.ssim(sr, hr_crop, crop_border=scale, y_channel=True).mean())
            row = {"name": name, "kernel": _kernel_label(params), "psnr": psnr, "ssim": ssim}
            for metric, fn in (extra_metrics or {}).items():
                row[metric] = float(fn(sr.clamp(0, 1), hr_crop).mean())
            rows.append(row)
    finally:
        if was_training:
            model.train()
    per_kernel: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"psnr": [], "ssim": []})
    for row in rows:
        per_kernel[row["kernel"]]["psnr"].append(row["psnr"])
        per_kernel[row["kernel"]]["ssim"].append(row["ssim"])
    return {
        "psnr": sum(r["psnr"] for r in rows) / len(rows),
        "ssim": sum(r["ssim"] for r in rows) / len(rows),
        **{m: sum(r[m] for r in rows) / len(rows) for m in (extra_metrics or {})},
        "count": len(rows),
        "per_kernel": {k: {m: sum(v) / len(v) for m, v in d.items()} for k, d in per_kernel.items()},
        "per_image": rows,
    }
