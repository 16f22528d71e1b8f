"""Real-world (Real-ESRGAN second-order) degradation: kernels, sampler, noise, USM, JPEG, determinism."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import j1

from kdsr.degradations import RealWorldDegradation, usm_sharpen
from kdsr.degradations.realworld import jpeg
from kdsr.degradations.realworld_kernels import (
    KERNEL_PROBS,
    gaussian_family_kernel,
    mixed_kernels,
    sample_kernel_params,
    sinc_kernel,
)
from kdsr.degradations.realworld_noise import gaussian_noise, poisson_noise

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _oracle(fn, size: int) -> np.ndarray:
    """fn(x, y) evaluated point by point on the size×size support, normalised, zero-padded to 21×21."""
    out = np.zeros((21, 21))
    half = size // 2
    for row in range(21):
        for col in range(21):
            x, y = col - 10, row - 10
            if abs(x) <= half and abs(y) <= half:
                out[row, col] = fn(x, y)
    return out / out.sum()


def _quad(sx, sy, th):
    def q(x, y):
        sigma = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        cov = sigma @ np.diag([sx**2, sy**2]) @ sigma.T
        v = np.array([x, y], dtype=np.float64)
        return float(v @ np.linalg.inv(cov) @ v)

    return q


@pytest.mark.parametrize("size,sx,sy,th,beta", [(21, 2.3, 0.7, 0.6, 1.7), (9, 1.1, 2.9, -2.2, 0.6)])
def test_gaussian_family_matches_closed_forms(size, sx, sy, th, beta):
    q = _quad(sx, sy, th)
    args = (torch.tensor([size]), _t(sx), _t(sy), _t(th), _t(beta))
    cases = {
        "gaussian": lambda x, y: math.exp(-0.5 * q(x, y)),
        "generalized": lambda x, y: math.exp(-0.5 * q(x, y) ** beta),
        "plateau": lambda x, y: 1.0 / (q(x, y) ** beta + 1.0),
    }
    for kind, fn in cases.items():
        got = gaussian_family_kernel(kind, *args)[0].numpy()
        np.testing.assert_allclose(got, _oracle(fn, size), rtol=1e-10, atol=1e-14, err_msg=kind)
        assert abs(got.sum() - 1) < 1e-12


@pytest.mark.parametrize("size,omega", [(7, 1.3), (13, 0.7), (21, 3.1)])
def test_sinc_matches_bessel_formula(size, omega):
    def fn(x, y):
        r = math.hypot(x, y)
        return omega**2 / (4 * math.pi) if r == 0 else omega * j1(omega * r) / (2 * math.pi * r)

    got = sinc_kernel(torch.tensor([size]), _t(omega))[0].numpy()
    # torch.special.bessel_j1 is accurate to ~1e-7 absolute (a float32-grade series), scipy's j1 to 1e-15.
    np.testing.assert_allclose(got, _oracle(fn, size), rtol=3e-7, atol=3e-8)  # normalisation spreads it


def test_rotation_covariance():
    size = torch.tensor([21])
    k = gaussian_family_kernel("gaussian", size, _t(2.5), _t(0.6), _t(0.4))[0]
    swapped = gaussian_family_kernel("gaussian", size, _t(0.6), _t(2.5), _t(0.4 + math.pi / 2))[0]
    half_turn = gaussian_family_kernel("gaussian", size, _t(2.5), _t(0.6), _t(0.4 + math.pi))[0]
    quarter = gaussian_family_kernel("gaussian", size, _t(2.5), _t(0.6), _t(0.4 + math.pi / 2))[0]
    torch.testing.assert_close(swapped, k, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(half_turn, k, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(quarter, torch.rot90(k, -1), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(quarter, k)


def test_sampler_type_frequencies_within_binomial_tolerance():
    n = 20000
    p = sample_kernel_params(n, generator=torch.Generator().manual_seed(3))
    probs = [0.1] + [0.9 * q for q in KERNEL_PROBS]
    counts = torch.bincount(p.kind, minlength=7).double()
    for kind, prob in enumerate(probs):
        tol = 4.5 * math.sqrt(n * prob * (1 - prob))
        assert abs(counts[kind] - n * prob) < tol, (kind, counts[kind].item(), n * prob)
    sizes = torch.bincount(p.size, minlength=22)[7::2].double()
    assert sizes.sum() == n and bool((sizes - n / 8).abs().max() < 4.5 * math.sqrt(n / 8))
    head = type(p)(
        *(getattr(p, f)[:1000] for f in ("kind", "size", "sigma_x", "sigma_y", "theta", "beta", "omega_c"))
    )
    kernels = mixed_kernels(head)
    torch.testing.assert_close(kernels.sum((-2, -1)), torch.ones(1000, dtype=torch.float64))
    outside = torch.arange(21).sub(10).abs().reshape(1, 1, 21) > (head.size // 2).reshape(-1, 1, 1)
    assert kernels.masked_select(outside.expand(-1, 21, -1)).abs().max() == 0  # zero padding to 21
    sigma_iso = p.sigma_x[p.kind == 1]
    assert bool((sigma_iso >= 0.2).all() and (sigma_iso <= 3.0).all())
    assert bool((p.beta[p.kind == 3] >= 0.5).all() and (p.beta[p.kind >= 5] <= 2.0).all())


def test_gaussian_noise_sigma_and_gray():
    g = torch.Generator().manual_seed(0)
    img = torch.full((2, 3, 128, 128), 0.5)
    noise = gaussian_noise(img, _t(10.0, 25.0), torch.tensor([False, True]), g)
    assert abs(noise[0].std().item() * 255 - 10.0) < 0.3
    assert abs(noise[1].std().item() * 255 - 25.0) < 0.8
    assert torch.equal(noise[1, 0], noise[1, 2]) and not torch.equal(noise[0, 0], noise[0, 2])


def test_poisson_variance_proportional_to_signal():
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0, 1, 256).repeat(3, 256, 1)  # 256 unique 8-bit levels -> 256 Poisson levels
    img = torch.stack([ramp * 0 + 0.2, ramp * 0 + 0.8])
    img[:, :, 0, :] = ramp[:, 0, :]  # keep 256 unique values per image
    noise = poisson_noise(img, _t(1.0, 1.0), torch.tensor([False, False]), g)
    var_low, var_high = noise[0, :, 1:].var().item(), noise[1, :, 1:].var().item()
    # Var(Poisson(λ·L)/L) = λ/L with L = 256 levels.
    assert abs(var_low - 0.2 / 256) < 0.05 * 0.2 / 256
    assert abs(var_high - 0.8 / 256) < 0.05 * 0.8 / 256
    gray = poisson_noise(img, _t(2.0, 2.0), torch.tensor([True, True]), g)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_usm_matches_hand_computation_on_step_edge():
    img = torch.zeros(1, 1, 64, 80, dtype=torch.float64)
    img[..., 40:] = 0.8
    img += 0.1
    sigma = 0.3 * ((51 - 1) * 0.5 - 1) + 0.8
    g = np.exp(-((np.arange(51) - 25) ** 2) / (2 * sigma**2))
    g /= g.sum()

    def blur(a):  # separable, reflect-101 border, independent of kornia
        p = np.pad(a, 25, mode="reflect")
        rows = np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 1, p)
        return np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 0, rows)

    a = img[0, 0].numpy()
    res = a - blur(a)
    soft = blur((np.abs(res) * 255 > 10).astype(np.float64))
    want = soft * np.clip(a + 0.5 * res, 0, 1) + (1 - soft) * a
    got = usm_sharpen(img)[0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-10)
    assert got[:, 41].mean() > a[:, 41].mean() + 0.01  # overshoot on the bright side of the edge


def _pillow_jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(back).permute(2, 0, 1)


def test_jpeg_close_to_pillow():
    """kornia's codec vs Pillow's libjpeg: mean |difference| < 0.01 at q 30…95 (stated tolerance)."""
    path = sorted((DATA / "Set5").glob("*.png"))[0]
    img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
    img = img.permute(2, 0, 1)[:, :128, :128].contiguous()
    for q in (30, 50, 70, 95):
        ours = jpeg(img[None], torch.tensor([float(q)]))[0]
        ref = _pillow_jpeg(img, q)
        err = (ours - ref).abs().mean().item()
        assert err < 0.01, (q, err)
        assert (ours - img).abs().mean().item() > 0.5 * (ref - img).abs().mean().item()  # it did compress


@pytest.fixture(scope="module")
def hr():
    return torch.rand(3, 3, 64, 72, generator=torch.Generator().manual_seed(5))


def test_deterministic_on_8bit_grid(hr):
    deg = RealWorldDegradation(scale=4)
    a, params = deg(hr, generator=torch.Generator().manual_seed(0), return_params=True)
    b = deg(hr, generator=torch.Generator().manual_seed(0))
    c = deg(hr, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 16, 18) and a.dtype == hr.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a >= 0).all() and (a <= 1).all())
    torch.testing.assert_close(a * 255, (a * 255).round(), rtol=0, atol=1e-4)
    rec = params.record(2)
    assert set(rec) == {"first", "second", "final_sinc", "final_resize_mode", "order"}
    assert 30 <= rec["first"]["jpeg_quality"] <= 95


def test_every_field_overridable(hr):
    quiet = RealWorldDegradation(
        scale=4,
        noise_range=(1.0, 1.0),
        noise_range2=(1.0, 1.0),
        gaussian_noise_prob=1.0,
        gaussian_noise_prob2=1.0,
        jpeg_range=(95.0, 95.0),
        jpeg_range2=(95.0, 95.0),
    )
    _, p = quiet(hr, generator=torch.Generator().manual_seed(0), return_params=True)
    assert bool(p.first.gaussian.all()) and bool((p.second.jpeg_quality == 95).all())


@pytest.mark.parametrize(
    "bad,err",
    [
        (torch.rand(1, 3, 63, 64), ValueError),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError),
        (torch.rand(3, 64, 64), ValueError),
    ],
)
def test_bad_input_is_a_clear_error(bad, err):
    with pytest.raises(err, match="hr"):
        RealWorldDegradation(scale=4)(bad)


def _luma_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Y-channel PSNR (BT.601, [16, 235]) of two (3, H, W) images on the 8-bit grid, written out."""
    w = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).reshape(3, 1, 1)
    ya = (torch.round(a.double() * 255) / 255 * w).sum(0) + 16
    yb = (torch.round(b.double() * 255) / 255 * w).sum(0) + 16
    return float(10 * torch.log10(255.0**2 / ((ya - yb) ** 2).mean()))


@pytest.mark.parametrize("quality", [30, 70])
def test_jpeg_strength_matches_libjpeg(quality):
    """The JPEG stage compresses as hard as Pillow's libjpeg at the same quality: luma PSNR to the source
    within 0.3 dB (issue 20). kornia's soft rounding (round(x) + (x - round(x))**3) is > 0.3 dB too mild."""
    from kornia.enhance import jpeg_codec_differentiable

    img = torch.from_numpy(
        np.asarray(Image.open(DATA / "Set14" / "lenna.png").convert("RGB"), np.float32) / 255
    )
    img = img.permute(2, 0, 1).contiguous()
    ref = _luma_psnr(_pillow_jpeg(img, quality), img)
    ours = _luma_psnr(jpeg(img[None], torch.tensor([float(quality)]))[0], img)
    soft = _luma_psnr(jpeg_codec_differentiable(img[None], torch.tensor([float(quality)]))[0], img)
    assert abs(ours - ref) < 0.3, (ours, ref)
    assert soft - ref > 0.3, (soft, ref)  # the bar can see a codec that is too mild


def _bilinear_oracle(img: np.ndarray, scale: float) -> np.ndarray:
    """Half-pixel bilinear resize of a (H, W) float64 image where the sampling step is 1/scale (what
    ``scale_factor=scale`` means), output floor(H·scale) x floor(W·scale), edge-clamped."""
    h, w = img.shape
    oh, ow = int(h * scale), int(w * scale)

    def axis(n_out, n_in):
        src = np.maximum((np.arange(n_out) + 0.5) / scale - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = axis(oh, h)
    c0, c1, fc = axis(ow, w)
    top = img[r0][:, c0] * (1 - fc) + img[r0][:, c1] * fc
    bottom = img[r1][:, c0] * (1 - fc) + img[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def test_first_stage_resize_uses_the_scale_factor():
    """Stage 1 resizes with scale_factor=s as Real-ESRGAN (grid step 1/s), not to size (int(h·s), int(w·s))
    (whose step is h / int(h·s)): compared with a hand-written bilinear sampler."""
    img = torch.rand(1, 3, 64, 56, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    from kdsr.degradations.realworld import RESIZE_MODES

    got = RealWorldDegradation._rescale(img, 0.37, RESIZE_MODES.index("bilinear"))
    want = _bilinear_oracle(img[0, 1].numpy(), 0.37)
    assert got.shape[-2:] == want.shape == (23, 20)
    np.testing.assert_allclose(got[0, 1].numpy(), want, atol=1e-12)
