"""`kdsr profile`: parameters, MACs and forward time per IDR-DDC backend of a KDSR variant.

kdsr profile --variant M
kdsr profile --variant L --lr-size 180 320 --device cuda --dtype bfloat16 --repeats 50
"""

from __future__ import annotations

import json
import statistics
import sys
import time

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
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--teacher", action="store_true", help="profile the teacher (LR + HR input) instead")
    p.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)"
    )
    p.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="weights and input dtype (default float32)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="timed forward passes per backend (default 20 on CUDA, 3 on CPU); 0 skips timing",
    )
    p.add_argument(
        "--warmup", type=int, default=None, metavar="N", help="untimed passes first (default 5 / 1)"
    )
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated IDR-DDC implementations to time, from: pytorch, auto, reference, triton, cpu, "
        "cuda (default: pytorch plus every kdsr_kernels backend usable on the device; the Triton interpreter "
        "on CPU only when named)",
    )
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)"
    )
    p.add_argument(
        "--json", dest="json_out", default=None, metavar="PATH", help="also write the results here"
    )
    p.set_defaults(func=run)


def default_backends(device) -> list[str]:
    """'pytorch' plus the kdsr_kernels backends usable on `device` (not the Triton CPU interpreter)."""
    import kdsr_kernels

    names = [
        b for b in kdsr_kernels.available_backends(device) if not (b == "triton" and device.type == "cpu")
    ]
    return ["pytorch", *names]


def time_forward(model, inputs: tuple, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of `repeats` forward passes (CUDA events on CUDA, perf_counter on CPU), after `warmup`."""
    import torch

    device = inputs[0].device
    with torch.no_grad():
        for _ in range(warmup):
            model(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            times = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(*inputs)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            return times
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
        return times


def run(args) -> int:
    """Print the profile; returns 0, or 2 on bad arguments."""
    import torch

    import kdsr
    from kdsr.models import PAPER_PARAMS_M, count_macs, count_parameters

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    H, W = args.lr_size
    try:
        if min(H, W) < 4 or args.batch < 1:
            raise ValueError("--lr-size must be >= 4 4 and --batch >= 1")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available here; use --device cpu")
        cls = kdsr.KDSRTeacher if args.teacher else kdsr.KDSRStudent
        model = cls(args.variant, args.scale)
        backends = args.backends.split(",") if args.backends else default_backends(device)
        for name in backends:
            model.set_fused_kernels(False if name == "pytorch" else name)  # validates the name
    except (ValueError, RuntimeError) as exc:
        print(f"kdsr profile: error: {exc}", file=sys.stderr)
        return 2

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
    }
    repeats = args.repeats if args.repeats is not None else (20 if device.type == "cuda" else 3)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
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
        where = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu, {torch.get_num_threads()} threads"
        )
        print(f"\nforward time ({where}, {args.dtype}, {repeats} runs after {warmup} warm-up):")
        print("| IDR-DDC | median ms | min ms |")
        print("|---|---:|---:|")
        for name in backends:
            model.set_fused_kernels(False if name == "pytorch" else name)
            try:
                times = time_forward(model, inputs, repeats, warmup)
            except Exception as exc:  # noqa: BLE001 - report the backend, go on with the others
                print(f"| {name} | failed: {type(exc).__name__}: {exc} | |")
                continue
            result["timings_ms"][name] = times
            print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} |")
    if args.json_out:
        from kdsr.atomic import atomic_write_text

        atomic_write_text(args.json_out, json.dumps(result, indent=2))
    return 0
