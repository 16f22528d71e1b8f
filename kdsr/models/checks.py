"""Input checks for the KDSR models: each failure raises an exception naming the problem and the fix."""

from __future__ import annotations

import torch

# Smallest LR side accepted. A 3x3-conv network sees mostly zero padding below this; such an input is almost
# always a mistake (a transposed HWC array, a wrong crop).
MIN_LR_SIZE = 4


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # device types autocast does not know
        return False


def check_image(
    x: torch.Tensor,
    name: str,
    *,
    channels: int = 3,
    min_size: int = MIN_LR_SIZE,
    like: torch.Tensor | None = None,
    check_finite: bool = True,
) -> None:
    """Check that `x` is a (B, channels, H, W) floating tensor, H, W >= min_size, finite values.

    With `like` (a model parameter), also check device and (outside autocast) dtype match it.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, {channels}, H, W), got {type(x).__name__}"
        )
    if x.dim() != 4:
        hint = "; add the batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""
        raise ValueError(f"{name} must be 4-D (B, {channels}, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != channels:
        hint = ""
        if channels == 3 and x.shape[1] == 1:
            hint = "; repeat a grayscale image with x.expand(-1, 3, -1, -1)"
        elif channels == 3 and x.shape[1] == 4:
            hint = "; drop the alpha channel with x[:, :3] (the `kdsr upscale` command handles RGBA files)"
        elif channels == 3 and x.shape[-1] in (1, 3, 4):
            hint = "; channels-last (B, H, W, C) data? use x.permute(0, 3, 1, 2)"
        raise ValueError(f"{name} must have {channels} channels (RGB), got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert 8-bit images with x.float() / 255"
        )
    H, W = x.shape[-2:]
    if H < min_size or W < min_size:
        raise ValueError(f"{name} is {H}x{W} pixels; KDSR needs at least {min_size}x{min_size}")
    if like is not None:
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but the model is on {like.device}; move one of them")
        if x.dtype != like.dtype and not _autocast_on(x.device.type):
            raise TypeError(
                f"{name} dtype {x.dtype} differs from the model's {like.dtype}; "
                f"convert with x.to({like.dtype}) or the model with model.to({x.dtype}), or autocast"
            )
    if check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf values; KDSR needs finite pixel values in [0, 1]")
