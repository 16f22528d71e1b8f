"""PSNR / SSIM against independent float64 numpy formulas and closed-form pairs."""

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from kdsr import metrics


def to_levels(img: torch.Tensor) -> np.ndarray:
    return np.clip(np.round(img.double().numpy() * 255), 0, 255)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing Y of a (3, H, W) array in 0..255, per pixel."""
    r, g, b = rgb / 255.0
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def psnr_oracle(sr, hr, crop, y):
    a, b = to_levels(sr), to_levels(hr)
    if crop:
        a, b = a[:, crop:-crop, crop:-crop], b[:, crop:-crop, crop:-crop]
    if y:
        a, b = luma(a), luma(b)
    mse = np.mean((a - b) ** 2)
    return 10 * math.log10(255**2 / mse)


def ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB SSIM of one plane: 11×11 Gaussian σ=1.5 window over every fully-inside position."""
    ax = np.arange(11) - 5
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    pa, pb = sliding_window_view(a, (11, 11)), sliding_window_view(b, (11, 11))
    mu_a = np.einsum("ijkl,kl->ij", pa, win)
    mu_b = np.einsum("ijkl,kl->ij", pb, win)
    var_a = np.einsum("ijkl,kl->ij", pa**2, win) - mu_a**2
    var_b = np.einsum("ijkl,kl->ij", pb**2, win) - mu_b**2
    cov = np.einsum("ijkl,kl->ij", pa * pb, win) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(
        np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    )


def ssim_oracle(sr, hr, crop, y):
    a, b = to_levels(sr), to_levels(hr)
    if crop:
        a, b = a[:, crop:-crop, crop:-crop], b[:, crop:-crop, crop:-crop]
    if y:
        return ssim_plane(luma(a), luma(b))
    return float(np.mean([ssim_plane(a[c], b[c]) for c in range(3)]))


def noisy_pair(seed: int, shape=(2, 3, 40, 48)):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(shape, generator=g)
    sr = (hr + 0.06 * torch.randn(shape, generator=g)).clamp(0, 1)
    return sr, hr


@pytest.mark.parametrize("y_channel", [True, False])
@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_and_ssim_match_float64_oracles(y_channel, crop):
    sr, hr = noisy_pair(1 + crop + y_channel)
    p = metrics.psnr(sr, hr, crop_border=crop, y_channel=y_channel)
    s = metrics.ssim(sr, hr, crop_border=crop, y_channel=y_channel)
    assert p.shape == (2,) and s.shape == (2,) and p.dtype == torch.float64
    for i in range(2):
        assert abs(p[i].item() - psnr_oracle(sr[i], hr[i], crop, y_channel)) < 1e-9
        assert abs(s[i].item() - ssim_oracle(sr[i], hr[i], crop, y_channel)) < 1e-10


def test_single_image_returns_float():
    sr, hr = noisy_pair(5)
    p, s = metrics.psnr(sr[0], hr[0]), metrics.ssim(sr[0], hr[0])
    assert isinstance(p, float) and isinstance(s, float)
    assert p == pytest.approx(metrics.psnr(sr, hr)[0].item(), abs=1e-12)


def test_identical_images():
    _, hr = noisy_pair(6)
    assert torch.all(torch.isinf(metrics.psnr(hr, hr)))
    assert metrics.psnr(hr[0], hr[0]) == math.inf
    torch.testing.assert_close(metrics.ssim(hr, hr), torch.ones(2, dtype=torch.float64))
    # Differences below half an 8-bit level vanish in the quantisation the reference applies.
    levels = torch.round(hr * 255) / 255
    assert torch.all(torch.isinf(metrics.psnr(levels + 0.4 / 255, levels)))
    assert torch.all(torch.isfinite(metrics.psnr(levels + 0.6 / 255, levels)))


def test_known_pair_one_level_everywhere():
    levels = torch.randint(0, 255, (3, 32, 32), generator=torch.Generator().manual_seed(7)).double()
    hr, sr = levels / 255, (levels + 1) / 255  # every channel one level brighter, no clipping
    # Y moves by (65.481 + 128.553 + 24.966) / 255 = 219/255 levels in every pixel.
    expected_y = 10 * math.log10(255**2 / (219 / 255) ** 2)
    assert abs(metrics.psnr(sr, hr, crop_border=4) - expected_y) < 1e-6
    assert abs(expected_y - 49.4527249) < 1e-6  # = 20·log10(255² / 219)
    assert abs(metrics.psnr(sr, hr, crop_border=0, y_channel=False) - 20 * math.log10(255)) < 1e-6


def test_border_is_ignored():
    _, hr = noisy_pair(8)
    sr = hr.clone()
    sr[..., :4, :] = 0
    sr[..., :, -4:] = 1
    assert torch.all(torch.isinf(metrics.psnr(sr, hr, crop_border=4)))
    assert torch.all(metrics.psnr(sr, hr, crop_border=3) < 40)
    torch.testing.assert_close(metrics.ssim(sr, hr, crop_border=4), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.rand(3, 32, 32), torch.rand(3, 32, 36)), ValueError, "shapes differ"),
        ((torch.zeros(3, 32, 32, dtype=torch.uint8),) * 2, TypeError, "float"),
        ((torch.rand(32, 32), torch.rand(32, 32)), ValueError, r"\(C, H, W\)"),
        ((torch.rand(1, 32, 32), torch.rand(1, 32, 32)), ValueError, "y_channel"),
    ],
)
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        metrics.psnr(*args)
    with pytest.raises(error, match=match):
        metrics.ssim(*args)


def test_too_small_for_ssim_and_bad_crop():
    with pytest.raises(ValueError, match="too small"):
        metrics.ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 16), crop_border=4)
    with pytest.raises(ValueError, match="crop_border"):
        metrics.psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 16), crop_border=-1)
    assert metrics.psnr(torch.rand(1, 16, 16), torch.rand(1, 16, 16), y_channel=False) > 0
