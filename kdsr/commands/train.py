"""`kdsr train`: stage 1 (teacher, L1), stage 2 (student, L1 + KD) or the GAN stage from a YAML config.

kdsr train --config iso_x4_M_teacher --fused-kernels
kdsr train --config iso_x4_M_student --teacher runs/iso_x4_M_teacher/last.pt
kdsr train --config tiny_realworld_x4_gan --teacher runs/T/best.pt --init runs/S/best.pt
kdsr train --resume runs/iso_x4_M_student/last.pt
torchrun --nproc_per_node=4 -m kdsr train --config iso_x4_M_teacher
"""

from __future__ import annotations

import argparse

from kdsr.commands._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    add_runtime_flags,
    add_trust_checkpoint_flag,
    apply_threads,
    fail,
    positive_int,
)


def add_parser(subparsers) -> None:
    """Register `kdsr train` and its flags."""
    p = subparsers.add_parser(
        "train",
        help="train a KDSR teacher, student or GAN student from a YAML config",
        description="Train a KDSR teacher (stage 1, L1) or student (stage 2, L1 + knowledge distillation "
        "from a frozen teacher) or the GAN stage (stage: gan, KDSR_S-GAN: G from --init, a U-Net "
        "discriminator, L1 + KD + perceptual + GAN losses). Multi-GPU: launch with "
        "`torchrun --nproc_per_node=N -m kdsr train ...` "
        "(DDP; the global data.batch_size is split across processes; rank 0 writes). Outputs go to "
        "<logging.out_dir>/<name>/: last.pt, best.pt, train_log.csv, val_log.csv, tb/, curves.png.",
    )
    p.add_argument(
        "--config",
        help="YAML config: a path or a shipped name (e.g. iso_x4_M_teacher, tiny_iso_x4_student). "
        "Optional with --resume (the checkpoint's config is used)",
    )
    p.add_argument(
        "--teacher", help="stages student and gan: the teacher checkpoint (path or shipped weights name)"
    )
    p.add_argument(
        "--init",
        help="stage gan: the student checkpoint G starts from (strict load; a training checkpoint gives its "
        "EMA weights), e.g. runs/realworld_x4_student/best.pt",
    )
    p.add_argument("--resume", help="continue a run exactly from its last.pt (or any checkpoint it wrote)")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set train.iters=2000 data.lr_patch=48 "
        "(YAML values; unknown keys fail)",
    )
    p.add_argument(
        "--fused-kernels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run every IDR-DDC with the fused kernels (--no-fused-kernels: the reference grouped conv); "
        "default: the config's fused_kernels",
    )
    p.add_argument("--name", help="run name (folder under logging.out_dir); default: the config's name")
    p.add_argument("--out-dir", help="parent folder of run folders; default: the config's logging.out_dir")
    p.add_argument(
        "--stop-after",
        type=positive_int,
        metavar="N",
        help="stop (after saving last.pt) once N iterations are done, e.g. to split a run; resume later",
    )
    add_runtime_flags(
        p, device_default=None, device_default_help="the config's device, itself auto by default"
    )
    p.add_argument("--print-config", action="store_true", help="print the final config and exit")
    add_trust_checkpoint_flag(p)
    p.set_defaults(func=run)


def _cli_values(args) -> dict[str, object]:
    """The config keys the typed flags set, by dotted key, as typed (never re-parsed as YAML: --name 2024
    stays the string '2024', --teacher 'a: b.pt' stays a path)."""
    flags = {
        "teacher": args.teacher,
        "init": args.init,
        "fused_kernels": args.fused_kernels,
        "name": args.name,
        "logging.out_dir": args.out_dir,
        "device": args.device,
    }
    return {key: value for key, value in flags.items() if value is not None}


def run(args) -> int:
    """Build the config, check it, train; returns 0 on success, 2 (one line, nothing trained) on a bad
    config or a --resume / --teacher / --init that cannot be read (or is refused by the safe loader) or a bad
    device, 1 when the run diverged."""
    from kdsr.device import DeviceError
    from kdsr.safe_load import CheckpointError
    from kdsr.training import checkpoint as ckpt_io
    from kdsr.training.config import ConfigError, dump_config, load_config
    from kdsr.training.distributed import init_distributed, shutdown
    from kdsr.training.trainer import Trainer, TrainingDiverged

    apply_threads(args)
    resume = None
    try:
        if args.config is None and args.resume is None:
            raise ConfigError("give --config (a YAML path or shipped name) or --resume runs/<name>/last.pt")
        if args.resume is not None:
            try:
                resume = ckpt_io.load_checkpoint(args.resume, trust_pickle=args.trust_checkpoint)
            except (OSError, ValueError) as exc:
                return fail("train", f"--resume: {exc}")
        base = resume["config"] if resume is not None and args.config is None else None
        config = load_config(args.config, args.overrides, base=base, values=_cli_values(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return fail("train", str(exc))
    if args.print_config:
        print(dump_config(config))
        return 0
    try:
        ctx = init_distributed(config.device)
    except DeviceError as exc:
        return fail("train", f"device: {exc}")
    try:
        try:  # set-up: models, teacher, data; what fails here is the input (e.g. no images in a folder)
            trainer = Trainer(
                config,
                ctx,
                resume=resume,
                progress=not args.no_progress,
                trust_checkpoint=args.trust_checkpoint,
            )
        except (CheckpointError, ConfigError, OSError, ValueError) as exc:
            return fail("train", str(exc), EXIT_USAGE)
        start = trainer.iteration
        if resume is not None and ctx.is_main:
            print(f"resumed from {args.resume} at iteration {start}", flush=True)
        result = trainer.run(stop_after=args.stop_after)
    except (CheckpointError, ConfigError) as exc:
        return fail("train", str(exc), EXIT_USAGE)
    except TrainingDiverged as exc:
        return fail("train", f"stopped: {exc}", EXIT_FAILED)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        best = f", best val PSNR {result.best_psnr:.3f} dB" if result.best_psnr is not None else ""
        ran = result.iteration - start
        print(
            f"done: ran {ran} iteration{'s' if ran != 1 else ''} ({start} → {result.iteration} of "
            f"{config.train.iters}) in {result.wall_s:.1f} s{best}; checkpoints in {result.run_dir}"
        )
    return 0
