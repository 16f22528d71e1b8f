"""Steering: turn (model, image, blur σ | strength, calibration) into the degradation the SR network runs on.

    d = resolve_degradation(model, lr, blur_sigma=2.0)     # non-blind: the calibration's D at σ = 2.0
    d = resolve_degradation(model, lr, strength=0.7)       # gentler than the model's own estimate
    sr = kdsr.upscale(model, lr, degradation=d)            # every tile shares this one D

Steering works on the encoder's pooled features P (the vector D is computed from: D = head(P)), because both
runners take it: PyTorch through `head`, the exported ONNX SR graph directly. The calibration stores the mean
P per setting; between settings it is interpolated linearly.

  * blur_sigma=S: P = P_cal(S). The image is not looked at.
  * strength=X: the image's own estimate σ̂ (ridge readout of its own D), moved along the calibration curve
    to X·σ̂ while keeping the image's own offset from the curve: P = P_own + P_cal(X·σ̂) − P_cal(σ̂), with X·σ̂
    σ̂ and X·σ̂ clamped to the calibrated range (so below its low end
    only X > 1 changes anything). X = 1 returns None: plain blind upscaling, bit for bit.
    (docs/steering.md measures this against scaling D itself.)
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .calibration import Calibration, CalibrationError, load_calibration


def runner_of(model):
    """The TileRunner of a KDSRStudent (fp32) or an OnnxStudent."""
    if hasattr(model, "runner"):
        return model.runner()
    from kdsr.inference.runners import torch_runner

    return torch_runner(model)


@torch.no_grad()
def pooled_features(runner, image: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """The whole image's pooled encoder features (B, 4C) float64, computed in tiles when `tile` is set."""
    from kdsr.inference.tiling import encode_image

    if image.dim() == 3:
        image = image.unsqueeze(0)
    identity = dataclasses.replace(runner, head=lambda pooled: pooled.double())
    return encode_image(identity, image, tile)


def steered_pooled(
    calibration: Calibration,
    own: torch.Tensor | None,
    d_own: torch.Tensor | None = None,
    *,
    blur_sigma: float | None = None,
    strength: float | None = None,
) -> torch.Tensor:
    """The pooled features (1, 4C) float64 to run on (see the module docstring).

    own: the image's pooled features (1, 4C); d_own: its D (1, C) (both only needed for `strength`).
    CalibrationError for a σ outside the calibrated range.
    """
    if blur_sigma is not None:
        return calibration.interpolate("blur_sigma", float(blur_sigma))
    sigma_hat = float(calibration.read(d_own)[0, calibration.index("blur_sigma")])
    p = calibration.parameter("blur_sigma")
    here = min(max(sigma_hat, p.low), p.high)  # an estimate below the range moves from its low end
    there = min(max(strength * here, p.low), p.high)
    shift = calibration.interpolate("blur_sigma", there) - calibration.interpolate("blur_sigma", here)
    return own.double().cpu() + shift


def check_steering(blur_sigma: float | None, strength: float | None) -> None:
    """ValueError (one line) unless at most one of blur_sigma / strength is set, each finite and > 0."""
    if blur_sigma is not None and strength is not None:
        raise ValueError("give blur_sigma (non-blind) or strength (relative to the estimate), not both")
    for name, value in (("blur_sigma", blur_sigma), ("strength", strength)):
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@torch.no_grad()
def resolve_degradation(
    model,
    image: torch.Tensor,
    *,
    blur_sigma: float | None = None,
    strength: float | None = None,
    calibration: Calibration | None = None,
    tile: int | None = None,
    runner=None,
) -> torch.Tensor | None:
    """The `degradation=` for `kdsr.upscale` (or an OnnxStudent) that steers `model` on `image`.

    Args:
        model: KDSRStudent (returns D (1, C) in its dtype / device) or OnnxStudent (returns the pooled
            features (1, 4C) float32 its SR graph takes).
        image: (3, H, W) or (1, 3, H, W) float in [0, 1]; only read for `strength`.
        blur_sigma: non-blind σ (HR pixels) inside the calibrated range.
        strength: > 0; 1 = blind (returns None), < 1 gentler, > 1 stronger.
        calibration: default `load_calibration(model)` (beside the weights; fingerprint-checked).
        tile: encode the image in tiles of this many LR pixels (same estimate, bounded memory).
        runner: the TileRunner that estimates the image's own features (default: the model's fp32 one; the
            CLI passes the one it upscales with, e.g. bf16).
    Returns None when nothing is steered (both None, or strength == 1): upscale then estimates D itself.
    Raises ValueError / CalibrationError (one line) for bad values, a missing or foreign calibration.
    """
    check_steering(blur_sigma, strength)
    if blur_sigma is None and (strength is None or strength == 1):
        return None
    calibration = calibration or load_calibration(model)
    runner = runner or runner_of(model)
    own = d_own = None
    if strength is not None:
        own = pooled_features(runner, image, tile)
        if own.shape[0] != 1:
            raise ValueError("strength steers one image at a time; pass (3, H, W) or (1, 3, H, W)")
        d_own = runner_head_d(model, own)
    pooled = steered_pooled(calibration, own, d_own, blur_sigma=blur_sigma, strength=strength)
    if pooled.shape[1] != calibration.pooled.shape[1]:
        raise CalibrationError("the calibration does not fit this model's encoder size")
    if hasattr(model, "runner"):  # ONNX: the SR graph applies the head itself
        return pooled.float()
    param = model.sr_net.head.weight
    return model.encoder.head(pooled.to(param.device, param.dtype))[0]


def runner_head_d(model, pooled: torch.Tensor) -> torch.Tensor:
    """D (1, C) float64 of pooled features (1, 4C) through the PyTorch encoder head. An OnnxStudent has no
    separate head (its SR graph applies it), so strength needs the PyTorch model: ValueError."""
    if hasattr(model, "runner"):
        raise ValueError(
            "strength needs the PyTorch model (its readout is on D, which the ONNX SR graph computes "
            "internally); use --checkpoint, or --blur-sigma with --onnx"
        )
    param = model.sr_net.head.weight
    return model.encoder.head(pooled.to(param.device, param.dtype))[0].double().cpu()
