"""Image I/O, the HR training dataset, deterministic benchmark pairs and `kdsr degrade`."""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdsr import data, metrics
from kdsr import degradations as deg

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SET5 = SHARED / "Set5"
needs_set5 = pytest.mark.skipif(not SET5.is_dir(), reason="shared/data/Set5 not available")


def random_rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def hr_folder(tmp_path):
    """Three decodable RGB PNG/JPEG/BMP images, one too small, one that is not an image."""
    Image.fromarray(random_rgb(40, 52, 0)).save(tmp_path / "a.png")
    Image.fromarray(random_rgb(48, 40, 1)).save(tmp_path / "b.bmp")
    Image.fromarray(random_rgb(36, 36, 2)[..., 0]).save(tmp_path / "c.png")  # grayscale
    Image.fromarray(random_rgb(10, 10, 3)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_read_image_modes(tmp_path):
    rgb = random_rgb(9, 11, 4)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = data.read_image(tmp_path / "rgb.png")
    assert img.shape == (3, 9, 11) and img.dtype == torch.float32
    assert torch.equal(torch.round(img * 255).to(torch.uint8), torch.from_numpy(rgb).permute(2, 0, 1))
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    gray = data.read_image(tmp_path / "gray.png")
    assert gray.shape == (3, 9, 11) and torch.equal(gray[0], gray[2])
    rgba = np.concatenate([rgb, np.full((9, 11, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(data.read_image(tmp_path / "rgba.png"), img)
    deep = (np.arange(99, dtype=np.uint16).reshape(9, 11) * 600).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    torch.testing.assert_close(
        data.read_image(tmp_path / "deep.png")[1], torch.from_numpy(deep / 65535).float()
    )
    with pytest.raises(FileNotFoundError):
        data.read_image(tmp_path / "missing.png")


def test_write_read_roundtrip_and_modcrop(tmp_path):
    levels = torch.from_numpy(random_rgb(13, 10, 5)).permute(2, 0, 1).float() / 255
    data.write_image(tmp_path / "sub" / "x.png", levels)
    assert torch.equal(data.read_image(tmp_path / "sub" / "x.png"), levels)
    assert data.modcrop(levels, 4).shape == (3, 12, 8)
    with pytest.raises(ValueError, match="scale"):
        data.modcrop(levels, 0)
    with pytest.raises(ValueError):
        data.write_image(tmp_path / "bad.png", levels[None])


def test_list_images(hr_folder, tmp_path_factory):
    names = [p.name for p in data.list_images(hr_folder)]
    assert names == ["a.png", "b.bmp", "broken.png", "c.png", "tiny.png"]
    with pytest.raises(FileNotFoundError):
        data.list_images(hr_folder / "nope")
    with pytest.raises(ValueError, match="no images"):
        data.list_images(tmp_path_factory.mktemp("empty"))


def test_dataset_items_skips_and_determinism(hr_folder):
    with pytest.warns(UserWarning) as record:
        ds = data.HRImageDataset(hr_folder, scale=4, lr_patch=8, repeat=3)
    messages = " ".join(str(w.message) for w in record)
    assert "broken.png" in messages and "tiny.png" in messages
    assert len(record) == 2  # one warning per skipped file
    assert [p.name for p in ds.files] == ["a.png", "b.bmp", "c.png"] and len(ds) == 9
    torch.manual_seed(0)
    items = [ds[i] for i in range(len(ds))]
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 for x in items)
    assert all(0 <= x.min() and x.max() <= 1 for x in items)
    assert torch.equal(items[2][0], items[2][1])  # the grayscale image became RGB
    torch.manual_seed(0)
    assert all(torch.equal(a, ds[i]) for i, a in enumerate(items))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_crops_are_windows_of_the_image_under_augmentation(hr_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = data.HRImageDataset(hr_folder, scale=2, lr_patch=8, augment=True)
    full = data.read_image(hr_folder / "a.png")
    windows = full.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, nh, nw, 16, 16): every 16x16 window
    nh, nw = windows.shape[1:3]
    known = {windows[:, i, j].numpy().tobytes() for i in range(nh) for j in range(nw)}

    def is_window(c):
        return c.contiguous().numpy().tobytes() in known

    torch.manual_seed(1)
    views = {"id": 0, "other": 0}
    for _ in range(32):
        crop = ds[0]
        candidates = [crop, crop.flip(-1), crop.flip(-2), crop.flip(-1).flip(-2)]
        assert any(is_window(c) for c in candidates + [c.transpose(-2, -1) for c in candidates])
        views["id" if is_window(crop) else "other"] += 1
    assert views["id"] > 0 and views["other"] > 0  # augmentation happens, and not always


def test_cache_and_dataloader_workers(hr_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = data.HRImageDataset(hr_folder, scale=4, lr_patch=8, augment=True)
        cached = data.HRImageDataset(hr_folder, scale=4, lr_patch=8, augment=True, cache=True)
    torch.manual_seed(3)
    a = [plain[i] for i in range(3)]
    torch.manual_seed(3)
    b = [cached[i] for i in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    loader = torch.utils.data.DataLoader(cached, batch_size=3, num_workers=2)
    batch = next(iter(loader))
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    lr, params = deg.ClassicDegradation(scale=4)(batch, generator=torch.Generator().manual_seed(0))
    assert lr.shape == (3, 3, 8, 8) and params["sigma"].shape == (3,)


def test_undecodable_file_found_late_is_skipped_with_one_warning(tmp_path):
    Image.fromarray(random_rgb(40, 40, 6)).save(tmp_path / "good.png")
    Image.fromarray(random_rgb(40, 40, 7)).save(tmp_path / "truncated.png")
    blob = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(blob[: len(blob) // 2])  # header fine, pixel data cut
    ds = data.HRImageDataset(tmp_path, scale=2, lr_patch=8)
    with pytest.warns(UserWarning, match="truncated.png"):
        item = ds[1]
    assert item.shape == (3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same file
        ds[1]


def test_dataset_bad_arguments(hr_folder):
    with pytest.raises(ValueError, match="lr_patch"):
        data.HRImageDataset(hr_folder, scale=4, lr_patch=0)
    with pytest.raises(ValueError, match="no usable images"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.HRImageDataset(hr_folder, scale=4, lr_patch=64)


def lr_digest(pairs) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(p.name.encode())
        h.update(torch.round(p.lr * 255).to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@needs_set5
def test_benchmark_pairs_are_deterministic_and_modcropped(tmp_path):
    for name in ("baby.png", "head.png"):
        (tmp_path / name).write_bytes((SET5 / name).read_bytes())
    pairs = data.benchmark_pairs(tmp_path, 3, kernels=[1.35, 2.4])
    assert [p.name for p in pairs] == ["baby_sig1.35", "head_sig1.35", "baby_sig2.40", "head_sig2.40"]
    for p in pairs:
        assert p.hr.shape[-2] % 3 == 0 and p.hr.shape[-1] % 3 == 0
        assert p.lr.shape == (3, p.hr.shape[-2] // 3, p.hr.shape[-1] // 3)
        assert p.params["kind"] == "iso" and p.params["scale"] == 3 and p.params["noise"] == 0.0
    assert lr_digest(pairs) == lr_digest(data.benchmark_pairs(tmp_path, 3, kernels=[1.35, 2.4]))
    # Pinned: the pipeline (kernels, blur, MATLAB resize, rounding) must not drift across versions/machines.
    assert lr_digest(pairs) == "43000c953f133ccd9b3e04c351f3b8a767a1e4560c59edd0cff32b884cba00dc"


@needs_set5
def test_aniso_noisy_benchmark_is_seeded(tmp_path):
    (tmp_path / "bird.png").write_bytes((SET5 / "bird.png").read_bytes())
    kernels = [deg.ANISO_TEST_KERNELS[2], deg.ANISO_TEST_KERNELS[6]]
    a = data.benchmark_pairs(tmp_path, 4, kernels=kernels, noise=10, seed=0)
    b = data.benchmark_pairs(tmp_path, 4, kernels=kernels, noise=10, seed=0)
    c = data.benchmark_pairs(tmp_path, 4, kernels=kernels, noise=10, seed=1)
    assert [p.name for p in a] == ["bird_aniso1_n10", "bird_aniso2_n10"]
    assert a[0].params["theta_deg"] == 30.0 and a[0].params["noise"] == 10.0
    assert lr_digest(a) == lr_digest(b) != lr_digest(c)
    clean = deg.degrade(a[0].hr.double(), deg.kernel_from_params(a[0].params, dtype=torch.float64), 4)
    inside = (clean > 40 / 255) & (clean < 215 / 255)  # away from clipping at 0 and 255
    residual = ((a[0].lr.double() - clean) * 255)[inside]
    assert residual.numel() > 5000
    assert abs(residual.std().item() / np.sqrt(100 + 1 / 12 + 1 / 12) - 1) < 0.05


@needs_set5
def test_bicubic_baseline_on_set5_is_pinned():
    """End-to-end guard of degrade + imresize + metrics: Set5, sigma 2.6, x4 (full table in the README)."""
    pairs = data.benchmark_pairs(SET5, 4, kernels=[2.6])
    psnr = [metrics.psnr(deg.imresize(p.lr, 4), p.hr, crop_border=4) for p in pairs]
    ssim = [metrics.ssim(deg.imresize(p.lr, 4), p.hr, crop_border=4) for p in pairs]
    assert abs(np.mean(psnr) - PINNED_PSNR) < 2e-5
    assert abs(np.mean(ssim) - PINNED_SSIM) < 2e-6


PINNED_PSNR = 25.70542
PINNED_SSIM = 0.724776


@needs_set5
def test_degrade_command_writes_pngs_and_manifest(tmp_path):
    from kdsr.cli import main

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    (hr_dir / "woman.png").write_bytes((SET5 / "woman.png").read_bytes())
    out = tmp_path / "out"
    assert (
        main(["degrade", "--hr-dir", str(hr_dir), "--kernels", "1.8,3.2", "--scale", "4", "-o", str(out)])
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["scale"] == 4 and [e["name"] for e in manifest["pairs"]] == [
        "woman_sig1.80",
        "woman_sig3.20",
    ]
    assert sorted(p.name for p in (out / "LR").iterdir()) == ["woman_sig1.80.png", "woman_sig3.20.png"]
    loaded = data.read_benchmark(out)
    fresh = data.benchmark_pairs(hr_dir, 4, kernels=[1.8, 3.2])
    for a, b in zip(loaded, fresh, strict=True):
        assert (
            a.name == b.name and torch.equal(a.lr, b.lr) and torch.equal(a.hr, b.hr) and a.params == b.params
        )
    assert main(["degrade", "--hr-dir", str(tmp_path / "missing"), "-o", str(out)]) == 2


def test_benchmark_kernel_specs():
    specs = data.benchmark_kernels("gaussian8", 4)
    assert [s["sigma"] for s in specs] == list(deg.GAUSSIAN8[4])
    assert len(data.benchmark_kernels("aniso", 4)) == 9
    with pytest.raises(ValueError, match="Gaussian8"):
        data.benchmark_kernels("gaussian8", 5)
    with pytest.raises(ValueError, match="kernels must be"):
        data.benchmark_kernels("motion", 4)
    with pytest.raises(ValueError, match="triple"):
        data.benchmark_kernels([(1.0, 2.0)], 4)
