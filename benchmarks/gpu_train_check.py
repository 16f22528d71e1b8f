"""Standalone CUDA check: one KDSR_S-M student training step, fused IDR-DDC kernels vs the grouped conv.

    python benchmarks/gpu_train_check.py                      # B=16, 64x64 LR (256x256 HR), variant M, x4
    python benchmarks/gpu_train_check.py --batch 32 --iters 50 --json out.json

A step is what `kdsr train` does in stage 2 (spec §5a) minus data loading: frozen teacher encoder on
LR + PixelUnshuffle(HR) (no grad), student encoder + SR network, L1(SR, HR) + KL(softmax(D'_T/0.15) ||
softmax(D'_S/0.15)), backward, Adam. The batch is degraded once on the GPU with the classic iso pipeline.
Both implementations start from the same weights; the script checks that their first-step losses and
gradients agree, then reports ms/iter (CUDA events, after warm-up) and peak memory. Exit code 1 on mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

import kdsr
from kdsr.training.losses import kd_loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="M", help="model variant (default M: 64 feats, 53 blocks)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr-size", type=int, default=64, help="LR patch side (default 64; HR is 4x)")
    p.add_argument("--scale", type=int, default=4, help="SR scale (default 4)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps (default 5)")
    p.add_argument("--iters", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="write the measurements here")
    return p.parse_args(argv)


def make_batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr (B,3,p,p), hr (B,3,sp,sp)) float32 on `device`: smooth random HR, iso blur, bicubic down, 8-bit."""
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    size = args.lr_size * args.scale
    coarse = torch.rand(args.batch, 3, size // 8, size // 8, generator=g)
    hr = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 1).to(device)
    degradation = kdsr.degradations.ClassicDegradation(args.scale, "iso", noise=0.0, per_sample=True)
    lr, _ = degradation(hr, generator=g)
    return lr, hr


def build(args: argparse.Namespace, fused: bool, device: torch.device):
    """Teacher (frozen) and student with identical weights for both implementations."""
    torch.manual_seed(args.seed)
    teacher = kdsr.KDSRTeacher(args.variant, args.scale, fused_kernels=fused).to(device).eval()
    teacher.requires_grad_(False)
    torch.manual_seed(args.seed + 1)
    student = kdsr.KDSRStudent.from_teacher(teacher, fused_kernels=fused).to(device).train()
    for model in (teacher, student):
        model.validate_inputs = False
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4, betas=(0.9, 0.999))
    return teacher, student, optimizer


def step(teacher, student, optimizer, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """One stage-2 iteration; returns the (detached) loss."""
    with torch.no_grad():
        _, teacher_dprime = teacher.encode(lr, hr)
    d, student_dprime = student.encode(lr)
    sr = student.sr_net(lr, d)
    loss = F.l1_loss(sr, hr) + kd_loss(student_dprime, teacher_dprime, "kl", 0.15)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def first_step_gradients(args, fused: bool, lr: torch.Tensor, hr: torch.Tensor):
    teacher, student, _ = build(args, fused, lr.device)
    with torch.no_grad():
        _, teacher_dprime = teacher.encode(lr, hr)
    d, student_dprime = student.encode(lr)
    loss = F.l1_loss(student.sr_net(lr, d), hr) + kd_loss(student_dprime, teacher_dprime, "kl", 0.15)
    loss.backward()
    return loss.item(), {
        n: p.grad.detach().clone() for n, p in student.named_parameters() if p.grad is not None
    }


def time_steps(args, fused: bool, lr: torch.Tensor, hr: torch.Tensor) -> dict:
    teacher, student, optimizer = build(args, fused, lr.device)
    for _ in range(args.warmup):
        step(teacher, student, optimizer, lr, hr)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.iters):
        loss = step(teacher, student, optimizer, lr, hr)
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / args.iters
    return {
        "ms_per_iter": ms,
        "iters_per_s": 1000.0 / ms,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "final_loss": loss.item(),
        "idr_ddc": student.idr_ddc_mode,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_train_check: no CUDA device; run this on a GPU machine", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    lr, hr = make_batch(args, device)
    print(
        f"{torch.cuda.get_device_name()}  torch {torch.__version__}  variant {args.variant}  "
        f"B={args.batch}  LR {args.lr_size}x{args.lr_size}  x{args.scale}"
    )

    ref_loss, ref_grads = first_step_gradients(args, False, lr, hr)
    fused_loss, fused_grads = first_step_gradients(args, True, lr, hr)
    worst = max(
        ((fused_grads[n] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item()
        for n, g in ref_grads.items()
    )
    agree = abs(fused_loss - ref_loss) <= 1e-4 * abs(ref_loss) and worst <= 1e-3
    print(
        f"first-step loss: grouped-conv {ref_loss:.6f}  fused {fused_loss:.6f}  "
        f"worst relative grad diff {worst:.2e}  -> {'OK' if agree else 'MISMATCH'}"
    )

    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "args": vars(args),
        "first_step": {
            "loss_reference": ref_loss,
            "loss_fused": fused_loss,
            "worst_rel_grad_diff": worst,
            "agree": agree,
        },
    }
    for name, fused in (("grouped-conv", False), ("fused", True)):
        results[name] = time_steps(args, fused, lr, hr)
        r = results[name]
        print(
            f"{name:>13}: {r['ms_per_iter']:8.2f} ms/iter  {r['iters_per_s']:6.2f} it/s  "
            f"peak {r['peak_mem_gib']:.2f} GiB  (idr_ddc: {r['idr_ddc']})"
        )
    speedup = results["grouped-conv"]["ms_per_iter"] / results["fused"]["ms_per_iter"]
    results["speedup"] = speedup
    print(f"fused speed-up over grouped conv: {speedup:.2f}x")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
