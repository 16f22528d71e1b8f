"""CPU inference paths side by side: eager fp32 unfused / fused, channels_last, bf16, torch.compile, ONNX.

    KDSR_BENCH_THREADS=2 pytest benchmarks/test_bench_inference.py --benchmark-only -s

Workloads: KDSR_S-M (random weights) at LR 1x3x180x320, and the shipped tiny student on a 512x512 LR image.
Every path runs the whole untiled upscale (encoder + SR network + clamp). The paths are timed interleaved
(round-robin, ROUNDS rounds after one warm-up call each), so machine load hits them alike; the table printed
at the end (and stored in extra_info) gives medians and the speed-up over "fp32 unfused" (the reference
code's formulation: grouped conv + LeakyReLU). Threads: KDSR_BENCH_THREADS (default all cores), the same
for onnxruntime's intra-op pool.
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import pytest
import torch

import kdsr

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
ROUNDS = {"kdsr-s-m-180x320": 3, "tiny-student-512x512": 5}
GOAL, MUST = 3.0, 1.5


def _paths(model: kdsr.KDSRStudent, tmp_path) -> dict:
    """name -> callable(lr) -> sr, each on its own copy of `model`."""
    unfused = copy.deepcopy(model).set_fused_kernels(False)
    fused = copy.deepcopy(model).set_fused_kernels(True)
    channels_last = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    compiled = torch.compile(copy.deepcopy(fused))
    paths = {
        "fp32 unfused": lambda lr: kdsr.upscale(unfused, lr),
        "fp32 fused": lambda lr: kdsr.upscale(fused, lr),
        "fp32 fused channels_last": lambda lr: kdsr.upscale(
            channels_last, lr.contiguous(memory_format=torch.channels_last)
        ),
        "bf16 (precision='bf16')": lambda lr: kdsr.upscale(fused, lr, precision="bf16"),
        "torch.compile fp32 fused": lambda lr: compiled(lr).clamp(0, 1),
    }
    try:
        from kdsr.deploy import OnnxStudent, export_onnx

        sr_file, _ = export_onnx(model, tmp_path / "bench.onnx")
        ort_model = OnnxStudent(sr_file, threads=THREADS)
        paths["onnxruntime fp32"] = ort_model.upscale
    except ImportError:
        pass
    return paths


def _table(name: str, medians: dict[str, float]) -> str:
    base = medians["fp32 unfused"]
    load = os.getloadavg()
    lines = [
        f"\n{name}: median ms over {ROUNDS[name]} interleaved rounds, {THREADS} threads, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "| path | median ms | vs fp32 unfused |",
        "|---|---|---|",
    ]
    for path, ms in medians.items():
        lines.append(f"| {path} | {ms:.1f} | {base / ms:.2f}x |")
    return "\n".join(lines)


@pytest.mark.parametrize("workload", list(ROUNDS))
def test_bench_inference_paths(benchmark, workload, tmp_path):
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if workload == "kdsr-s-m-180x320":
        model = kdsr.KDSRStudent("M", scale=4).eval()
        lr = torch.rand(1, 3, 180, 320)
    else:
        model = kdsr.load("tiny-iso-x4-student").eval()
        lr = torch.rand(1, 3, 512, 512)
    paths = _paths(model, tmp_path)
    times: dict[str, list[float]] = {p: [] for p in paths}
    reference = None
    with torch.no_grad():
        for path, fn in paths.items():  # warm-up (torch.compile compiles here), and a sanity check
            out = fn(lr)
            reference = out if reference is None else reference
            assert (out.float() - reference).abs().max() < 2e-2, path
        for _ in range(ROUNDS[workload]):
            for path, fn in paths.items():
                start = time.perf_counter()
                fn(lr)
                times[path].append(1e3 * (time.perf_counter() - start))
    medians = {p: statistics.median(t) for p, t in times.items()}
    print(_table(workload, medians))
    benchmark.extra_info.update(threads=THREADS, medians_ms=medians, load=os.getloadavg(), workload=workload)
    benchmark.pedantic(lambda: paths["fp32 fused"](lr), rounds=1, iterations=1)
