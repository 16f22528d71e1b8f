"""16-bit HR images keep their depth through the training caches, the batch builders and eval's HR reader;
8-bit images give what they gave before (uint8 samples / 255)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdsr.data.benchmark import benchmark_pairs, read_benchmark, write_benchmark
from kdsr.data.cache import ImageStore, copy_samples
from kdsr.data.dataset import HRImageDataset
from kdsr.data.io import Pixels, image_bits, read_image_uint8, read_samples, write_pixels
from kdsr.data.loader import ClassicBatches, RealWorldSource
from kdsr.data.realworld import PairQueue, RealWorldBatches
from kdsr.data.realworld_benchmark import realworld_pairs
from kdsr.degradations.pipeline import ClassicDegradation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIDE = 32  # = scale 4 x lr_patch 8: with augment off, a crop is the whole image


def deep_rgb(seed: int, side: int = SIDE) -> np.ndarray:
    """(side, side, 3) uint16 samples, almost none of them on the 8-bit grid (multiples of 257)."""
    return np.random.default_rng(seed).integers(0, 65536, (side, side, 3), dtype=np.uint16)


def write_deep(path, rgb: np.ndarray) -> None:
    write_pixels(path, Pixels(rgb, bits=16))


def off_8_bit_grid(x: torch.Tensor) -> float:
    """Largest distance (in 8-bit levels) of a [0, 1] image from the 8-bit grid."""
    levels = x.to(torch.float64) * 255
    return float((levels - levels.round()).abs().max())


def as_float(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint16 -> the (3, H, W) float32 the data path must give: samples / 65535."""
    return torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32)) / 65535.0


@pytest.fixture
def deep_folder(tmp_path):
    folder = tmp_path / "hr16"
    folder.mkdir()
    write_deep(folder / "a.png", deep_rgb(0))
    return folder


@pytest.mark.parametrize("mode", ["none", "ram", "disk"])
def test_16_bit_crops_are_the_16_bit_source_in_every_cache_mode(deep_folder, tmp_path, mode):
    src = deep_rgb(0)
    cache_dir = tmp_path / "cache"
    if mode == "disk":  # an entry written when 16-bit files were cached as uint8: stale, replaced
        cache_dir.mkdir()
        st = (deep_folder / "a.png").stat()
        old = cache_dir / f"a.png.{st.st_size}-{st.st_mtime_ns}.npy"
        np.save(old, read_image_uint8(deep_folder / "a.png").numpy())
    ds = HRImageDataset(deep_folder, 4, 8, augment=False, cache=mode, cache_dir=cache_dir, progress=False)
    assert ds.dtype == torch.uint16 and image_bits(deep_folder / "a.png") == 16
    crop = ds.crop(0, torch.Generator().manual_seed(0))
    assert crop.dtype == torch.uint16 and np.array_equal(crop.numpy(), src.transpose(2, 0, 1))
    item = ds[0]
    assert torch.equal(item, as_float(src)) and off_8_bit_grid(item) > 0.1
    if mode == "disk":
        entries = sorted(p.name for p in cache_dir.iterdir())
        assert entries == [old.name.replace(".npy", "-u16.npy")]
        assert np.load(cache_dir / entries[0]).dtype == np.uint16
    batches = ClassicBatches(ds, ClassicDegradation(scale=4), batch=2, seed=3)
    batch = batches[0]
    assert batch["hr"].dtype == torch.uint16
    lr, hr = batches.finish(batch, torch.device("cpu"))
    assert torch.equal(hr, as_float(src).expand(2, -1, -1, -1))
    assert off_8_bit_grid(lr) < 1e-4  # the classic LR is still rounded to 8 bits (spec §6a)


def test_8_bit_images_stay_uint8_and_mix_exactly_with_16_bit_ones(deep_folder, tmp_path):
    rgb8 = np.random.default_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    only8 = tmp_path / "hr8"
    only8.mkdir()
    write_pixels(only8 / "b.png", Pixels(rgb8))
    ds8 = HRImageDataset(only8, 4, 8, augment=False, cache="ram", progress=False)
    want8 = torch.from_numpy(rgb8.transpose(2, 0, 1).copy()).to(torch.float32).div_(255.0)
    assert ds8.dtype == torch.uint8 and ds8.crop(0).dtype == torch.uint8 and torch.equal(ds8[0], want8)
    write_pixels(deep_folder / "b.png", Pixels(rgb8))  # a folder of one 16-bit and one 8-bit image
    mixed = HRImageDataset(deep_folder, 4, 8, augment=False, cache="ram", progress=False)
    assert mixed.dtype == torch.uint16
    assert np.array_equal(mixed.crop(1).numpy(), rgb8.transpose(2, 0, 1).astype(np.uint16) * 257)
    assert torch.equal(mixed[1], want8)  # k·257 / 65535 == k / 255, bit for bit
    with pytest.raises(TypeError, match="uint16 samples into a uint8 buffer"):
        copy_samples(np.zeros(3, np.uint8), np.zeros(3, np.uint16))


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_realworld_gt_crops_and_pair_queue_keep_16_bits(deep_folder, tmp_path, mode):
    src = as_float(deep_rgb(0))
    rw = RealWorldBatches(
        deep_folder,
        4,
        gt_size=16,
        batch=2,
        crop_size=SIDE,
        queue_size=2,
        cache=mode,
        cache_dir=tmp_path / "c",
        progress=False,
    )
    crop = rw.gt_crop(torch.Generator().manual_seed(0))
    assert crop.dtype == torch.uint16 and {crop.numpy().tobytes()} <= {
        (src * 65535).round().to(torch.int32).numpy().astype(np.uint16).tobytes(),
        (src.flip(-1) * 65535).round().to(torch.int32).numpy().astype(np.uint16).tobytes(),
    }
    rw.crop_size = SIDE + 8  # smaller images are reflect-padded (bottom/right) in float, back to uint16
    padded = rw.gt_crop(torch.Generator().manual_seed(0))
    assert padded.dtype == torch.uint16 and torch.equal(padded[:, :SIDE, :SIDE], crop)
    rw.crop_size = SIDE
    source = RealWorldSource(rw, seed=1, length=2)
    item = source[0]
    assert item["gt"].dtype == torch.uint16
    _, hr = source.finish(item, torch.device("cpu"))  # queue filling: the batch comes back as pushed
    assert off_8_bit_grid(hr) > 0.1 and rw.queue.hr.dtype == torch.uint16
    queue = PairQueue(2, 2, hr_dtype=torch.uint16)
    queue.push_pop(torch.zeros(2, 3, 4, 4), hr)
    rows = {x.numpy().tobytes() for x in hr}
    for _ in range(2):  # full: pops the pairs stored while filling, then those swapped in
        _, back = queue.push_pop(torch.zeros(2, 3, 4, 4), hr.flip(0))
        assert queue.hr.dtype == torch.uint16 and {x.numpy().tobytes() for x in back} == rows


def test_eval_hr_is_read_at_16_bits_and_written_back_at_16(deep_folder, tmp_path):
    src = deep_rgb(0)
    want = torch.from_numpy(src.transpose(2, 0, 1).astype(np.float64) / 65535.0).to(torch.float32)
    (pair,) = benchmark_pairs(deep_folder, 4, kernels=[2.0], noise=5)
    assert torch.equal(pair.hr, want) and off_8_bit_grid(pair.lr) < 1e-4
    write_benchmark([pair], tmp_path / "bench", progress=False)
    assert image_bits(tmp_path / "bench" / "HR" / "a.png") == 16
    assert image_bits(tmp_path / "bench" / "LR" / f"{pair.name}.png") == 8
    (back,) = read_benchmark(tmp_path / "bench")
    assert torch.equal(back.hr, pair.hr) and torch.equal(back.lr, pair.lr)
    (rw_pair,) = realworld_pairs(deep_folder, 4, seed=0)
    assert torch.equal(rw_pair.hr, want)


def test_8_bit_eval_hr_is_what_it_was(tmp_path):
    rgb8 = np.random.default_rng(2).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    write_pixels(tmp_path / "c.png", Pixels(rgb8))
    (pair,) = benchmark_pairs(tmp_path, 4, kernels=[2.0])
    before = (read_image_uint8(tmp_path / "c.png").to(torch.float64) / 255.0).to(torch.float32)
    assert torch.equal(pair.hr, before) and read_samples(tmp_path / "c.png").dtype == np.uint8
    write_benchmark([pair], tmp_path / "bench", progress=False)
    assert image_bits(tmp_path / "bench" / "HR" / "c.png") == 8


def test_store_dtype_follows_the_headers_in_mode_none(deep_folder, tmp_path):
    files = sorted(deep_folder.glob("*.png"))
    store = ImageStore(files, "none")
    assert store.dtype == torch.uint16 and store.array(0).dtype == np.uint16
