"""GPU check of the KDSR_S-M forward: time per IDR-DDC implementation, fp32 and bf16, as a Markdown table.

Run on a CUDA machine (benchmarks/gpu_check.sh calls it):

    python benchmarks/gpu_model_check.py                      # KDSR_S-M, 1x3x180x320, fp32 + bf16
    python benchmarks/gpu_model_check.py --repeats 100 --json model_check.json

For every implementation usable on CUDA -- "pytorch" (the grouped-conv formulation, fused_kernels=False) and
each kdsr_kernels backend ("reference", "triton", "cuda") -- and each dtype, it times the forward pass with
CUDA events (median over --repeats after --warmup), eagerly and replayed as a CUDA graph (which removes the
~250 kernel-launch gaps of 53 blocks), and checks the output against the fp32 grouped-conv output.
Goals on an H100: <= 5 ms fp32 and <= 2.5 ms bf16 (the paper: 38.74 ms on its GPU).
Exit code: 0 when at least one implementation ran, 1 otherwise, 2 without CUDA. `--device cpu` runs the
same script on the CPU (perf_counter timing, no graphs) to check the script itself on a machine without GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import kdsr  # noqa: E402
import kdsr_kernels  # noqa: E402

STARTED = time.perf_counter()
GOAL_MS = {"float32": 5.0, "bfloat16": 2.5}
# Fastest first, so a short time budget still yields the rows that matter.
PRIORITY = ("cuda", "triton", "pytorch", "cpu", "reference")
# Output agreement with the fp32 grouped-conv model (outputs are in [0, 1]-ish image units).
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="M", help="KDSR variant (default M)")
    p.add_argument("--scale", type=int, default=4, help="SR scale (default 4)")
    p.add_argument("--lr-size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"), help="LR size")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16, float16")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per configuration (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards first (default 5)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=28.0,
        help="stop starting new configurations after this many seconds from start-up (default 28; "
        "gpu_check.sh gives the script 35 s). Configurations run fastest-backend first.",
    )
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph timings")
    p.add_argument("--no-tf32", action="store_true", help="disable TF32 for fp32 convs / matmuls")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the script itself)")
    return p.parse_args(argv)


def cuda_times(fn, repeats: int, warmup: int) -> list[float]:
    """Milliseconds per call of `fn`: CUDA events, one pair per call (perf_counter without CUDA)."""
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]


def graph_forward(model, lr: torch.Tensor):
    """Capture model(lr) in a CUDA graph; returns (replay function, static output)."""
    static_lr = lr.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compile / autotune / allocate outside the capture
            model(static_lr)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_lr)
    return graph.replay, static_out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_model_check: CUDA is not available; nothing to check", file=sys.stderr)
        return 2
    on_gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    H, W = args.lr_size
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    usable = kdsr_kernels.available_backends(device)
    usable = [b for b in PRIORITY if b == "pytorch" or (b in usable and (on_gpu or b != "triton"))]

    torch.manual_seed(0)
    base = kdsr.KDSRStudent(args.variant, args.scale, fused_kernels=False).to(device).eval()
    base.validate_inputs = False  # its NaN check syncs the device (and cannot be graph-captured)
    lr32 = torch.rand(args.batch, 3, H, W, device=device)
    with torch.no_grad():
        reference = base(lr32).float()

    gpu = torch.cuda.get_device_name(device) if on_gpu else f"CPU dry run, {torch.get_num_threads()} threads"
    print(f"## KDSR_S-{args.variant} x{args.scale} forward, LR {args.batch}x3x{H}x{W}, {gpu}")
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, TF32 {'off' if args.no_tf32 else 'on'}, "
        f"cudnn.benchmark on, median of {args.repeats} after {args.warmup} warm-up; IDR-DDC: {usable}\n"
    )
    print("| IDR-DDC | dtype | eager ms | CUDA graph ms | max abs diff vs fp32 grouped conv | goal |")
    print("|---|---|---:|---:|---:|---|")
    rows, ran = [], 0
    models = {name: copy.deepcopy(base).to(getattr(torch, name)) for name in dtypes}
    for impl in usable:
        for dtype_name in dtypes:
            model, lr = models[dtype_name], lr32.to(getattr(torch, dtype_name))
            model.set_fused_kernels(False if impl == "pytorch" else impl)
            row = {"impl": impl, "dtype": dtype_name}
            if time.perf_counter() - STARTED > args.budget_s:
                row["error"] = "skipped: time budget (--budget-s) used up"
                print(f"| {impl} | {dtype_name} | skipped (time budget) | | | |")
                rows.append(row)
                continue
            try:
                with torch.no_grad():
                    eager = cuda_times(lambda: model(lr), args.repeats, args.warmup)  # noqa: B023
                    out = model(lr).float()
                    row["eager_ms"] = statistics.median(eager)
                    row["max_abs_diff"] = (out - reference).abs().max().item()
                    if on_gpu and not args.no_graph:
                        try:
                            replay, _ = graph_forward(model, lr)
                            row["graph_ms"] = statistics.median(cuda_times(replay, args.repeats, args.warmup))
                        except Exception as exc:  # noqa: BLE001 - report, keep the eager number
                            row["graph_error"] = f"{type(exc).__name__}: {exc}"
                ran += 1
            except Exception as exc:  # noqa: BLE001 - report the implementation, go on with the others
                row["error"] = f"{type(exc).__name__}: {exc}"
                print(f"| {impl} | {dtype_name} | failed: {row['error'][:200]} | | | |")
                rows.append(row)
                continue
            finally:
                if on_gpu:
                    torch.cuda.synchronize()
            best = min(row["eager_ms"], row.get("graph_ms", float("inf")))
            goal = GOAL_MS.get(dtype_name)
            verdict = "" if goal is None else (f"<= {goal} ms: " + ("met" if best <= goal else "missed"))
            ok = row["max_abs_diff"] <= TOLERANCE.get(dtype_name, 0.1)
            diff = f"{row['max_abs_diff']:.2e}" + ("" if ok else " (too large!)")
            graph = f"{row['graph_ms']:.3f}" if "graph_ms" in row else "n/a"
            print(f"| {impl} | {dtype_name} | {row['eager_ms']:.3f} | {graph} | {diff} | {verdict} |")
            row["within_tolerance"] = ok
            rows.append(row)
    for row in rows:
        if "graph_error" in row:
            print(f"\nCUDA graph failed for {row['impl']} {row['dtype']}: {row['graph_error'][:300]}")
    if args.json:
        info = {
            "gpu": gpu,
            "torch": torch.__version__,
            "variant": args.variant,
            "lr_size": [H, W],
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(info, indent=2))
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
