"""Whole-network roofline: a KDSR student's MAC/s against the best dense 3x3 conv of its channel count.

    KDSR_BENCH_THREADS=2 pytest benchmarks/test_bench_roofline.py --benchmark-only -s -k tiny
    OMP_NUM_THREADS=2 python benchmarks/test_bench_roofline.py --variants shipped tiny --precisions fp32 bf16

Per variant (the shipped student "iso-x4-student", random-weight tiny / small / M) and precision (fp32, bf16;
on CUDA also fp16), on KDSR_BENCH_DEVICE (default CUDA when present):
  * network GMAC/s (spec §7 MAC count, encoder included) and its ratio to the best dense C -> C 3x3 conv
    (NCHW or channels_last, whichever is faster) at the same LR size, device, threads and run. Timing rule:
    best of ROUNDS interleaved rounds; each round one network forward, then each conv layout timed 10 at a
    time (kdsr.models.roofline);
  * share of op time in memory-bound ops (everything but dense convs and matmuls), the bytes they move and
    their time against a copy at the measured copy bandwidth (dst.copy_(src) of 32 MB, read + write).
Models run as `kdsr.load` leaves them: channels_last weights; bf16/fp16 as `kdsr upscale --precision` runs.
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest
import torch

import kdsr
from kdsr.models.roofline import copy_bandwidth, memory_bound_share, op_census, roofline

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
DEVICE = torch.device(os.environ.get("KDSR_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
ROUNDS = int(os.environ.get("KDSR_BENCH_ROUNDS", "7"))
LR_SIZE = {"shipped": (256, 256), "tiny": (256, 256), "small": (256, 256), "M": (180, 320)}
PRECISIONS = ("fp32", "bf16", "fp16") if DEVICE.type == "cuda" else ("fp32", "bf16")


def build(variant: str, device: torch.device = DEVICE) -> kdsr.KDSRStudent:
    """The shipped student, or a random-weight student of `variant`, prepared as `kdsr.load` prepares it."""
    if variant == "shipped":
        model = kdsr.load("iso-x4-student")
    else:
        torch.manual_seed(0)
        model = kdsr.load(kdsr.KDSRStudent(variant, 4).checkpoint())
    model.validate_inputs = False
    return model.to(device)


def measure(variant: str, precision: str, rounds: int = ROUNDS, device: torch.device = DEVICE) -> dict:
    """One table row: roofline ratio plus the memory-bound census."""
    torch.set_num_threads(THREADS)
    model = build(variant, device)
    size = LR_SIZE[variant]
    result = roofline(model, size, precision, rounds=rounds)
    census = memory_bound_share(op_census(model, size, precision), copy_bandwidth(32 << 20, device))
    return {
        "variant": variant,
        "precision": precision,
        "lr": f"{size[0]}x{size[1]}",
        "net_gmacs": result.network_macs_per_s / 1e9,
        "conv_gmacs": result.conv_macs_per_s / 1e9,
        "ratio": result.ratio,
        "net_ms": result.network_s * 1e3,
        **census,
    }


HEADER = (
    "| variant | precision | LR | net ms | net GMAC/s | conv GMAC/s | ratio | memory-bound share | "
    "memory-bound GB | copy GB/s | memory-bound x floor |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(r: dict) -> str:
    """A Markdown table row for `measure`'s dict."""
    return (
        f"| {r['variant']} | {r['precision']} | {r['lr']} | {r['net_ms']:.0f} | {r['net_gmacs']:.1f} | "
        f"{r['conv_gmacs']:.1f} | {r['ratio']:.2f} | {r['memory_share']:.0%} | "
        f"{r['memory_bytes'] / 1e9:.2f} | "
        f"{r['bandwidth'] / 1e9:.1f} | {r['x_floor']:.1f} |"
    )


def where() -> str:
    """Device, threads and load, for the table caption."""
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"cpu, {THREADS} threads"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{name}, torch {torch.__version__}, load average {load}; best of {ROUNDS} interleaved rounds"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", list(LR_SIZE))
def test_bench_roofline(benchmark, variant, precision):
    r = benchmark.pedantic(measure, args=(variant, precision), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    print(f"\n{where()}\n{HEADER}\n{row(r)}")
    assert r["ratio"] > 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(LR_SIZE), choices=list(LR_SIZE))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    args = parser.parse_args(argv)
    import kdsr.device

    kdsr.device.reuse_freed_memory()
    print(where())
    print(HEADER)
    for variant in args.variants:
        for precision in args.precisions:
            print(row(measure(variant, precision)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
