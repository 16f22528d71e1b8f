"""Gaussian kernels, blur, noise and the classic degradation pipeline against float64 oracles."""

import math

import numpy as np
import pytest
import torch

from kdsr import degradations as deg


def iso_oracle(sigma: float, size: int) -> np.ndarray:
    r = size // 2
    k = np.array(
        [
            [math.exp(-(x * x + y * y) / (2 * sigma * sigma)) for x in range(-r, r + 1)]
            for y in range(-r, r + 1)
        ]
    )
    return k / k.sum()


def aniso_oracle(l1: float, l2: float, theta: float, size: int) -> np.ndarray:
    """exp(-½ pᵀ Σ⁻¹ p), Σ = R diag(λ1², λ2²) Rᵀ built and inverted explicitly; p = (column, row) offset."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([l1 * l1, l2 * l2]) @ rot.T)
    r = size // 2
    k = np.zeros((size, size))
    for row, y in enumerate(range(-r, r + 1)):
        for col, x in enumerate(range(-r, r + 1)):
            p = np.array([x, y], dtype=np.float64)
            k[row, col] = math.exp(-0.5 * p @ inv @ p)
    return k / k.sum()


def blur_oracle(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Reflect-padded cross-correlation of one (C, H, W) image, float64 loops over kernel taps."""
    r = kernel.shape[0] // 2
    padded = np.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = img.shape[1:]
    out = np.zeros_like(img)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[:, dy : dy + h, dx : dx + w]
    return out


def test_gaussian8_and_aniso_sets():
    assert deg.GAUSSIAN8[4] == (1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2)
    assert deg.GAUSSIAN8[2] == (0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6)
    assert deg.GAUSSIAN8[3] == (1.35, 1.5, 1.65, 1.8, 1.95, 2.1, 2.25, 2.4)
    assert len(deg.ANISO_TEST_KERNELS) == 9 and deg.ANISO_TEST_KERNELS[2] == (3.5, 1.5, 30.0)


def test_isotropic_kernel_matches_definition():
    sigmas = torch.rand(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3.8 + 0.2
    batch = deg.isotropic_gaussian_kernel(sigmas, 21, dtype=torch.float64)
    assert batch.shape == (5, 21, 21)
    for s, k in zip(sigmas.tolist(), batch, strict=True):
        np.testing.assert_allclose(k.numpy(), iso_oracle(s, 21), rtol=1e-12, atol=1e-15)
        assert abs(k.sum().item() - 1.0) < 1e-12
    single = deg.isotropic_gaussian_kernel(2.6, 15)
    assert single.shape == (15, 15) and single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), iso_oracle(2.6, 15), rtol=1e-6, atol=1e-8)
    assert abs(single.sum().item() - 1.0) < 1e-6


def test_anisotropic_kernel_matches_definition():
    g = torch.Generator().manual_seed(1)
    l1 = torch.rand(4, generator=g, dtype=torch.float64) * 3.8 + 0.2
    l2 = torch.rand(4, generator=g, dtype=torch.float64) * 3.8 + 0.2
    th = torch.rand(4, generator=g, dtype=torch.float64) * math.pi
    ks = deg.anisotropic_gaussian_kernel(l1, l2, th, 21, dtype=torch.float64)
    for i in range(4):
        ref = aniso_oracle(l1[i].item(), l2[i].item(), th[i].item(), 21)
        np.testing.assert_allclose(ks[i].numpy(), ref, rtol=1e-10, atol=1e-14)
        assert abs(ks[i].sum().item() - 1.0) < 1e-12


def test_iso_equals_aniso_with_equal_lambdas_for_any_theta():
    thetas = torch.rand(6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 * math.pi
    sig = torch.full((6,), 1.7, dtype=torch.float64)
    iso = deg.isotropic_gaussian_kernel(sig, 21, dtype=torch.float64)
    aniso = deg.anisotropic_gaussian_kernel(sig, sig, thetas, 21, dtype=torch.float64)
    torch.testing.assert_close(aniso, iso, rtol=0, atol=1e-15)


def test_aniso_orientation_and_rotation():
    # theta = 0: lambda1 runs along x, the column axis, so the spread across columns is the large one.
    k = deg.anisotropic_gaussian_kernel(4.0, 0.5, 0.0, 21, dtype=torch.float64)
    offsets = torch.arange(-10, 11, dtype=torch.float64)
    var_x = (k.sum(0) * offsets**2).sum()
    var_y = (k.sum(1) * offsets**2).sum()
    assert var_x > 10 * var_y
    # Rotating by 90 degrees swaps the axes: the kernel is transposed.
    turned = deg.anisotropic_gaussian_kernel(4.0, 0.5, math.pi / 2, 21, dtype=torch.float64)
    torch.testing.assert_close(turned, k.T, rtol=0, atol=1e-15)


def test_kernel_from_params_degrees():
    k = deg.kernel_from_params({"kind": "aniso", "lambda1": 3.5, "lambda2": 1.5, "theta_deg": 30.0})
    ref = deg.anisotropic_gaussian_kernel(3.5, 1.5, math.radians(30.0))
    torch.testing.assert_close(k, ref)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: deg.isotropic_gaussian_kernel(-1.0), ValueError, "> 0"),
        (lambda: deg.isotropic_gaussian_kernel(0.0), ValueError, "> 0"),
        (lambda: deg.isotropic_gaussian_kernel(float("nan")), ValueError, "finite"),
        (lambda: deg.isotropic_gaussian_kernel(1.0, size=20), ValueError, "odd"),
        (lambda: deg.isotropic_gaussian_kernel(torch.ones(2, 2)), ValueError, "1-D"),
        (lambda: deg.anisotropic_gaussian_kernel(1.0, -0.2, 0.0), ValueError, "lambda2"),
        (
            lambda: deg.anisotropic_gaussian_kernel(torch.ones(3), torch.ones(2), 0.0),
            ValueError,
            "same length",
        ),
        (lambda: deg.isotropic_gaussian_kernel("wide"), TypeError, "number"),
    ],
)
def test_kernel_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_blur_matches_oracle_per_sample_and_shared():
    g = torch.Generator().manual_seed(4)
    img = torch.rand(3, 3, 24, 30, generator=g, dtype=torch.float64)
    kernels = torch.rand(3, 7, 7, generator=g, dtype=torch.float64)  # asymmetric: pins correlation vs conv
    kernels /= kernels.sum(dim=(1, 2), keepdim=True)
    for method in ("conv", "fft"):
        out = deg.blur(img, kernels, method=method)
        for i in range(3):
            np.testing.assert_allclose(
                out[i].numpy(), blur_oracle(img[i].numpy(), kernels[i].numpy()), atol=1e-13
            )
        shared = deg.blur(img, kernels[0], method=method)
        np.testing.assert_allclose(
            shared[2].numpy(), blur_oracle(img[2].numpy(), kernels[0].numpy()), atol=1e-13
        )
    single = deg.blur(img[1].float(), kernels[1].float(), method="conv")
    np.testing.assert_allclose(single.numpy(), blur_oracle(img[1].numpy(), kernels[1].numpy()), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_constant_image_stays_constant(scale):
    level = 77 / 255
    hr = torch.full((2, 3, 12 * scale, 12 * scale), level)
    kernels = torch.stack(
        [deg.isotropic_gaussian_kernel(2.2), deg.anisotropic_gaussian_kernel(3.5, 1.0, 0.7)]
    )
    lr = deg.degrade(hr, kernels, scale=scale)
    assert lr.shape == (2, 3, 12, 12)
    assert torch.equal(lr, torch.full_like(lr, level))


def test_degrade_is_blur_then_resize_then_quantise():
    g = torch.Generator().manual_seed(5)
    hr = torch.rand(2, 3, 32, 40, generator=g, dtype=torch.float64)
    k = deg.isotropic_gaussian_kernel(torch.tensor([1.0, 3.0]), dtype=torch.float64)
    lr = deg.degrade(hr, k, scale=4)
    manual = np.stack([blur_oracle(hr[i].numpy(), k[i].numpy()) for i in range(2)])
    manual = deg.imresize(torch.from_numpy(manual), 0.25)
    manual = torch.clamp(torch.round(manual * 255), 0, 255) / 255
    assert torch.equal(lr, manual)
    assert torch.equal(torch.round(lr * 255), lr * 255)  # 8-bit levels
    no_blur = deg.degrade(hr, None, scale=4, quantize_output=False)
    torch.testing.assert_close(no_blur, deg.imresize(hr, 0.25))


def test_noise_statistics_and_determinism():
    hr = torch.full((3, 3, 256, 256), 0.5, dtype=torch.float64)
    levels = torch.tensor([0.0, 5.0, 20.0])
    g = torch.Generator().manual_seed(6)
    lr = deg.degrade(hr, None, scale=4, noise_sigma=levels, generator=g, quantize_output=False)
    residual = (lr - 0.5) * 255
    stds = residual.flatten(1).std(dim=1)
    assert stds[0] == 0
    for measured, target in zip(stds[1:].tolist(), (5.0, 20.0), strict=True):
        assert abs(measured / target - 1) < 0.03  # 12288 samples: relative std error ~0.6 %
    assert residual.flatten(1).mean(dim=1).abs().max() < 0.6
    # Channels get independent noise.
    assert abs(np.corrcoef(residual[2, 0].flatten(), residual[2, 1].flatten())[0, 1]) < 0.05
    # Quantised: the variance grows by the 1/12 level² of rounding.
    q = deg.degrade(hr, None, scale=4, noise_sigma=20.0, generator=torch.Generator().manual_seed(6))
    assert abs(((q - 0.5) * 255).std().item() / math.sqrt(400 + 1 / 12) - 1) < 0.03
    again = deg.degrade(
        hr,
        None,
        scale=4,
        noise_sigma=levels,
        generator=torch.Generator().manual_seed(6),
        quantize_output=False,
    )
    assert torch.equal(lr, again)


def test_classic_degradation_per_sample_and_per_batch():
    hr = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    d = deg.ClassicDegradation(scale=4, kind="aniso", noise=(0, 25))
    lr, p = d(hr, generator=torch.Generator().manual_seed(8))
    assert lr.shape == (6, 3, 8, 8) and p["kind"] == "aniso" and p["kernel"].shape == (6, 21, 21)
    for key, (lo, hi) in (
        ("lambda1", (0.2, 4)),
        ("lambda2", (0.2, 4)),
        ("theta", (0, math.pi)),
        ("noise", (0, 25)),
    ):
        assert p[key].shape == (6,) and p[key].min() >= lo and p[key].max() <= hi
        assert len(set(p[key].tolist())) == 6  # one draw per sample
    shared = deg.ClassicDegradation(scale=4, kind="iso", sigma=(0.2, 4.0), per_sample=False)
    lr2, p2 = shared(hr, generator=torch.Generator().manual_seed(9))
    assert len(set(p2["sigma"].tolist())) == 1 and torch.all(p2["noise"] == 0)
    assert torch.equal(lr2, deg.degrade(hr, deg.isotropic_gaussian_kernel(p2["sigma"][0].item()), 4))


def test_classic_degradation_batch_equals_per_image_degrade():
    hr = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    d = deg.ClassicDegradation(scale=4, kind="iso")
    lr, p = d(hr, generator=torch.Generator().manual_seed(11))
    for i in range(4):
        k = deg.isotropic_gaussian_kernel(p["sigma"][i].double(), dtype=torch.float64)
        single = deg.degrade(hr[i], k, 4)
        assert (single - lr[i]).abs().max() <= 1 / 255 + 1e-12  # float32 params; rare one-level flips at most
        assert (single != lr[i]).float().mean() < 0.01
    # The same generator seed gives the same batch.
    again, _ = d(hr, generator=torch.Generator().manual_seed(11))
    assert torch.equal(lr, again)


def test_classic_degradation_defaults_follow_the_paper():
    assert deg.ClassicDegradation(kind="iso").noise == (0.0, 0.0)
    assert deg.ClassicDegradation(kind="aniso").noise == (0.0, 25.0)
    assert deg.ClassicDegradation(sigma=2.6).sigma == (2.6, 2.6)
    with pytest.raises(ValueError, match="kind"):
        deg.ClassicDegradation(kind="motion")
    with pytest.raises(ValueError, match="sigma"):
        deg.ClassicDegradation(sigma=(0.0, 4.0))
    with pytest.raises(ValueError, match="noise"):
        deg.ClassicDegradation(noise=(-1, 5))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: deg.degrade(torch.zeros(3, 32, 32, dtype=torch.uint8), None), TypeError, "floating-point"),
        (lambda: deg.degrade(torch.rand(32, 32), None), ValueError, r"\(C, H, W\)"),
        (lambda: deg.degrade(torch.rand(1, 1, 3, 16, 16), None), ValueError, r"\(C, H, W\)"),
        (
            lambda: deg.degrade(torch.rand(3, 16, 16), deg.isotropic_gaussian_kernel(2.0)),
            ValueError,
            "larger than",
        ),
        (lambda: deg.degrade(torch.rand(3, 30, 32), None, scale=4), ValueError, "multiple of scale"),
        (lambda: deg.degrade(torch.rand(3, 32, 32), None, noise_sigma=-1.0), ValueError, ">= 0"),
        (lambda: deg.degrade(torch.rand(3, 32, 32), torch.ones(4, 4)), ValueError, "odd"),
        (lambda: deg.degrade(torch.rand(2, 3, 32, 32), torch.ones(3, 5, 5) / 25), ValueError, "batch"),
        (lambda: deg.ClassicDegradation()(torch.rand(3, 32, 32)), ValueError, "batch"),
    ],
)
def test_degrade_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator():
    hr = torch.rand(4, 3, 64, 64)
    d = deg.ClassicDegradation(scale=4, kind="aniso")
    lr_cpu, _ = d(hr, generator=torch.Generator().manual_seed(0))
    lr_gpu, p = d(hr.cuda(), generator=torch.Generator().manual_seed(0))
    assert p["kernel"].is_cuda
    assert ((lr_gpu.cpu() - lr_cpu).abs() > 1.5 / 255).sum() == 0


def test_half_precision_inputs_keep_their_dtype():
    hr = torch.full((2, 3, 32, 32), 100 / 255).half()
    lr = deg.degrade(hr, deg.isotropic_gaussian_kernel(1.5), 4, noise_sigma=0.0)
    assert lr.dtype == torch.float16 and lr.shape == (2, 3, 8, 8)
    assert torch.equal(lr.float(), torch.full((2, 3, 8, 8), 100 / 255).half().float())
