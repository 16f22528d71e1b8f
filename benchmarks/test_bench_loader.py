"""Training loader throughput at the M config's batch and crop: samples/s, 0/1/2 workers × data.cache modes.

    KDSR_BENCH_THREADS=1 pytest benchmarks/test_bench_loader.py --benchmark-only -s

HR images of DF2K size: 4 B100 images (../shared/data/B100, else smooth synthetic ones) upscaled with
Pillow's bicubic to 2040×1356, written as PNGs (compress level 6) to a temporary folder. The loader is the
trainer's: kdsr.data.loader.TrainLoader over ClassicBatches (batch 64, HR crop 256 = LR patch 64 × 4,
augment, per-batch iso kernel). One item = one batch on the host: 64 uint8 crops + kernel + noise draws;
the blur/bicubic/noise that follows runs on the training device and is not counted (``finish``). Timing: the
first batch (worker start-up, pipeline fill) is consumed untimed, then K batches are timed (K = 16 for
ram/disk; 2 × max(1, workers) for none, whose batches take seconds). samples/s = 64 K / time; "feeds a
step of" = 64 / samples/s. A decode row times read_image_uint8 of one 2040×1356 PNG (issue: ~190 ms).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdsr.data.dataset import HRImageDataset
from kdsr.data.io import read_image_uint8
from kdsr.data.loader import ClassicBatches, TrainLoader
from kdsr.degradations.pipeline import ClassicDegradation

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
BATCH, LR_PATCH, SCALE = 64, 64, 4  # kdsr/configs/iso_x4_M_*.yaml
SIZE = (2040, 1356)  # a typical DF2K HR image (width, height)
B100 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "B100"
ROWS: list[tuple[str, int, str, float, float]] = []


@pytest.fixture(scope="module")
def df2k_like(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("df2k_like")
    sources = sorted(B100.glob("*.png"))[:4] if B100.is_dir() else []
    for i in range(4):
        if sources:
            img = Image.open(sources[i]).convert("RGB")
        else:
            yy, xx = np.mgrid[0:321, 0:481] / 321
            base = np.stack([np.sin(9 * xx + i), np.cos(7 * yy - i), np.sin(5 * (xx + yy))], axis=-1)
            img = Image.fromarray(((0.5 + 0.4 * base) * 255).astype(np.uint8))
        img.resize(SIZE, Image.BICUBIC).save(folder / f"hr{i}.png")
    return folder


def test_bench_decode_2k_png(benchmark, df2k_like):
    torch.set_num_threads(THREADS)
    path = sorted(df2k_like.glob("*.png"))[0]
    benchmark.group = "loader-decode-2040x1356"
    benchmark.extra_info.update(threads=THREADS)
    benchmark.pedantic(read_image_uint8, args=(path,), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("cache", ["ram", "disk", "none"])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_bench_loader(benchmark, df2k_like, tmp_path, workers, cache):
    torch.set_num_threads(THREADS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = time.perf_counter()
        dataset = HRImageDataset(
            df2k_like, SCALE, LR_PATCH, cache=cache, cache_dir=tmp_path / "c", progress=False
        )
        built = time.perf_counter() - built
    deg = ClassicDegradation(scale=SCALE, kind="iso", noise=(0.0, 0.0), per_sample=False)
    k = 16 if cache != "none" else 2 * max(1, workers)
    loader = TrainLoader(ClassicBatches(dataset, deg, BATCH, seed=1, length=k + 1), workers=workers)
    timings = []

    def run():
        loader.start(0, k + 1)
        loader.get(0)  # start-up and pipeline fill, not timed
        t0 = time.perf_counter()
        for i in range(1, k + 1):
            item = loader.get(i)
            assert item["hr"].shape == (BATCH, 3, SCALE * LR_PATCH, SCALE * LR_PATCH)
        timings.append(time.perf_counter() - t0)

    benchmark.group = f"loader-b{BATCH}-crop{SCALE * LR_PATCH}"
    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        loader.close()
    rate = BATCH * k / timings[0]
    ROWS.append((cache, workers, f"{built:.1f}", rate, 1000 * BATCH / rate))
    benchmark.extra_info.update(
        threads=THREADS, workers=workers, cache=cache, samples_per_s=round(rate, 1), cache_build_s=built
    )
    step_ms = 1000 * BATCH / rate
    print(f"\nloader cache={cache} workers={workers}: {rate:.1f} samples/s, feeds a step of {step_ms:.1f} ms")


def test_bench_loader_table():
    """Print the Markdown table of the loader rows measured above (run the file as a whole)."""
    if not ROWS:
        pytest.skip("run the whole file to get the table")
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    lines = [
        f"load average at the end: {load}",
        "| data.cache | workers | cache build s (4 images) | samples/s | feeds a GPU step of (ms, B=64) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c} | {w} | {b} | {r:.0f} | {ms:.0f} |" for c, w, b, r, ms in ROWS]
    print("\n" + "\n".join(lines))
