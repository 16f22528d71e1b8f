"""KDSR training (spec §5a, §5c): teacher with L1, student with L1 + KD, and the GAN stage
(KDSR_S-GAN: G from a student checkpoint, a U-Net discriminator, L1 + KD + perceptual + GAN; GANStage).

`Trainer` holds one run's state: models (kdsr.training.build), optimizer, EMA, batch source
(kdsr.training.run_data), and the step. The loop is kdsr.training.loop, the CSV/TensorBoard log
kdsr.training.run_log, the learning rate kdsr.training.schedule (a function of config and iteration).

Data: a torch DataLoader with data.workers processes builds the batch of iteration i (kdsr.data.loader:
every sample draws from its own generator seeded by (config seed, i, rank, index in the batch)), so a
resumed run, or one with another number of workers, sees exactly the batches of an uninterrupted run; model,
optimizer, EMA and every RNG state are restored from the checkpoint on top. No global RNG is reseeded.

Output folder `<logging.out_dir>/<name>/`: config.yaml, last.pt, best.pt (by validation PSNR),
train_log.csv, val_log.csv, tb/ (TensorBoard), curves.png.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdsr.data.loader import TrainLoader, auto_workers
from kdsr.degradations.usm import usm_sharpen
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.build import build_gan_perceptual, build_models
from kdsr.training.config import ConfigError, RunConfig, validate_config
from kdsr.training.distributed import DistContext, all_reduce_mean, barrier, local_batch_size
from kdsr.training.loop import TrainingDiverged, TrainResult, run_training
from kdsr.training.losses import kd_loss
from kdsr.training.readout import build_validation_readout
from kdsr.training.readout_aux import build_readout_aux
from kdsr.training.realworld_val import validation_pairs
from kdsr.training.run_data import build_batch_source
from kdsr.training.schedule import lr_factor, set_lr

__all__ = ["Trainer", "TrainResult", "TrainingDiverged"]


class StudentForward(nn.Module):
    """One module around the student so DDP sees the whole forward: lr (B,3,h,w) -> (sr or None, D')."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, lr: torch.Tensor, encoder_only: bool = False):
        d, d_prime = self.student.encode(lr)
        if encoder_only:
            return None, d_prime
        return self.student.sr_net(lr, d), d_prime


class Trainer:
    """Runs one training stage from a config: a `RunConfig` from `load_config`, or a plain dict (e.g. a
    checkpoint's "config"), which is checked here.

    `resume` is a checkpoint dict from `checkpoint.load_checkpoint`; `progress` shows tqdm on rank 0;
    `trust_checkpoint` lets the teacher file be fully unpickled (see build.build_models).
    """

    def __init__(
        self,
        config: RunConfig | Mapping[str, Any],
        ctx: DistContext | None = None,
        resume: dict[str, Any] | None = None,
        progress: bool = True,
        trust_checkpoint: bool = False,
    ):
        config = config if isinstance(config, RunConfig) else validate_config(config)
        self.config = config
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.progress = progress
        self.stage = config.stage
        self.train_cfg = config.train
        self.run_dir = Path(config.logging.out_dir) / config.name
        self.local_batch = local_batch_size(config.data.batch_size, self.ctx)
        perceptual = build_gan_perceptual(config) if self.stage == "gan" else None  # before any work

        self.model, self.teacher = build_models(config, self.device, trust_checkpoint)
        for net in (self.model, self.teacher):
            if net is not None:
                net.validate_inputs = False  # the trainer builds its inputs; skip the per-call NaN sync
        self.readout_aux = build_readout_aux(config, self.model, self.device)  # train.readout_weight > 0
        self.gan = None
        if self.stage == "gan":
            self._init_gan(perceptual)
        else:
            self._init_optimisation()
        self.batch_source, self.realworld = build_batch_source(
            config, self.local_batch, self.ctx.rank, progress=self.progress and self.ctx.is_main
        )
        workers = auto_workers() if config.data.workers == "auto" else config.data.workers
        self.loader = TrainLoader(self.batch_source, workers=workers, pin_memory=self.device.type == "cuda")
        self.val_pairs = validation_pairs(config) if self.ctx.is_main else []
        self.sigma_readout = build_validation_readout(config) if self.ctx.is_main else None
        self.iteration = 0
        self.best_psnr: float | None = None
        if resume is not None:
            self._restore(resume)
        if self.gan is None:
            self._set_lr(self.iteration)

    def _init_optimisation(self) -> None:
        """Forward module (DDP / compile), Adam and EMA of the teacher and student stages."""
        t = self.train_cfg
        self.forward_module: nn.Module = StudentForward(self.model) if self.stage == "student" else self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_module = DistributedDataParallel(
                self.forward_module, device_ids=device_ids, find_unused_parameters=t.encoder_iters > 0
            )
        self.optimizer = torch.optim.Adam(
            self._param_groups(), lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay
        )
        self.base_lrs = [t.lr, t.lr * t.lr_encoder_mult][: len(self.optimizer.param_groups)]
        if t.compile:
            self.forward_module = torch.compile(self.forward_module)
        self.ema = None
        if t.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True
            )

    def _init_gan(self, perceptual: nn.Module) -> None:
        """GANStage on G (self.model), the frozen teacher and `perceptual`, fed by `batch_for`."""
        from kdsr.training.gan_stage import GANSettings, GANStage

        t, loss = self.train_cfg, self.config.loss
        settings = GANSettings(
            lr=t.lr,
            betas=tuple(t.betas),
            ema_decay=t.ema_decay,
            l1_weight=loss.l1_weight,
            kd_weight=t.kd_weight,
            perceptual_weight=loss.perceptual_weight,
            gan_weight=loss.gan_weight,
            temperature=t.temperature,
            d_num_feat=t.gan.d_num_feat,
        )
        torch.manual_seed(self.config.seed)  # D's initialisation
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.gan = GANStage(
            self.model,
            self.teacher,
            perceptual.to(self.device),
            self.batch_for,
            settings,
            teacher_hr=usm_sharpen if t.gan.teacher_sees_usm else None,
            ddp=self.ctx.distributed,
            device_ids=device_ids,
        )
        self.forward_module = self.gan.g_forward
        self.optimizer = self.gan.opt_g  # G's lr is constant (the reference's 1e-4 * 0.5 ** (i // 400k))
        self.ema = self.gan.ema

    def _set_lr(self, iteration: int) -> None:
        """Set every Adam group's lr to its base lr times the schedule's factor at `iteration`."""
        set_lr(self.optimizer, self.base_lrs, lr_factor(self.train_cfg, iteration))

    def _param_groups(self) -> list[dict[str, Any]]:
        """Adam groups: one (train.lr) when train.lr_encoder_mult is 1, as before the option existed (so
        older checkpoints resume); else SR network (train.lr) and encoder (train.lr * lr_encoder_mult)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        trainable += list(self.readout_aux.parameters()) if self.readout_aux is not None else []
        t = self.train_cfg
        if t.lr_encoder_mult == 1.0:
            return [{"params": trainable}]
        encoder_ids = {id(p) for p in self.model.encoder.parameters()}
        return [
            {"params": [p for p in trainable if id(p) not in encoder_ids], "lr": t.lr},
            {"params": [p for p in trainable if id(p) in encoder_ids], "lr": t.lr * t.lr_encoder_mult},
        ]

    # ----------------------------------------------------------------------------------------- data
    def _saves_queue(self) -> bool:
        return self.realworld is not None and not self.ctx.distributed

    def batch_for(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr, hr) of this rank for `iteration`: lr (b,3,p,p), hr (b,3,s*p,s*p), float32 on the device.

        Taken from the running DataLoader when it is at `iteration` (inside `run`), else built here; both
        give the same tensors. The real-world path also pushes the batch through the pair queue.
        """
        return self.batch_source.finish(self.loader.get(iteration), self.device)

    # ----------------------------------------------------------------------------------------- step
    def encoder_only(self, iteration: int) -> bool:
        """True in the student's encoder-only warm-up (KD loss alone)."""
        return self.stage == "student" and iteration < self.train_cfg.encoder_iters

    def compute_loss(
        self, lr: torch.Tensor, hr: torch.Tensor, iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (0-dim) and its parts {"l1", "kd"} for one local batch; runs the forward pass.

        With train.precision = bf16 the forward runs under autocast(bfloat16); the loss is fp32.
        """
        if self.train_cfg.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self._compute_loss(lr, hr, iteration)
        return self._compute_loss(lr, hr, iteration)

    def _compute_loss(self, lr, hr, iteration):
        if self.stage == "teacher" and self.readout_aux is not None:
            return self.readout_aux.teacher_loss(self.model, lr, hr, self.realworld.queue.last_aux)
        t = self.train_cfg
        if self.stage == "teacher":
            sr = self.forward_module(lr, hr)
            l1 = F.l1_loss(sr.float(), hr)
            return l1, {"l1": l1.detach(), "kd": torch.zeros((), device=lr.device)}
        encoder_only = self.encoder_only(iteration)
        with torch.no_grad():
            _, teacher_dprime = self.teacher.encode(lr, hr)
        sr, student_dprime = self.forward_module(lr, encoder_only)
        kd = kd_loss(student_dprime.float(), teacher_dprime.float(), t.kd_loss, t.temperature)
        kd_term = t.kd_weight * kd
        if encoder_only:
            return kd_term, {"l1": torch.zeros((), device=lr.device), "kd": kd.detach()}
        l1 = F.l1_loss(sr.float(), hr)
        return l1 + kd_term, {"l1": l1.detach(), "kd": kd.detach()}

    def gan_step(self, iteration: int) -> dict[str, float]:
        """One G step then one D step (GANStage); returns rank-averaged {"loss" (G's total), "l1", "kd",
        "lr", "percep", "gan_g", "d_real", "d_fake", "out_d_real", "out_d_fake"}.

        Raises TrainingDiverged on a non-finite loss (the step has run: the last saved last.pt is kept).
        """
        parts = self.gan.step(iteration)
        names = list(parts)
        values = all_reduce_mean(torch.tensor([parts[k] for k in names], device=self.device), self.ctx)
        stats = dict(zip(names, values.tolist(), strict=True))
        if not all(math.isfinite(v) for v in stats.values()):
            raise TrainingDiverged(
                f"GAN loss became non-finite at iteration {iteration + 1} ({stats}); last.pt in "
                f"{self.run_dir} keeps the last saved state. Lower train.lr (now {self.train_cfg.lr}) "
                "and resume with --resume"
            )
        stats["loss"] = stats.pop("loss_g")
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        return stats

    def train_step(self, iteration: int) -> dict[str, float]:
        """One optimisation step; returns the rank-averaged {"loss", "l1", "kd", "lr"} (stage gan: gan_step).

        Raises TrainingDiverged (after saving last.pt with the pre-step state) on a non-finite loss.
        """
        if self.gan is not None:
            return self.gan_step(iteration)
        self.model.train()
        lr_img, hr = self.batch_for(iteration)
        loss, parts = self.compute_loss(lr_img, hr, iteration)
        stats = all_reduce_mean(torch.stack([loss.detach(), parts["l1"], parts["kd"]]), self.ctx).tolist()
        if not all(math.isfinite(v) for v in stats):
            path = self.save("last.pt") if self.ctx.is_main else self.run_dir / "last.pt"
            barrier(self.ctx)
            raise TrainingDiverged(
                f"loss became {stats[0]} at iteration {iteration + 1}; the last finite state "
                f"(iteration {iteration}) is kept in {path}. Lower train.lr (now {self.train_cfg.lr}) "
                "and resume with --resume, or check the data."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.encoder_only(iteration):
            for p in self.model.sr_net.parameters():  # Adam skips params without a gradient
                p.grad = None
        self._set_lr(iteration)
        current_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self._set_lr(iteration + 1)  # param_groups show the next step's lr, as a torch scheduler does
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"loss": stats[0], "l1": stats[1], "kd": stats[2], "lr": current_lr}

    # ----------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """The full training state as a checkpoint dict (see kdsr.training.checkpoint)."""
        gan = self.gan is not None
        return {
            "format": ckpt_io.CHECKPOINT_FORMAT,
            "version": ckpt_io.CHECKPOINT_VERSION,
            "iteration": self.iteration,
            "model": self.model.checkpoint(),
            "ema_model": self.ema.module.checkpoint() if self.ema is not None else None,
            "optimizer": None if gan else self.optimizer.state_dict(),
            "gan": self.gan.state() if gan else None,  # G, D, both optimizers, the EMA
            "ema": self.ema.state_dict() if self.ema is not None and not gan else None,
            "rng": ckpt_io.capture_rng_state(),
            "config": self.config.to_dict(),
            "best_psnr": self.best_psnr,
            "readout_head": self.readout_aux.state_dict() if self.readout_aux is not None else None,
            # Only rank 0 saves, so under DDP the per-rank queues are not kept (they restart empty on resume).
            "pair_queue": self.realworld.queue.state_dict() if self._saves_queue() else None,
        }

    def save(self, filename: str) -> Path:
        """Write the state atomically to run_dir/filename (rank 0 only); returns the path."""
        return ckpt_io.save_atomic(self.state(), self.run_dir / filename)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if self.gan is not None:
            if ckpt.get("gan") is None:
                raise ConfigError(
                    "stage: gan but the checkpoint has no GAN state (it was written by stage "
                    f"{ckpt['config'].get('stage')!r}); start the GAN stage with --init <student>.pt instead"
                )
            self.gan.load_state(ckpt["gan"])
        else:
            self._restore_optimisation(ckpt)
        ckpt_io.restore_rng_state(ckpt["rng"])
        self.iteration = int(ckpt["iteration"])
        self.best_psnr = ckpt.get("best_psnr")
        if self.readout_aux is not None and ckpt.get("readout_head") is not None:
            self.readout_aux.load_state_dict(ckpt["readout_head"])
        if self.realworld is not None and ckpt.get("pair_queue") is not None:
            self.realworld.queue.load_state_dict(ckpt["pair_queue"])

    def _restore_optimisation(self, ckpt: dict[str, Any]) -> None:
        """Model, Adam and EMA state. A "scheduler" entry (checkpoints before the schedule became a
        function of config and iteration) is ignored: the lr follows the current config."""
        if ckpt.get("gan") is not None:
            raise ConfigError("this checkpoint is from stage gan; resume it with its own config (stage: gan)")
        self.model.load_state_dict(ckpt["model"]["state_dict"])
        saved_groups = len(ckpt["optimizer"]["param_groups"])
        if saved_groups != len(self.optimizer.param_groups):
            raise ConfigError(
                f"the checkpoint's optimizer has {saved_groups} parameter group(s), this config "
                f"{len(self.optimizer.param_groups)}: train.lr_encoder_mult cannot change between 1 and "
                "another value on resume; resume with the run's own value"
            )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ConfigError(
                    "train.ema_decay > 0 but the checkpoint has no EMA state; resume with ema_decay=0"
                )
            self.ema.load_state_dict(ckpt["ema"])

    # ------------------------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Mean PSNR/SSIM (Y, crop = scale) of the eval model on the validation pairs (rank 0)."""
        from kdsr.training.evaluate import evaluate_model

        model = self.ema.module if self.ema is not None else self.model
        result = evaluate_model(model, self.val_pairs, self.config.model.scale, self.device)
        stats = {"psnr": result["psnr"], "ssim": result["ssim"]}
        if self.sigma_readout is not None:
            stats.update(self.sigma_readout.scores(model))
        return stats

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train from the current iteration to train.iters (or until `stop_after` iterations are done);
        see kdsr.training.loop.run_training."""
        return run_training(self, stop_after)
