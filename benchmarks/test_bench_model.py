"""Model-level benchmarks: fused IDR-DDC kernels vs the grouped-conv formulation, side by side.

    pytest benchmarks/test_bench_model.py --benchmark-only --benchmark-group-by=group
    KDSR_BENCH_THREADS=2 pytest benchmarks/test_bench_model.py --benchmark-only -k train_step

Groups (each holds a "grouped-conv" row and a "fused" row; pytest-benchmark's table shows their ratio):
  * kdsr-s-m-forward-1x3x180x320: KDSR_S-M inference at the paper's runtime size.
  * student-train-step-small-b4-64x64: forward + L1 loss + backward of the "small" student, B=4, 64x64 LR.

"fused" is `fused_kernels=True`, i.e. kdsr_kernels' "auto" backend: the C++ `cpu` backend on CPU once it is
available, otherwise the `reference` custom op; the backend actually used is saved in extra_info. On a CUDA
machine the same tests run on the GPU (synchronised; KDSR_BENCH_DEVICE=cpu|cuda overrides).
CPU threads: KDSR_BENCH_THREADS (default: all cores).
"""

from __future__ import annotations

import os
import platform

import pytest
import torch

import kdsr
import kdsr_kernels

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
DEVICE = torch.device(os.environ.get("KDSR_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
IMPLEMENTATIONS = {"grouped-conv": False, "fused": True}


def _auto_backend() -> str:
    """The kdsr_kernels backend that "auto" picks on DEVICE (what fused=True runs)."""
    try:
        return kdsr_kernels.ops.resolve_backend("auto", DEVICE.type)
    except Exception as exc:  # noqa: BLE001 - only informational
        return f"unknown ({type(exc).__name__})"


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _describe(benchmark, impl: str, **extra) -> None:
    torch.set_num_threads(THREADS)
    benchmark.extra_info.update(
        impl=impl,
        idr_ddc=_auto_backend() if IMPLEMENTATIONS[impl] else "pytorch grouped conv",
        device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else platform.processor() or "cpu",
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        **extra,
    )


@pytest.mark.benchmark(group="kdsr-s-m-forward-1x3x180x320", disable_gc=True)
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_bench_forward_kdsr_s_m(benchmark, impl):
    _describe(benchmark, impl, variant="M", shape="1x3x180x320")
    torch.manual_seed(0)
    model = kdsr.KDSRStudent("M", scale=4, fused_kernels=IMPLEMENTATIONS[impl]).to(DEVICE).eval()
    model.validate_inputs = False
    lr = torch.rand(1, 3, 180, 320, device=DEVICE)

    def forward():
        with torch.no_grad():
            out = model(lr)
        _sync()
        return out

    rounds = 20 if DEVICE.type == "cuda" else 3
    out = benchmark.pedantic(forward, rounds=rounds, warmup_rounds=1, iterations=1)
    assert out.shape == (1, 3, 720, 1280)


@pytest.mark.benchmark(group="student-train-step-small-b4-64x64", disable_gc=True)
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_bench_train_step_small(benchmark, impl):
    _describe(benchmark, impl, variant="small", shape="4x3x64x64", step="forward + L1 + backward")
    torch.manual_seed(0)
    model = kdsr.KDSRStudent("small", scale=4, fused_kernels=IMPLEMENTATIONS[impl]).to(DEVICE).train()
    model.validate_inputs = False
    lr = torch.rand(4, 3, 64, 64, device=DEVICE)
    hr = torch.rand(4, 3, 256, 256, device=DEVICE)

    def step():
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        loss.backward()
        _sync()
        return loss.detach()

    rounds = 50 if DEVICE.type == "cuda" else 5
    loss = benchmark.pedantic(step, rounds=rounds, warmup_rounds=1, iterations=1)
    assert torch.isfinite(loss)
