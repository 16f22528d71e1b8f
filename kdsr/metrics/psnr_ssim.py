"""PSNR and SSIM with the BasicSR / MATLAB conventions used by KDSR's tables (spec §7, ecosystem §1.9).

Both metrics first quantise the two images to 8-bit levels (as the reference evaluation does), crop
``crop_border`` pixels from every edge, and, with ``y_channel=True``, compare only the BT.601 luma

    Y = 16 + 65.481·R + 128.553·G + 24.966·B   (R, G, B in [0, 1]; Y in [16, 235], not rounded)

on the 0..255 scale. All arithmetic is float64. SSIM is MATLAB's (Wang et al.): an 11×11 Gaussian window with
σ = 1.5, 'valid' filtering, C1 = (0.01·255)², C2 = (0.03·255)²; with ``y_channel=False`` it is averaged over
the RGB channels, and PSNR uses the MSE over all three channels.

Return values: a Python float for a single image (C, H, W); a float64 tensor of shape (B,), one value per
image, for a batch (B, C, H, W) — average it yourself. Identical images give PSNR = inf.
"""

from __future__ import annotations

import torch

__all__ = ["psnr", "ssim", "rgb_to_y", "quantize_8bit"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] float image -> float64 8-bit levels in 0..255: clamp(round(x·255), 0, 255)."""
    return (img.to(torch.float64) * 255.0).round().clamp(0.0, 255.0)


def rgb_to_y(img255: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) RGB on 0..255 -> (…, 1, H, W) BT.601 luma Y = 16 + (65.481 R + …) / 255 on 0..255."""
    w = torch.tensor(_Y_WEIGHTS, dtype=img255.dtype, device=img255.device).reshape(3, 1, 1)
    return 16.0 + (img255 * w).sum(dim=-3, keepdim=True) / 255.0


def _prepare(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, y_channel: bool, min_size: int):
    """Validate, quantise, crop and (optionally) take Y. Returns ((B, C, h, w) float64 pair, was_single)."""
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(
                f"{name} must be a float image in [0, 1], got dtype {t.dtype}; use x.float() / 255"
            )
        if t.dim() not in (3, 4):
            raise ValueError(f"{name} must be (B, C, H, W) or (C, H, W), got shape {tuple(t.shape)}")
    if sr.shape != hr.shape:
        raise ValueError(
            f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)} (modcrop the HR to the scale)"
        )
    if not isinstance(crop_border, int) or isinstance(crop_border, bool) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    single = sr.dim() == 3
    a, b = (t.unsqueeze(0) if single else t for t in (sr, hr))
    if y_channel and a.shape[1] != 3:
        raise ValueError(
            f"y_channel=True needs RGB images (3 channels), got {a.shape[1]}; pass y_channel=False"
        )
    h, w = a.shape[-2:]
    if h - 2 * crop_border < min_size or w - 2 * crop_border < min_size:
        raise ValueError(
            f"image {h}x{w} is too small for crop_border={crop_border} (needs {min_size} pixels left)"
        )
    b = b.to(a.device)
    a, b = quantize_8bit(a), quantize_8bit(b)
    if crop_border:
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b, single


def _finish(values: torch.Tensor, single: bool) -> float | torch.Tensor:
    return float(values[0]) if single else values


def psnr(
    sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 4, y_channel: bool = True
) -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10·log10(255² / MSE), after 8-bit quantisation.

    Args:
        sr, hr: float images in [0, 1], both (B, C, H, W) or both (C, H, W), same shape (any device).
        crop_border: pixels removed from each edge (the scale, by convention).
        y_channel: compare BT.601 luma (needs C == 3); False compares all channels.

    Returns:
        float for one image, float64 (B,) tensor for a batch; inf where the images are identical.
    """
    a, b, single = _prepare(sr, hr, crop_border, y_channel, min_size=1)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    values = 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> +inf
    return _finish(values, single)


def _gaussian_1d(device: torch.device) -> torch.Tensor:
    """The normalised 11-tap Gaussian (σ = 1.5); the 2-D SSIM window is its outer product."""
    ax = torch.arange(_SSIM_SIZE, dtype=torch.float64, device=device) - _SSIM_SIZE // 2
    g = torch.exp(-(ax**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def _valid_filter_1d(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """Correlate along ``dim`` with ``taps``, keeping only positions where the window fits ('valid')."""
    length = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, length) * taps[0]
    for i, t in enumerate(taps[1:], start=1):
        out.add_(x.narrow(dim, i, length), alpha=t)
    return out


def ssim(
    sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 4, y_channel: bool = True
) -> float | torch.Tensor:
    """Structural similarity (MATLAB/BasicSR): 11×11 Gaussian σ=1.5, 'valid' region, 8-bit constants.

    Args and returns as psnr(); values are in [-1, 1], 1 for identical images. With y_channel=False the
    per-channel SSIMs are averaged. The cropped image must be at least 11×11.
    """
    a, b, single = _prepare(sr, hr, crop_border, y_channel, min_size=_SSIM_SIZE)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    g = _gaussian_1d(a.device).tolist()
    # The five local moments at once. The window is separable: a 'valid' column pass then a row pass, each a
    # weighted sum of 11 shifted views (float64 conv2d on CPU is an order of magnitude slower).
    planes = torch.stack([a, b, a * a, b * b, a * b], dim=2)  # (N, C, 5, h, w)
    filtered = _valid_filter_1d(_valid_filter_1d(planes, g, dim=-2), g, dim=-1)
    mu_a, mu_b, aa, bb, ab = filtered.unbind(dim=2)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    values = ssim_map.mean(dim=(2, 3)).mean(dim=1)
    return _finish(values, single)
