"""IDR-DDC forward / backward / forward+backward, every backend of this device side by side.

    pytest benchmarks/test_bench_idr_ddc.py --benchmark-only          # grouped by shape and pass
    KDSR_BENCH_THREADS=2 pytest benchmarks/ --benchmark-only

Device: CUDA when available (else CPU; KDSR_BENCH_DEVICE=cpu|cuda overrides). Backends: every one
`kdsr_kernels.available_backends` reports for the device, except Triton on CPU (its interpreter is a test
path). Shapes (fp32, k=3, fused LeakyReLU(0.1)): training B=16 on CPU / 48 on GPU x 64 x 64 x 64, inference
1 x 64 x 180 x 320. Passes time the backend functions themselves on preallocated inputs: "fwd" = forward,
"bwd" = fused backward (grad_x and grad_w, reading the saved output), "fwd+bwd" = both. Each group also
holds a "memcpy" row that copies as many bytes as the pass must move: the floor on this machine, measured
in the same run.

`test_bench_layout_nhwc_vs_nchw` times the compiled backend on channels_last against NCHW inputs (fp32, bf16;
forward and fused backward), interleaved round by round, and prints NHWC/NCHW median ratios.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
from bandwidth import RESULTS, Row, copy_buffers, pass_bytes, synchronize

from kdsr_kernels import available_backends, ops

DEVICE = torch.device(os.environ.get("KDSR_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
K = 3
SLOPE = 0.1
SHAPES = {
    "train": (48 if DEVICE.type == "cuda" else 16, 64, 64, 64),
    "infer": (1, 64, 180, 320),
}
BACKENDS = [name for name in available_backends(DEVICE) if not (name == "triton" and DEVICE.type == "cpu")]
IMPLS = [*BACKENDS, "memcpy"]
ROUNDS = 50 if DEVICE.type == "cuda" else 30


def _label(shape) -> str:
    return "x".join(map(str, shape))


def _make_pass(impl: str, shape, pass_: str):
    """A zero-argument callable running `pass_` of `impl` on fresh random inputs (allocated once, here)."""
    if impl == "memcpy":
        src, dst = copy_buffers(pass_bytes(shape, K, torch.float32, pass_, True), DEVICE)
        return lambda: dst.copy_(src)
    module = ops.BACKENDS[impl]
    B, C, H, W = shape
    x = torch.randn(shape, device=DEVICE)
    w = torch.randn(B, C, K, K, device=DEVICE) / K
    grad_out = torch.randn(shape, device=DEVICE)
    out = module.forward(x, w, SLOPE)

    def forward():
        return module.forward(x, w, SLOPE)

    def backward():
        return module.backward(grad_out, x, w, out, SLOPE, True, True)

    def forward_backward():
        y = module.forward(x, w, SLOPE)
        return module.backward(grad_out, x, w, y, SLOPE, True, True)

    return {"fwd": forward, "bwd": backward, "fwd+bwd": forward_backward}[pass_]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", ["fwd", "bwd", "fwd+bwd"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_bench_idr_ddc(benchmark, shape_name, pass_, impl):
    shape = SHAPES[shape_name]
    benchmark.group = f"idr_ddc {DEVICE.type} {_label(shape)} k{K} fp32 {pass_}"
    run = _make_pass(impl, shape, pass_)

    def timed():
        result = run()
        synchronize(DEVICE)
        return result

    benchmark.extra_info.update(
        impl=impl,
        device=DEVICE.type,
        shape=_label(shape),
        pass_=pass_,
        threads=torch.get_num_threads(),
        bytes_moved=pass_bytes(shape, K, torch.float32, pass_, True),
    )
    benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=3, iterations=1)
    if benchmark.stats is not None:
        RESULTS.rows.append(
            Row(
                device=DEVICE.type,
                shape=_label(shape),
                pass_=pass_,
                impl=impl,
                median_s=benchmark.stats.stats.median,
                bytes_moved=benchmark.extra_info["bytes_moved"],
            )
        )


# ---- memory layout: channels_last (NHWC) against NCHW, same backend, same run ------------------------------
LAYOUT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUT_ROUNDS = 15 if DEVICE.type == "cpu" else 50


def _layout_pass(shape, dtype, channels_last: bool, pass_: str):
    """`pass_` of the compiled backend of DEVICE ("auto") on NCHW or channels_last inputs, preallocated."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    B, C, H, W = shape
    x = torch.randn(shape, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)
    w = (torch.randn(B, C, K, K, device=DEVICE) / K).to(dtype)
    grad_out = torch.randn(shape, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)
    backend = ops.BACKENDS[ops.resolve_backend("auto", DEVICE.type)]
    out = backend.forward(x, w, SLOPE)
    if pass_ == "fwd":
        return lambda: backend.forward(x, w, SLOPE)
    return lambda: backend.backward(grad_out, x, w, out, SLOPE, True, True)


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
@pytest.mark.parametrize("dtype_name", list(LAYOUT_DTYPES))
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_bench_layout_nhwc_vs_nchw(benchmark, shape_name, dtype_name, pass_):
    """Median time of NHWC / NCHW, the two timed in alternating rounds (a load change hits both alike)."""
    shape = SHAPES[shape_name]
    runs = {
        layout: _layout_pass(shape, LAYOUT_DTYPES[dtype_name], layout == "nhwc", pass_)
        for layout in ("nchw", "nhwc")
    }

    def interleaved():
        times = {layout: [] for layout in runs}
        for r in range(LAYOUT_ROUNDS):
            for layout in sorted(runs, reverse=r % 2 == 1):
                start = time.perf_counter()
                runs[layout]()
                synchronize(DEVICE)
                times[layout].append(time.perf_counter() - start)
        return {layout: statistics.median(t) for layout, t in times.items()}

    for run in runs.values():  # warm-up
        run()
    medians = benchmark.pedantic(interleaved, rounds=1, iterations=1)
    ratio = medians["nhwc"] / medians["nchw"]
    benchmark.group = f"idr_ddc layout {DEVICE.type} {_label(shape)} k{K} {dtype_name} {pass_}"
    benchmark.extra_info.update(
        nchw_ms=1e3 * medians["nchw"],
        nhwc_ms=1e3 * medians["nhwc"],
        nhwc_over_nchw=ratio,
        threads=torch.get_num_threads(),
    )
    print(
        f"\n{benchmark.group}: NCHW {1e3 * medians['nchw']:.2f} ms, NHWC {1e3 * medians['nhwc']:.2f} ms, "
        f"NHWC/NCHW {ratio:.2f} ({torch.get_num_threads()} threads)"
    )
