"""Where pixels go: the real-world pipeline's intermediate sizes, the paired LR/GT crop, the augmentations.

- Sizes (spec kdsr.md §6b): stage 1 resizes H×W to floor(H·s1)×floor(W·s1); stage 2 to
  floor(H/scale·s2)×floor(W/scale·s2) (from the *HR* size over the scale, whatever stage 1 did); the final
  resize to H/scale×W/scale. Checked on the real pipeline (no stubs), non-square, every resize kind.
- The paired crop against a stand-in degradation (s×s average pooling): the LR crop must be exactly the
  pooling of the GT crop, so the GT window is the LR window times the scale, rows and columns.
- Augmentation: the classic crops reach all eight dihedral variants (h-flip, v-flip, transpose); the
  real-world GT crops reach exactly two (h-flip only, Real-ESRGAN's use_rot: False).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from realworld_trace import assert_trace_matches, trace

from kdsr.data.dataset import HRImageDataset
from kdsr.data.realworld import RealWorldBatches
from kdsr.degradations.realworld import RealWorldDegradation
from kdsr.degradations.realworld_kernels import mixed_kernels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(int(torch.randint(2**62, ())))


@pytest.mark.parametrize("kind", ["up", "down", "keep"])
def test_intermediate_sizes_of_both_stages(monkeypatch, kind):
    """Both stages forced to one resize kind; 4 non-square 48×64 images through the real filters / noise /
    JPEG. The trace's resize events carry (input size, output size): each input is the previous output, so
    blur, noise and JPEG keep the size too."""
    probs = {"up": (1.0, 0.0, 0.0), "down": (0.0, 1.0, 0.0), "keep": (0.0, 0.0, 1.0)}[kind]
    deg = RealWorldDegradation(scale=4, resize_prob=probs, resize_prob2=probs)
    n, hw = 4, (48, 64)
    hr = torch.rand(n, 3, *hw)
    t = trace(monkeypatch, stub=False)
    lr, params = deg(hr, generator=_generator(), return_params=True)
    assert lr.shape == (n, 3, 12, 16)
    kernels = {
        "first": mixed_kernels(params.first.kernel),
        "second": mixed_kernels(params.second.kernel),
        "final": mixed_kernels(params.final_sinc),
    }
    assert_trace_matches(t.events, params, kernels, n, hw, 4)
    if kind == "keep":  # stage 1 is a same-size resize, which an implementation may skip
        return
    resizes = [e for e in t.events if e[0] == "resize"]
    assert len(resizes) == 3 * n  # stage 1, stage 2, final: none is a no-op here
    for i in range(n):
        (a_in, a_out, _), (b_in, b_out, _), (c_in, c_out, _) = (e[1:] for e in resizes[3 * i : 3 * i + 3])
        s1, s2 = float(params.first.resize_scale[i]), float(params.second.resize_scale[i])
        assert a_in == hw and a_out == (int(48 * s1), int(64 * s1))
        assert b_in == a_out and b_out == (int(12 * s2), int(16 * s2))  # H/4·s2, not H·s2
        assert c_in == b_out and c_out == (12, 16)


def _write_png(path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _avg_pool_degradation(hr: torch.Tensor, generator=None, return_params: bool = False):
    """Stand-in degradation: 4×4 average pooling (LR (i, j) = mean of GT rows 4i..4i+3, cols 4j..4j+3);
    with return_params, (LR, None): it draws no parameters."""
    lr = F.avg_pool2d(hr, 4)
    return (lr, None) if return_params else lr


def test_paired_crop_matches_a_stand_in_degradation(tmp_path):
    """40 batches of 2: the LR crop equals the pooled GT crop exactly. LR windows start at (top, left) in
    0..4 each, so a GT window built from the wrong offset (rows for columns, say) is caught unless top = left
    in every batch: probability 5⁻⁴⁰."""
    rng = np.random.default_rng(int(torch.randint(2**62, ())))
    for k in range(3):
        _write_png(tmp_path / f"img{k}.png", rng.integers(0, 256, (40 + 8 * k, 44, 3), dtype=np.uint8))
    for _ in range(40):
        batches = RealWorldBatches(
            tmp_path,
            scale=4,
            gt_size=16,
            crop_size=32,
            batch=2,
            queue_size=2,  # the first batch fills the queue and comes back as it went in
            degradation=_avg_pool_degradation,
            cache="none",
            progress=False,
        )
        lr, hr = batches.next(generator=_generator())
        assert lr.shape == (2, 3, 4, 4) and hr.shape == (2, 3, 16, 16)
        assert torch.equal(lr, F.avg_pool2d(hr, 4)), "the GT crop is not the LR crop's window × scale"


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square on (C, H, W): 4 rotations, each with and without a mirror."""
    out = []
    for flip in (False, True):
        y = torch.flip(x, (-1,)) if flip else x
        out += [torch.rot90(y, k, (-2, -1)) for k in range(4)]
    return out


def _which(crop: torch.Tensor, variants: list[torch.Tensor]) -> int:
    hits = [i for i, v in enumerate(variants) if torch.equal(crop, v)]
    assert len(hits) == 1, "a crop that is not a dihedral variant of the image"
    return hits[0]


def test_classic_augmentation_reaches_all_eight_dihedral_variants(tmp_path):
    """An image exactly the crop size with all-distinct pixels; 200 crops. Each variant has p = 1/8, so one
    is never reached with probability ≤ 8·(7/8)²⁰⁰ < 3e-11."""
    rng = np.random.default_rng(int(torch.randint(2**62, ())))
    img = rng.permutation(256)[:192].reshape(8, 8, 3).astype(np.uint8)
    _write_png(tmp_path / "a.png", img)
    ds = HRImageDataset(tmp_path, scale=4, lr_patch=2, augment=True, cache=False, progress=False)
    variants = _dihedral(torch.from_numpy(img).permute(2, 0, 1).contiguous())
    seen = {_which(ds.crop(0, generator=_generator()), variants) for _ in range(200)}
    assert seen == set(range(8)), f"augmentation reached only variants {sorted(seen)} of 8"


def test_realworld_gt_crops_are_h_flipped_only(tmp_path):
    """Real-ESRGAN's dataset flips horizontally with p 0.5 and never rotates; 60 crops of an image exactly the
    crop size: both outcomes reached unless one has p ≤ 2·2⁻⁶⁰."""
    rng = np.random.default_rng(int(torch.randint(2**62, ())))
    img = rng.permutation(256)[:192].reshape(8, 8, 3).astype(np.uint8)
    _write_png(tmp_path / "a.png", img)
    batches = RealWorldBatches(
        tmp_path, scale=4, gt_size=8, crop_size=8, batch=1, queue_size=1, cache="none", progress=False
    )
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    variants = _dihedral(x)
    seen = {_which(batches.gt_crop(_generator()), variants) for _ in range(60)}
    assert seen == {0, 4}, f"real-world GT crops reached variants {sorted(seen)}, want identity and h-flip"
