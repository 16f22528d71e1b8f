"""The training loop: steps, progress bar, logging, validation and checkpoints of one `Trainer`.

`run_training(trainer, stop_after)` trains from `trainer.iteration` to train.iters (or until `stop_after`
iterations are done). Rank 0 writes config.yaml (atomically), the run log (kdsr.training.run_log),
last.pt every logging.save_every iterations and at the end, best.pt at each best validation PSNR, and
curves.png once train.iters is reached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from kdsr.atomic import atomic_write_text
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import dump_config
from kdsr.training.distributed import barrier
from kdsr.training.readout import readout_line
from kdsr.training.run_log import RunLog

if TYPE_CHECKING:
    from kdsr.training.trainer import Trainer

__all__ = ["TrainResult", "TrainingDiverged", "run_training"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last finite state was saved before raising."""


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    iteration: int
    losses: list[float] = field(default_factory=list)  # total loss of every iteration run in this call
    best_psnr: float | None = None
    last_val_psnr: float | None = None
    wall_s: float = 0.0


def _open_run_folder(trainer: Trainer) -> RunLog:
    """Rank 0: create the run folder, open the log (dropping rows after a resume point), clear stale temp
    files, write config.yaml."""
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(
        trainer.run_dir,
        trainer.config.logging.tensorboard,
        resume_from=trainer.iteration,
        gan=trainer.gan is not None,
    )
    ckpt_io.remove_stale_temp_files(trainer.run_dir)
    atomic_write_text(trainer.run_dir / "config.yaml", dump_config(trainer.config))
    return log


def _validate(trainer: Trainer, result: TrainResult, log: RunLog, bar: tqdm) -> None:
    val = trainer.validate()
    result.last_val_psnr = val["psnr"]
    log.log_val(trainer.iteration, val)
    if trainer.gan is None and (trainer.best_psnr is None or val["psnr"] > trainer.best_psnr):
        trainer.best_psnr = val["psnr"]
        trainer.save("best.pt")
    readout = f", {readout_line(val)}" if trainer.sigma_readout is not None else ""
    bar.write(f"iter {trainer.iteration}: val PSNR {val['psnr']:.3f} dB, SSIM {val['ssim']:.4f}{readout}")


def run_training(trainer: Trainer, stop_after: int | None = None) -> TrainResult:
    """Train `trainer` from its current iteration to train.iters, or until `stop_after` iterations are
    done (the DataLoader workers then stay up for the next call). Returns the TrainResult.

    Raises TrainingDiverged on a non-finite loss (see Trainer.train_step).
    """
    log_cfg, ctx = trainer.config.logging, trainer.ctx
    total = trainer.config.train.iters
    end = total if stop_after is None else min(total, stop_after)
    result = TrainResult(run_dir=trainer.run_dir, iteration=trainer.iteration, best_psnr=trainer.best_psnr)
    log = _open_run_folder(trainer) if ctx.is_main else None
    bar = tqdm(
        total=total,
        initial=trainer.iteration,
        desc=f"{trainer.stage} {trainer.config.name}",
        disable=not (trainer.progress and ctx.is_main),
        dynamic_ncols=True,
    )
    start_time = time.perf_counter()
    window_start, window_iters = start_time, 0
    if trainer.iteration < end:
        trainer.loader.start(trainer.iteration, end)
    try:
        while trainer.iteration < end:
            stats = trainer.train_step(trainer.iteration)
            trainer.iteration += 1
            it = trainer.iteration
            result.losses.append(stats["loss"])
            window_iters += 1
            bar.update(1)
            if it % 10 == 0 or it == end:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", kd=f"{stats['kd']:.4f}", lr=f"{stats['lr']:.1e}")
            if log is not None and (it % log_cfg.print_every == 0 or it == end):
                now = time.perf_counter()
                stats["it_per_s"] = window_iters / max(now - window_start, 1e-9)
                window_start, window_iters = now, 0
                log.log_train(it, stats)
            if trainer.val_pairs and (it % log_cfg.val_every == 0 or it == total):
                _validate(trainer, result, log, bar)
            if ctx.is_main and (it % log_cfg.save_every == 0 or it == end):
                trainer.save("last.pt")
            if it % log_cfg.save_every == 0:
                barrier(ctx)
    except BaseException:
        trainer.loader.close()
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    if trainer.iteration == total:
        trainer.loader.close()  # a run stopped early (stop_after) keeps its workers for the next run()
    result.iteration = trainer.iteration
    result.best_psnr = trainer.best_psnr
    result.wall_s = time.perf_counter() - start_time
    if ctx.is_main and trainer.iteration == total:
        from kdsr.training.plots import plot_curves

        plot_curves(trainer.run_dir)
    return result
