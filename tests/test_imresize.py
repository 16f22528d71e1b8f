"""MATLAB-compatible bicubic imresize: hand-computed weights, a float64 oracle, agreement with PyTorch."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdsr import degradations as deg
from kdsr.degradations import resize as imresize_module


def keys_cubic(t: float) -> float:
    """Keys' cubic, a = -0.5, written out piecewise."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def mirror(j: int, n: int) -> int:
    """Symmetric (edge-repeating) reflection of a 0-based index into [0, n)."""
    while j < 0 or j >= n:
        j = -j - 1 if j < 0 else 2 * n - 1 - j
    return j


def oracle_resize_1d(x: np.ndarray, scale: float, out_len: int) -> np.ndarray:
    """MATLAB's imresize along one axis, from its definition: each output sample is the normalised
    kernel-weighted sum over *all* integer input positions (mirrored), in float64 Python loops."""
    n = len(x)
    stretch = scale if scale < 1 else 1.0  # antialiasing: kernel widened by 1/scale when shrinking
    out = np.zeros(out_len)
    for i in range(out_len):
        centre = (i + 0.5) / scale - 0.5  # 0-based input coordinate of output sample i
        weights, values = [], []
        for j in range(
            math.floor(centre) - 3 * int(math.ceil(1 / stretch)) - 3,
            math.ceil(centre) + 3 * int(math.ceil(1 / stretch)) + 4,
        ):
            w = stretch * keys_cubic(stretch * (centre - j))
            if w != 0.0:
                weights.append(w)
                values.append(x[mirror(j, n)])
        out[i] = np.dot(weights, values) / np.sum(weights)
    return out


def oracle_resize_2d(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape
    oh, ow = deg.output_size(h, scale), deg.output_size(w, scale)
    rows = np.stack([oracle_resize_1d(img[:, c], scale, oh) for c in range(w)], axis=1)
    return np.stack([oracle_resize_1d(rows[r], scale, ow) for r in range(oh)], axis=0)


def test_hand_computed_halving_of_a_ramp():
    # Shrinking [1, 2, 3, 4] by 1/2: kernel 0.5·cubic(0.5·d) at d = ±0.5, ±1.5, ±2.5, ±3.5 gives
    # 0.43359375, 0.11328125, -0.03515625, -0.01171875; mirrored taps fold onto the 4 pixels as
    # (0.546875, 0.3984375, 0.1015625, -0.046875) for the first output, reversed for the second.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    out = deg.imresize(x, (1, 0.5))
    folded = np.array([0.546875, 0.3984375, 0.1015625, -0.046875])
    expected = [folded @ [1, 2, 3, 4], folded[::-1] @ [1, 2, 3, 4]]
    assert expected == [1.4609375, 3.5390625]
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64), rtol=0, atol=1e-15)


def test_hand_computed_doubling_weights():
    # Enlarging 2 -> 4: the first output sits at u = 0.75 (1-based); taps at distances 1.75, 0.75, -0.25,
    # -1.25 weigh -0.0234375, 0.2265625, 0.8671875, -0.0703125 and mirror onto (x2, x1, x1, x2).
    x = torch.tensor([[0.3, 1.7]], dtype=torch.float64)
    out = deg.imresize(x, (1, 2))
    first = 1.09375 * 0.3 - 0.09375 * 1.7
    assert out.shape == (1, 4)
    assert abs(out[0, 0].item() - first) < 1e-14
    assert abs(out[0, 3].item() - (1.09375 * 1.7 - 0.09375 * 0.3)) < 1e-14


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2.0, 3.0, 4.0])
def test_matches_float64_oracle(scale):
    g = torch.Generator().manual_seed(int(scale * 1000))
    img = torch.rand(13, 17, generator=g, dtype=torch.float64)
    ours = deg.imresize(img, scale)
    ref = oracle_resize_2d(img.numpy(), scale)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


def test_weights_rows_sum_to_one_and_indices_in_range():
    for in_len, out_len, scale in [(10, 3, 0.25), (7, 21, 3.0), (64, 16, 0.25), (5, 5, 1.0)]:
        idx, w = deg.imresize_weights(in_len, out_len, scale)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-14)
        assert idx.min() >= 0 and idx.max() < in_len


@pytest.mark.parametrize("scale", [0.25, 0.5, 2.0])
def test_agrees_with_torch_antialiased_bicubic_in_the_interior(scale):
    g = torch.Generator().manual_seed(7)
    img = torch.rand(2, 3, 48, 64, generator=g)
    ours = deg.imresize(img, scale)
    theirs = F.interpolate(img, scale_factor=scale, mode="bicubic", antialias=True, align_corners=False)
    m = 3 if scale < 1 else 6  # borders differ: MATLAB mirrors, PyTorch/PIL renormalise truncated taps
    torch.testing.assert_close(ours[..., m:-m, m:-m], theirs[..., m:-m, m:-m], rtol=0, atol=2e-6)
    assert (ours - theirs).abs().max() > 1e-4  # ... and the border really is different


def test_dense_and_gather_paths_agree(monkeypatch):
    img = torch.rand(2, 3, 30, 41, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dense = deg.imresize(img, 0.25), deg.imresize(img, 3.0)
    monkeypatch.setattr(imresize_module, "_DENSE_MAX_ENTRIES", 0)
    imresize_module._device_weights.cache_clear()
    try:
        gathered = deg.imresize(img, 0.25), deg.imresize(img, 3.0)
    finally:
        imresize_module._device_weights.cache_clear()
    for a, b in zip(dense, gathered, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_constant_and_linear_images_are_preserved():
    const = torch.full((3, 20, 24), 0.37, dtype=torch.float64)
    torch.testing.assert_close(deg.imresize(const, 0.25), torch.full((3, 5, 6), 0.37, dtype=torch.float64))
    # Bicubic reproduces linear functions exactly away from the mirrored border.
    ramp = torch.arange(40, dtype=torch.float64).repeat(8, 1) * 0.01
    up = deg.imresize(ramp, 2.0)
    expected = ((torch.arange(80, dtype=torch.float64) + 0.5) / 2 - 0.5) * 0.01
    torch.testing.assert_close(up[:, 4:-4], expected[4:-4].expand(16, -1), rtol=0, atol=1e-14)


def test_size_argument_and_output_size_roundoff():
    img = torch.rand(3, 255, 120)
    out = deg.imresize(img, 1 / 3)
    assert out.shape == (3, 85, 40)  # 255 · (1/3) must not round up to 86
    assert deg.imresize(img, size=(85, 40)).shape == (3, 85, 40)
    torch.testing.assert_close(deg.imresize(img, size=(85, 40)), out)
    assert deg.output_size(10, 0.25) == 3  # MATLAB: ceil(2.5)


def test_dtypes_batches_and_autograd():
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = deg.imresize(img, 0.5)
    out.sum().backward()
    assert img.grad is not None and img.grad.shape == img.shape
    assert deg.imresize(torch.rand(3, 16, 16).half(), 2.0).dtype == torch.float16
    batched = deg.imresize(img.detach(), 0.5)
    torch.testing.assert_close(batched[1], deg.imresize(img.detach()[1], 0.5))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="floating-point"):
        deg.imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        deg.imresize(torch.rand(8), 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        deg.imresize(torch.rand(8, 8), 0.5, size=(4, 4))
    with pytest.raises(ValueError, match="positive"):
        deg.imresize(torch.rand(8, 8), -2.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        deg.imresize(np.zeros((8, 8)), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    img = torch.rand(2, 3, 64, 48)
    torch.testing.assert_close(
        deg.imresize(img.cuda(), 0.25).cpu(), deg.imresize(img, 0.25), rtol=0, atol=1e-6
    )
