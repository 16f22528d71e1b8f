"""GPU check of the IDR-DDC kernels: correctness at full size, bitwise determinism, timings vs copy bandwidth.

Run on a CUDA machine (benchmarks/gpu_check.sh calls it):

    python benchmarks/gpu_kernel_check.py                    # prints a Markdown table
    python benchmarks/gpu_kernel_check.py --out table.md     # and writes it

For each implementation usable on the device ("reference" = PyTorch's grouped conv (cuDNN / native),
"triton", "cuda"), shape (48x64x64x64 training, 1x64x180x320 inference), k in {3, 7} and dtype (fp32, bf16),
with the fused LeakyReLU(0.1):
  * checks forward, grad_x and grad_w against the float64 reference (relative RMSE),
  * checks that two backward runs are bitwise identical (grad_x and grad_w),
  * times forward, fused backward and forward+backward with CUDA events, L2 flushed (a 256 MB buffer is
    overwritten) before every run, median of --repeats, and reports ms and GB/s (minimal bytes moved / time)
    next to the device's copy bandwidth measured the same way, and the speed-up over the reference.
`--device cpu` runs the same script on the CPU (perf_counter timing, backends reference + cpu) so the script
itself can be checked on a machine without a GPU. Exit code: 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bandwidth import pass_bytes  # noqa: E402

from kdsr_kernels import ops  # noqa: E402

SLOPE = 0.1
SHAPES = {"train": (48, 64, 64, 64), "infer": (1, 64, 180, 320)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # relative RMSE vs the float64 reference


class Timer:
    """Median time of a callable: CUDA events with an L2 flush before each run, or perf_counter on CPU."""

    def __init__(self, device: torch.device, repeats: int, flush_mb: int = 256):
        self.device = device
        self.repeats = repeats
        on_gpu = device.type == "cuda"
        self.flush = torch.empty(flush_mb << 18, dtype=torch.float32, device=device) if on_gpu else None

    def __call__(self, fn) -> float:
        fn()  # warm-up: JIT compilation, autotuning, allocator
        self._sync()
        times = []
        for _ in range(self.repeats):
            if self.flush is not None:
                self.flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                begin = time.perf_counter()
                fn()
                times.append(time.perf_counter() - begin)
        return statistics.median(times)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def copy_bandwidth(timer: Timer, nbytes: int = 256 << 20) -> float:
    """Device copy bandwidth in bytes/s, counting read + write bytes."""
    src = torch.rand(nbytes // 4, device=timer.device)
    dst = torch.empty_like(src)
    return 2 * nbytes / timer(lambda: dst.copy_(src))


def rel_rmse(actual: torch.Tensor, expected: torch.Tensor) -> float:
    diff = (actual.double() - expected).pow(2).mean().sqrt()
    return (diff / expected.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def check_case(name: str, module, x, w, grad_out, reference: tuple, failures: list[str]) -> None:
    """Correctness against the float64 reference and bitwise-repeatable backward for one implementation."""
    tol = TOLERANCE[x.dtype]
    y = module.forward(x, w, SLOPE)
    gx, gw = module.backward(grad_out, x, w, y, SLOPE, True, True)
    for what, got, want in zip(("y", "grad_x", "grad_w"), (y, gx, gw), reference, strict=True):
        err = rel_rmse(got, want)
        if not err < tol:  # also catches NaN
            failures.append(f"{name}: {what} relative RMSE {err:.2e} > {tol:.0e}")
    gx2, gw2 = module.backward(grad_out, x, w, y, SLOPE, True, True)
    if name.split()[0] != "reference" and not (torch.equal(gx, gx2) and torch.equal(gw, gw2)):
        failures.append(f"{name}: backward is not bitwise reproducible")


def time_passes(module, x, w, grad_out, timer: Timer) -> dict[str, float]:
    """Median seconds of forward, fused backward and forward+backward of one backend module."""
    y = module.forward(x, w, SLOPE)

    def forward_backward():
        return module.backward(grad_out, x, w, module.forward(x, w, SLOPE), SLOPE, True, True)

    return {
        "fwd": timer(lambda: module.forward(x, w, SLOPE)),
        "bwd": timer(lambda: module.backward(grad_out, x, w, y, SLOPE, True, True)),
        "fwd+bwd": timer(forward_backward),
    }


def float64_reference(x, w, grad_out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, grad_x, grad_w) of the reference backend evaluated in float64."""
    ref = ops.BACKENDS["reference"]
    x64, w64, g64 = x.double(), w.double(), grad_out.double()
    y64 = ref.forward(x64, w64, SLOPE)
    return (y64, *ref.backward(g64, x64, w64, y64, SLOPE, True, True))


def run(args) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    impls = [n for n in ops.available_backends(device) if not (n == "triton" and device.type == "cpu")]
    for name in ops.BACKENDS:
        if name not in impls:
            print(f"- {name}: unavailable on {device.type}: {ops.unavailable_reason(name, device.type)}")
    timer = Timer(device, args.repeats)
    bandwidth = copy_bandwidth(timer)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {card}; copy bandwidth {bandwidth / 1e9:.0f} GB/s (read + write); backends {impls}")

    failures: list[str] = []
    rows = []
    shapes = {name: SHAPES[name] for name in args.shapes}
    if device.type == "cpu":
        shapes = {name: (min(s[0], 16), *s[1:]) for name, s in shapes.items()}
    for shape_name, shape in shapes.items():
        for k in args.k:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                B, C, H, W = shape
                x = torch.randn(shape, device=device, dtype=dtype)
                w = (torch.randn(B, C, k, k, device=device) / k).to(dtype)
                grad_out = torch.randn(shape, device=device, dtype=dtype)
                reference = float64_reference(x, w, grad_out)
                times = {}
                for impl in impls:
                    label = f"{impl} {shape_name} k{k} {dtype_name}"
                    module = ops.BACKENDS[impl]
                    try:
                        check_case(label, module, x, w, grad_out, reference, failures)
                        times[impl] = time_passes(module, x, w, grad_out, timer)
                    except Exception as exc:  # noqa: BLE001 - report and keep going
                        failures.append(f"{label}: {type(exc).__name__}: {exc}")
                        traceback.print_exc()
                for impl, passes in times.items():
                    for pass_, seconds in passes.items():
                        nbytes = pass_bytes(shape, k, dtype, pass_, True)
                        ref_s = times.get("reference", {}).get(pass_)
                        rows.append(
                            f"| {'x'.join(map(str, shape))} | {k} | {dtype_name} | {pass_} | {impl} | "
                            f"{seconds * 1e3:.4f} | {nbytes / seconds / 1e9:.0f} | "
                            f"{100 * nbytes / seconds / bandwidth:.0f}% | "
                            + (f"{ref_s / seconds:.2f} |" if ref_s else "- |")
                        )
                print(f"done {shape_name} k{k} {dtype_name}", flush=True)
                reference = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    method = "CUDA events, L2 flushed before each run" if device.type == "cuda" else "perf_counter"
    table = "\n".join(
        [
            f"IDR-DDC on {card}, torch {torch.__version__}; copy bandwidth {bandwidth / 1e9:.0f} GB/s "
            f"(read + write); {method}; fused LeakyReLU({SLOPE}); median of {args.repeats}.",
            "",
            "| shape | k | dtype | pass | impl | ms | GB/s | % of copy BW | x vs reference |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
        print(f"table written to {args.out}")
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    print("all correctness and determinism checks passed")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (to check the script)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement (median)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), help="shapes")
    parser.add_argument("--k", nargs="+", type=int, default=[3, 7], help="kernel sizes")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="dtypes")
    parser.add_argument("--out", default=None, help="also write the Markdown table to this file")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
