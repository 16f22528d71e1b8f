"""Real-world degradation throughput: RealWorldDegradation on B=12 GT 256×256 (→ LR 64), and its parts.

    pytest benchmarks/test_bench_realworld.py --benchmark-only --benchmark-group-by=group
    KDSR_BENCH_THREADS=1 pytest benchmarks/test_bench_realworld.py --benchmark-only

Rows: the full pipeline (samples/s = 12 / mean); the per-sample parts it runs in its Python loop, each timed
for the whole batch done one sample at a time vs one batched call where the op allows it (JPEG with a (B,)
quality, the Poisson field with its per-image unique count). The batched rows are the floor a batch-shared
resize (Real-ESRGAN's choice) would reach; the gap is the cost of per-sample resize.
"""

from __future__ import annotations

import os

import pytest
import torch

from kdsr.degradations.realworld import RealWorldDegradation, jpeg
from kdsr.degradations.realworld_noise import poisson_noise

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
DEVICE = os.environ.get("KDSR_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
B, GT = 12, 256


def _sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def hr():
    torch.set_num_threads(THREADS)
    return torch.rand(B, 3, GT, GT, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def test_bench_realworld_pipeline(benchmark, hr):
    deg = RealWorldDegradation(scale=4)
    counter = iter(range(10**6))

    def run():
        deg(hr, generator=torch.Generator().manual_seed(next(counter)))
        _sync()

    benchmark.group = f"realworld-degradation-b{B}-gt{GT}"
    benchmark.extra_info.update(threads=torch.get_num_threads(), device=DEVICE, samples=B)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["per-sample", "batched"])
def test_bench_realworld_jpeg(benchmark, hr, mode):
    x = hr[..., ::2, ::2].contiguous()  # a typical stage-1 size
    q = torch.linspace(30, 95, B)

    def run():
        if mode == "batched":
            jpeg(x, q)
        else:
            for i in range(B):
                jpeg(x[i : i + 1], q[i : i + 1])
        _sync()

    benchmark.group = f"realworld-jpeg-b{B}-{GT // 2}"
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["per-sample", "batched"])
def test_bench_realworld_poisson(benchmark, hr, mode):
    x = hr[..., ::2, ::2].contiguous()
    scale, gray = torch.ones(B), torch.zeros(B, dtype=torch.bool)

    def run():
        g = torch.Generator(device=x.device).manual_seed(0)
        if mode == "batched":
            poisson_noise(x, scale, gray, g)
        else:
            for i in range(B):
                poisson_noise(x[i : i + 1], scale[i : i + 1], gray[i : i + 1], g)
        _sync()

    benchmark.group = f"realworld-poisson-b{B}-{GT // 2}"
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
