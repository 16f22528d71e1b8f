"""`kdsr profile`: parameters, MACs and forward time per IDR-DDC backend of a KDSR variant.

kdsr profile --variant M
kdsr profile --variant L --lr-size 180 320 --device cuda --dtype bfloat16 --repeats 50

The backends are timed interleaved, round-robin (one forward of each backend per round, the starting
backend rotating each round), so a slow drift of the machine (clock, other processes) hits every backend
alike; the table reports the median over rounds and the interquartile range.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence

from kdsr.commands._common import add_runtime_flags, apply_threads, fail, positive_int, resolve_device

DTYPES = ("float32", "bfloat16", "float16")


def add_parser(subparsers) -> None:
    """Register `kdsr profile` and its flags."""
    from kdsr.models.kdsr_model import VARIANTS

    p = subparsers.add_parser(
        "profile",
        help="parameters, MACs and forward time per IDR-DDC backend of a KDSR variant",
        description="Build a KDSR model (random weights) and report its parameter count (as the paper counts "
        "it, frozen MeanShift included), its MACs at an LR size (counted as spec §7 / thop does: conv and "
        "linear modules, biases and the dynamic depthwise conv excluded; also shown with the dynamic conv), "
        "and the forward time with each IDR-DDC implementation usable on the device: 'pytorch' (grouped "
        "conv, --no-fused-kernels) and every kdsr_kernels backend.",
    )
    p.add_argument("--variant", default="M", choices=list(VARIANTS), help="model size (default M)")
    p.add_argument("--scale", type=int, default=4, choices=[2, 3, 4], help="SR scale (default 4)")
    p.add_argument(
        "--lr-size",
        type=int,
        nargs=2,
        default=[180, 320],
        metavar=("H", "W"),
        help="LR input height and width (default 180 320, the paper's runtime setting)",
    )
    p.add_argument("--batch", type=positive_int, default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--teacher", action="store_true", help="profile the teacher (LR + HR input) instead")
    p.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="weights and input dtype (default float32)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="timed rounds; each round runs one forward per backend, interleaved (default 50 on CUDA, "
        "9 on CPU); 0 skips timing",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="N",
        help="untimed rounds first (default 10 on CUDA, 2 on CPU)",
    )
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated IDR-DDC implementations to time, from: pytorch, auto, reference, triton, cpu, "
        "cuda (default: pytorch plus every kdsr_kernels backend usable on the device; the Triton interpreter "
        "on CPU only when named)",
    )
    p.add_argument(
        "--json", dest="json_out", default=None, metavar="PATH", help="also write the results here"
    )
    add_runtime_flags(p, progress=False)
    p.set_defaults(func=run)


def default_backends(device) -> list[str]:
    """'pytorch' plus the kdsr_kernels backends usable on `device` (not the Triton CPU interpreter)."""
    import kdsr_kernels

    names = [
        b for b in kdsr_kernels.available_backends(device) if not (b == "triton" and device.type == "cpu")
    ]
    return ["pytorch", *names]


def interleaved_schedule(names: Sequence[str], rounds: int) -> list[str]:
    """The order the backends are timed in: `rounds` rounds, each running every backend once, round r
    starting at backend r mod len(names) (round-robin with rotation, so no backend is always first)."""
    n = len(names)
    return [names[(r + i) % n] for r in range(rounds) for i in range(n)]


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    timer: Callable[[Callable[[], object]], float],
) -> tuple[dict[str, list[float]], dict[str, Exception]]:
    """Time each callable `repeats` times, interleaved as `interleaved_schedule`, after `warmup` untimed
    rounds; `timer(fn)` runs fn once and returns its milliseconds.

    Returns ({name: [ms] * repeats, in round order}, {name: exception}): a callable that raises is left
    out of the later rounds and of the first dict, and its exception is in the second.
    """
    names = list(calls)
    failed: dict[str, Exception] = {}
    times: dict[str, list[float]] = {name: [] for name in names}
    for index, name in enumerate(interleaved_schedule(names, warmup + repeats)):
        if name in failed:
            continue
        try:
            if index < warmup * len(names):
                calls[name]()
            else:
                times[name].append(timer(calls[name]))
        except Exception as exc:  # noqa: BLE001 - report the backend, go on with the others
            failed[name] = exc
    return {name: t for name, t in times.items() if name not in failed}, failed


def forward_timer(device) -> Callable[[Callable[[], object]], float]:
    """A `timer` for time_interleaved: CUDA events on CUDA (synchronised per call), perf_counter on CPU."""
    import torch

    if device.type == "cuda":

        def cuda_ms(fn: Callable[[], object]) -> float:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return cuda_ms

    def cpu_ms(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return cpu_ms


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, quartiles (the spread) and min of a list of milliseconds."""
    ordered = sorted(times)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "q1": q1, "q3": q3, "min": ordered[0]}


def run(args) -> int:
    """Print the profile; returns 0, or 2 on bad arguments."""
    import copy

    import torch

    import kdsr
    from kdsr.models import PAPER_PARAMS_M, count_macs, count_parameters

    apply_threads(args)
    H, W = args.lr_size
    if min(H, W) < 4:
        return fail("profile", "--lr-size must be >= 4 4")
    device = resolve_device(args.device)
    try:
        cls = kdsr.KDSRTeacher if args.teacher else kdsr.KDSRStudent
        model = cls(args.variant, args.scale)
        backends = args.backends.split(",") if args.backends else default_backends(device)
        for name in backends:
            model.set_fused_kernels(False if name == "pytorch" else name)  # validates the name
    except (ValueError, RuntimeError) as exc:
        return fail("profile", str(exc))

    role = "teacher" if args.teacher else "student"
    params = count_parameters(model)
    macs = count_macs(model, (H, W), args.batch)
    macs_dyn = count_macs(model, (H, W), args.batch, include_dynamic=True)
    paper = PAPER_PARAMS_M.get(model.variant) if not args.teacher else None
    print(
        f"KDSR {args.variant} x{args.scale} {role}: n_feats={model.n_feats}, n_blocks={model.n_blocks}, "
        f"n_encoder_res={model.n_encoder_res}"
    )
    paper_note = f"; paper {paper:.2f} M" if paper is not None else ""
    print(
        f"parameters: {params['total']:,} ({params['total'] / 1e6:.2f} M{paper_note}) = encoder "
        f"{params['encoder']:,} + SR network {params['sr_net']:,}; trainable {params['trainable']:,}"
    )
    shape = f"{args.batch}x3x{H}x{W}"
    print(
        f"MACs at LR {shape}: {macs['total'] / 1e9:.2f} G (spec §7 count; encoder "
        f"{macs['encoder'] / 1e9:.2f} G, SR network {macs['sr_net'] / 1e9:.2f} G); with the dynamic "
        f"depthwise convs {macs_dyn['total'] / 1e9:.2f} G"
    )
    result = {
        "variant": args.variant,
        "scale": args.scale,
        "role": role,
        "lr_size": [H, W],
        "batch": args.batch,
        "params": params,
        "macs": macs,
        "macs_with_dynamic": macs_dyn["total"],
        "device": str(device),
        "dtype": args.dtype,
        "timings_ms": {},
        "summary_ms": {},
    }
    repeats = args.repeats if args.repeats is not None else (50 if device.type == "cuda" else 9)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    if repeats > 0:
        dtype = getattr(torch, args.dtype)
        model.to(device=device, dtype=dtype)
        model.validate_inputs = False
        lr = torch.rand(args.batch, 3, H, W, device=device, dtype=dtype)
        inputs = (lr,)
        if args.teacher:
            inputs = (
                lr,
                torch.rand(args.batch, 3, H * args.scale, W * args.scale, device=device, dtype=dtype),
            )
        calls = {}
        for name in backends:  # one model per backend, so the timed loop switches nothing
            copy_ = copy.deepcopy(model).set_fused_kernels(False if name == "pytorch" else name)
            calls[name] = _forward_call(copy_, inputs)
        where = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu, {torch.get_num_threads()} threads"
        )
        print(
            f"\nforward time ({where}, {args.dtype}; {repeats} rounds after {warmup} warm-up, each round one "
            "forward per backend, interleaved):"
        )
        with torch.no_grad():
            times, failures = time_interleaved(calls, repeats, warmup, forward_timer(device))
        fastest = min((statistics.median(t) for t in times.values()), default=None)
        print("| IDR-DDC | median ms | IQR ms (q1-q3) | min ms | vs fastest |")
        print("|---|---:|---:|---:|---:|")
        for name in backends:
            if name in failures:
                exc = failures[name]
                print(f"| {name} | failed: {type(exc).__name__}: {exc} | | | |")
                continue
            stats = summarize(times[name])
            result["timings_ms"][name] = times[name]
            result["summary_ms"][name] = stats
            spread = f"{stats['q1']:.2f}-{stats['q3']:.2f}"
            print(
                f"| {name} | {stats['median']:.2f} | {spread} | {stats['min']:.2f} "
                f"| {stats['median'] / fastest:.2f}x |"
            )
        ties = _overlapping(result["summary_ms"])
        if ties:
            print(
                "IQRs overlap (order within noise): "
                + ", ".join(f"{a} ~ {b}" for a, b in ties)
                + "; raise --repeats to separate them"
            )
        if not args.teacher:
            result["roofline"] = _roofline_line(args, device, (H, W))
    if args.json_out:
        from kdsr.atomic import atomic_write_text

        atomic_write_text(args.json_out, json.dumps(result, indent=2))
    return 0


def _forward_call(model, inputs: tuple) -> Callable[[], object]:
    def call() -> object:
        return model(*inputs)

    return call


def _overlapping(summary: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """Pairs of backends, neighbours in median order, whose interquartile ranges overlap."""
    ordered = sorted(summary, key=lambda n: summary[n]["median"])
    return [
        (a, b) for a, b in zip(ordered, ordered[1:], strict=False) if summary[a]["q3"] >= summary[b]["q1"]
    ]


PRECISION_OF_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _roofline_line(args, device, lr_size: tuple[int, int]) -> dict[str, float]:
    """Print and return the network's MAC/s against the best dense 3x3 conv (kdsr.models.roofline)."""
    import kdsr
    from kdsr.device import reuse_freed_memory
    from kdsr.models.roofline import roofline

    reuse_freed_memory()
    precision = PRECISION_OF_DTYPE[args.dtype]
    model = kdsr.load(kdsr.KDSRStudent(args.variant, args.scale).checkpoint(), map_location=device)
    model.validate_inputs = False
    r = roofline(model, lr_size, precision, rounds=max(3, min(args.repeats or 7, 7)), batch=args.batch)
    print(f"\nroofline ({precision}, as kdsr.load runs it): {r.summary()}")
    return {
        "network_gmacs": r.network_macs_per_s / 1e9,
        "conv_gmacs": r.conv_macs_per_s / 1e9,
        "ratio": r.ratio,
    }
