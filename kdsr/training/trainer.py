"""KDSR training loop (spec §5a, §5c): teacher with L1, student with L1 + KD, and the GAN stage
(KDSR_S-GAN: G from a student checkpoint, a U-Net discriminator, L1 + KD + perceptual + GAN; GANStage).

Data: a torch DataLoader with data.workers processes builds the batch of iteration i (kdsr.data.loader:
every sample draws from its own generator seeded by (config seed, i, rank, index in the batch)), so a
resumed run, or one with another number of workers, sees exactly the batches of an uninterrupted run; model,
optimizer, scheduler, EMA and every RNG state are restored from the checkpoint on top. No global RNG is
reseeded.

Output folder `<logging.out_dir>/<name>/`: config.yaml, last.pt, best.pt (by validation PSNR),
train_log.csv, val_log.csv, tb/ (TensorBoard), curves.png.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdsr.data.benchmark import benchmark_pairs
from kdsr.data.cache import cache_mode
from kdsr.data.dataset import HRImageDataset
from kdsr.data.loader import ClassicBatches, RealWorldSource, TrainLoader, auto_workers, iteration_seed
from kdsr.data.realworld import RealWorldBatches
from kdsr.degradations.pipeline import ClassicDegradation
from kdsr.degradations.usm import usm_sharpen
from kdsr.models.kdsr_model import VARIANTS, KDSRStudent, KDSRTeacher, shipped_names
from kdsr.models.kdsr_model import load as load_model
from kdsr.safe_load import CheckpointError
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import ConfigError, dump_config, validate_config
from kdsr.training.distributed import DistContext, all_reduce_mean, barrier, local_batch_size
from kdsr.training.losses import kd_loss

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "iteration_seed"]  # iteration_seed: kdsr.data.loader


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


class LRSchedule:
    """Learning-rate factor per iteration (picklable, for LambdaLR; base lr = train.lr).

    Encoder-only phase (iteration < encoder_iters): lr_encoder * gamma_encoder ** (i // encoder_decay).
    Afterwards: lr * gamma ** ((i - encoder_iters) // lr_decay_iters). This is the reference's epoch
    step schedule counted in iterations (one reference epoch is about 971 iterations).
    """

    def __init__(self, train_cfg: dict[str, Any]):
        self.base_lr = float(train_cfg["lr"])
        self.encoder_iters = int(train_cfg["encoder_iters"])
        self.encoder_ratio = float(train_cfg["lr_encoder"]) / self.base_lr
        self.encoder_decay = int(train_cfg["encoder_lr_decay_iters"])
        self.gamma_encoder = float(train_cfg["gamma_encoder"])
        self.decay = int(train_cfg["lr_decay_iters"])
        self.gamma = float(train_cfg["gamma"])

    def __call__(self, iteration: int) -> float:
        if iteration < self.encoder_iters:
            return self.encoder_ratio * self.gamma_encoder ** (iteration // self.encoder_decay)
        return self.gamma ** ((iteration - self.encoder_iters) // self.decay)


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


def model_overrides(model_cfg: dict[str, Any]) -> dict[str, int]:
    """The non-null n_feats / n_blocks / n_encoder_res overrides of a model config."""
    return {k: model_cfg[k] for k in ("n_feats", "n_blocks", "n_encoder_res") if model_cfg[k] is not None}


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """Shape-defining hyper-parameters of a KDSR model, read from its config dict."""
    config = dict(getattr(model, "config", {}) or {})
    keys = ("scale", "n_feats", "n_blocks", "n_encoder_res")
    return {k: config.get(k) for k in keys}


def model_payload(model: nn.Module) -> dict[str, Any]:
    """The kdsr-model dict of `model` (what model.save writes), in memory, with CPU tensors."""
    return model.checkpoint()


def resolve_teacher(name_or_path: str) -> str:
    """Check that a teacher checkpoint path (or shipped name) can be found; return it unchanged."""
    if Path(name_or_path).is_file():
        return name_or_path
    if name_or_path in shipped_names():
        return name_or_path
    raise ConfigError(
        f"teacher checkpoint {name_or_path!r} not found; pass --teacher runs/<teacher run>/last.pt"
    )


def _load_checkpoint_model(flag: str, name_or_path: str, fused: bool, trust_checkpoint: bool) -> nn.Module:
    """kdsr.load a --teacher / --init file on the CPU (a training checkpoint gives its EMA weights)."""
    try:
        return load_model(name_or_path, "cpu", fused_kernels=fused, trust_pickle=trust_checkpoint)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise CheckpointError(f"{flag} {name_or_path!r}: {exc}") from None


def load_gan_generator(config: dict[str, Any], trust_checkpoint: bool = False) -> nn.Module:
    """G of stage gan: the KDSRStudent in `config["init"]` (EMA weights of a training checkpoint), strict.

    Raises ConfigError when the file is missing, holds a teacher, or has another architecture than the
    config's model; CheckpointError when it cannot be read.
    """
    init = config["init"]
    if not Path(init).is_file():
        if init not in shipped_names():
            raise ConfigError(
                f"--init {init!r} not found; pass the student checkpoint runs/<student>/best.pt"
            )
    student = _load_checkpoint_model("--init", init, bool(config["fused_kernels"]), trust_checkpoint)
    if not isinstance(student, KDSRStudent):
        raise ConfigError(
            f"--init {init!r} holds a {type(student).__name__}, not a KDSRStudent; the GAN stage starts "
            "from the stage-2 (student) checkpoint, e.g. --init runs/realworld_x4_student/best.pt"
        )
    mcfg = config["model"]
    expected = {"scale": mcfg["scale"], **VARIANTS[mcfg["variant"]], **model_overrides(mcfg)}
    found = architecture_of(student)
    if found != expected:
        raise ConfigError(
            f"--init {init!r} is another variant: it has {found}, the config asks for {expected} "
            f"(model.variant={mcfg['variant']!r}); use the student trained with the same model settings"
        )
    return student


def build_models(
    config: dict[str, Any], device: torch.device, trust_checkpoint: bool = False
) -> tuple[nn.Module, nn.Module | None]:
    """Create (trainable model, frozen teacher or None) for the config's stage, on `device`.

    Stage gan: the teacher as for the student stage, and G loaded strictly from `config["init"]`.

    Stage teacher: a fresh KDSRTeacher. Stage student: the teacher is loaded from `config["teacher"]`,
    checked against the configured variant, frozen; the student copies the teacher's SR network and gets
    a fresh encoder (seeded by config seed), as the reference's strict=False load does.
    The teacher file is read without running code unless `trust_checkpoint` (kdsr.load's trust_pickle);
    an unreadable or refused teacher file raises kdsr.safe_load.CheckpointError.
    """
    fused = bool(config["fused_kernels"])
    mcfg = config["model"]
    overrides = model_overrides(mcfg)
    torch.manual_seed(config["seed"])
    if config["stage"] == "teacher":
        model = KDSRTeacher(variant=mcfg["variant"], scale=mcfg["scale"], fused_kernels=fused, **overrides)
        _init_encoder(model, config)
        return model.to(device), None
    teacher = _load_checkpoint_model("--teacher", resolve_teacher(config["teacher"]), fused, trust_checkpoint)
    if not isinstance(teacher, KDSRTeacher):
        raise ConfigError(
            f"--teacher {config['teacher']!r} holds a {type(teacher).__name__}, not a KDSRTeacher; "
            "pass the stage-1 (teacher) checkpoint"
        )
    expected = {"scale": mcfg["scale"], **VARIANTS[mcfg["variant"]], **overrides}
    found = architecture_of(teacher)
    if found != expected:
        raise ConfigError(
            f"teacher {config['teacher']!r} is another variant: it has {found}, the config asks for "
            f"{expected} (model.variant={mcfg['variant']!r}); train the teacher with the same model settings"
        )
    teacher.requires_grad_(False).eval()
    if config["stage"] == "gan":
        return load_gan_generator(config, trust_checkpoint).to(device), teacher.to(device)
    torch.manual_seed(config["seed"])
    student = KDSRStudent.from_teacher(teacher)
    student.set_fused_kernels(fused)
    _init_encoder(student, config)
    return student.to(device), teacher.to(device)


def _init_encoder(model: nn.Module, config: dict[str, Any]) -> None:
    """Apply train.encoder_init to a fresh encoder: "torch" keeps PyTorch's default; "kaiming" / "highpass"
    re-draw it (kdsr.models.encoder.kaiming_init_ / highpass_init_)."""
    init = config["train"]["encoder_init"]
    if init != "torch":
        from kdsr.models.encoder import highpass_init_, kaiming_init_

        torch.manual_seed(config["seed"] + 1)
        (kaiming_init_ if init == "kaiming" else highpass_init_)(model.encoder)


def gan_v2(config: dict[str, Any]) -> bool:
    """True when the teacher sees the USM-sharpened GT: train.gan.v2 or the reference's l1_gt_usm /
    percep_gt_usm (which, in the reference, change only the teacher's GT; spec §5c)."""
    gan = config["train"]["gan"]
    return bool(gan["v2"] or gan["l1_gt_usm"] or gan["percep_gt_usm"])


def build_gan_perceptual(config: dict[str, Any]) -> nn.Module:
    """The perceptual loss of stage gan from loss.perceptual.*; any problem (a missing VGG19 file, the
    [gan] extra not installed, weights given for the wrong network) becomes one ConfigError line."""
    from kdsr.metrics.stlpips_net import STLPIPSUnavailable
    from kdsr.training.perceptual import PerceptualLoss, build_perceptual

    percep = config["loss"]["perceptual"]
    try:
        module = build_perceptual(percep["network"], percep["weights"])
    except (OSError, ValueError, STLPIPSUnavailable) as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(module, PerceptualLoss):
        module.layer_weights = {k: float(v) for k, v in percep["layer_weights"].items()}
    return module


class Trainer:
    """Runs one training stage from a validated config (see kdsr.training.config.DEFAULTS).

    `resume` is a checkpoint dict from `checkpoint.load_checkpoint`; `progress` shows tqdm on rank 0;
    `trust_checkpoint` lets the teacher file be fully unpickled (see build_models).
    """

    def __init__(
        self,
        config: dict[str, Any],
        ctx: DistContext | None = None,
        resume: dict[str, Any] | None = None,
        progress: bool = True,
        trust_checkpoint: bool = False,
    ):
        validate_config(config)
        self.config = config
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.progress = progress
        self.stage = config["stage"]
        self.train_cfg = config["train"]
        self.log_cfg = config["logging"]
        self.run_dir = Path(self.log_cfg["out_dir"]) / config["name"]
        self.local_batch = local_batch_size(config["data"]["batch_size"], self.ctx)
        perceptual = build_gan_perceptual(config) if self.stage == "gan" else None  # before any work

        self.model, self.teacher = build_models(config, self.device, trust_checkpoint)
        for net in (self.model, self.teacher):
            if net is not None:
                net.validate_inputs = False  # the trainer builds its inputs; skip the per-call NaN sync
        self.gan = None
        if self.stage == "gan":
            self._init_gan(perceptual)
        else:
            self._init_optimisation()
        dcfg, deg = config["data"], config["degradation"]
        self.realworld = None
        self.dataset = None
        self.degradation = None
        if deg["kind"] == "realworld":
            self.realworld = self._realworld_batches()
            source = RealWorldSource(self.realworld, config["seed"], self.ctx.rank, self.train_cfg["iters"])
        else:
            self.dataset = self._hr_dataset()
            self.degradation = ClassicDegradation(
                scale=config["model"]["scale"],
                kind=deg["kind"],
                sigma=(deg["sig_min"], deg["sig_max"]),
                lambdas=(deg["lambda_min"], deg["lambda_max"]),
                noise=(0.0, deg["noise"]),
                per_sample=deg["per_sample"],
            )
            source = ClassicBatches(
                self.dataset,
                self.degradation,
                self.local_batch,
                config["seed"],
                self.ctx.rank,
                self.train_cfg["iters"],
            )
        self.batch_source = source
        workers = auto_workers() if dcfg["workers"] == "auto" else dcfg["workers"]
        self.loader = TrainLoader(source, workers=workers, pin_memory=self.device.type == "cuda")
        self.val_pairs = self._load_val_pairs() if self.ctx.is_main else []
        self.sigma_readout = None
        if self.ctx.is_main and dcfg["val_sigma_dir"] is not None:
            from kdsr.training.tsne import SigmaReadout

            self.sigma_readout = SigmaReadout(
                dcfg["val_sigma_dir"],
                config["model"]["scale"],
                sigmas=tuple(np.round(np.linspace(deg["sig_min"], deg["sig_max"], 8), 3)),
                crops_per_image=dcfg["val_sigma_crops"],
            )
        self.iteration = 0
        self.best_psnr: float | None = None
        if resume is not None:
            self._restore(resume)

    def _init_optimisation(self) -> None:
        """Forward module (DDP / compile), Adam, step schedule and EMA of the teacher and student stages."""
        if self.stage == "student":
            self.forward_module: nn.Module = StudentForward(self.model)
        else:
            self.forward_module = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_module = DistributedDataParallel(
                self.forward_module,
                device_ids=device_ids,
                find_unused_parameters=self.train_cfg["encoder_iters"] > 0,
            )
        self.optimizer = torch.optim.Adam(
            self._param_groups(),
            lr=self.train_cfg["lr"],
            betas=tuple(self.train_cfg["betas"]),
            eps=self.train_cfg["eps"],
            weight_decay=self.train_cfg["weight_decay"],
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, LRSchedule(self.train_cfg))
        if self.train_cfg["compile"]:
            self.forward_module = torch.compile(self.forward_module)
        self.ema = None
        if self.train_cfg["ema_decay"] > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(self.train_cfg["ema_decay"]), use_buffers=True
            )

    def _init_gan(self, perceptual: nn.Module) -> None:
        """GANStage on G (self.model), the frozen teacher and `perceptual`, fed by `batch_for`."""
        from kdsr.training.gan_stage import GANStage

        t, loss, gan = self.train_cfg, self.config["loss"], self.train_cfg["gan"]
        settings = {
            "lr": t["lr"],
            "betas": tuple(t["betas"]),
            "ema_decay": t["ema_decay"],
            "l1_weight": loss["l1_weight"],
            "kd_weight": t["kd_weight"],
            "perceptual_weight": loss["perceptual_weight"],
            "gan_weight": loss["gan_weight"],
            "temperature": t["temperature"],
            "d_num_feat": gan["d_num_feat"],
        }
        torch.manual_seed(self.config["seed"])  # D's initialisation
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.gan = GANStage(
            self.model,
            self.teacher,
            perceptual.to(self.device),
            self.batch_for,
            settings,
            teacher_hr=usm_sharpen if gan_v2(self.config) else None,
            ddp=self.ctx.distributed,
            device_ids=device_ids,
        )
        self.forward_module = self.gan.g_forward
        self.optimizer = self.gan.opt_g
        self.scheduler = None  # G's lr is constant (the reference's 1e-4 * 0.5 ** (i // 400k) over 400k)
        self.ema = self.gan.ema

    def _param_groups(self) -> list[dict[str, Any]]:
        """Adam groups: one (train.lr) when train.lr_encoder_mult is 1, as before the option existed (so
        older checkpoints resume); else SR network (train.lr) and encoder (train.lr * lr_encoder_mult)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        mult = float(self.train_cfg["lr_encoder_mult"])
        if mult == 1.0:
            return [{"params": trainable}]
        encoder_ids = {id(p) for p in self.model.encoder.parameters()}
        return [
            {"params": [p for p in trainable if id(p) not in encoder_ids], "lr": self.train_cfg["lr"]},
            {"params": [p for p in trainable if id(p) in encoder_ids], "lr": self.train_cfg["lr"] * mult},
        ]

    def _group_base_lrs(self) -> list[float]:
        mult = float(self.train_cfg["lr_encoder_mult"])
        return [self.train_cfg["lr"], self.train_cfg["lr"] * mult][: len(self.optimizer.param_groups)]

    # ----------------------------------------------------------------------------------------- data
    def _load_val_pairs(self) -> list:
        dcfg = self.config["data"]
        if dcfg["val_dir"] is None:
            return []
        pairs = benchmark_pairs(
            dcfg["val_dir"],
            self.config["model"]["scale"],
            kernels=dcfg["val_kernels"],
            noise=dcfg["val_noise"],
        )
        from kdsr.training.evaluate import limit_images

        return limit_images(pairs, dcfg["val_max_images"])

    def _cache_args(self) -> dict[str, Any]:
        dcfg = self.config["data"]
        return {
            "cache": cache_mode(dcfg["cache"]),
            "cache_dir": dcfg["cache_dir"],
            "progress": self.progress and self.ctx.is_main,
        }

    def _hr_dataset(self) -> HRImageDataset:
        """The HR crops of the classic path (data.train_dir, data.cache); a folder without usable images or
        an unwritable disk cache is one ConfigError line."""
        dcfg = self.config["data"]
        try:
            return HRImageDataset(
                dcfg["train_dir"],
                self.config["model"]["scale"],
                dcfg["lr_patch"],
                augment=dcfg["augment"],
                **self._cache_args(),
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(_data_error(exc)) from None

    def _realworld_batches(self) -> RealWorldBatches:
        """The real-world batch builder (GT crops -> Real-ESRGAN degradation -> pair queue)."""
        dcfg, scale = self.config["data"], self.config["model"]["scale"]
        try:
            return RealWorldBatches(
                dcfg["train_dir"],
                scale,
                gt_size=scale * dcfg["lr_patch"],
                batch=self.local_batch,
                crop_size=dcfg["crop_size"],
                queue_size=dcfg["queue_size"],
                **self._cache_args(),
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(_data_error(exc)) from None

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
        return self.stage == "student" and iteration < self.train_cfg["encoder_iters"]

    def compute_loss(
        self, lr: torch.Tensor, hr: torch.Tensor, iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (0-dim) and its parts {"l1", "kd"} for one local batch; runs the forward pass.

        With train.precision = bf16 the forward runs under autocast(bfloat16); the loss is fp32.
        """
        if self.train_cfg["precision"] == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self._compute_loss(lr, hr, iteration)
        return self._compute_loss(lr, hr, iteration)

    def _compute_loss(self, lr, hr, iteration):
        if self.stage == "teacher":
            sr = self.forward_module(lr, hr)
            l1 = F.l1_loss(sr.float(), hr)
            return l1, {"l1": l1.detach(), "kd": torch.zeros((), device=lr.device)}
        encoder_only = self.encoder_only(iteration)
        with torch.no_grad():
            _, teacher_dprime = self.teacher.encode(lr, hr)
        sr, student_dprime = self.forward_module(lr, encoder_only)
        kd = kd_loss(
            student_dprime.float(),
            teacher_dprime.float(),
            self.train_cfg["kd_loss"],
            self.train_cfg["temperature"],
        )
        kd_term = self.train_cfg["kd_weight"] * kd
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
                f"{self.run_dir} keeps the last saved state. Lower train.lr (now {self.train_cfg['lr']}) "
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
                f"(iteration {iteration}) is kept in {path}. Lower train.lr (now {self.train_cfg['lr']}) "
                "and resume with --resume, or check the data."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.encoder_only(iteration):
            for p in self.model.sr_net.parameters():  # Adam skips params without a gradient
                p.grad = None
        current_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"loss": stats[0], "l1": stats[1], "kd": stats[2], "lr": current_lr}

    # ----------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """The full training state as a checkpoint dict (see kdsr.training.checkpoint)."""
        ema_state = self.ema.state_dict() if self.ema is not None and self.gan is None else None
        return {
            "format": ckpt_io.CHECKPOINT_FORMAT,
            "version": ckpt_io.CHECKPOINT_VERSION,
            "iteration": self.iteration,
            "model": model_payload(self.model),
            "ema_model": model_payload(self.ema.module) if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict() if self.gan is None else None,
            "scheduler": self.scheduler.state_dict() if self.gan is None else None,
            "gan": self.gan.state() if self.gan is not None else None,  # G, D, both optimizers, the EMA
            "ema": ema_state,
            "rng": ckpt_io.capture_rng_state(),
            "config": self.config,
            "best_psnr": self.best_psnr,
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
        if self.realworld is not None and ckpt.get("pair_queue") is not None:
            self.realworld.queue.load_state_dict(ckpt["pair_queue"])

    def _restore_optimisation(self, ckpt: dict[str, Any]) -> None:
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
        self.scheduler.load_state_dict(ckpt["scheduler"])
        # The schedule follows the *current* config (a resume may override train.lr_decay_iters etc.);
        # LambdaLR.load_state_dict brought back the old schedule object's settings, so rebuild it.
        schedule = LRSchedule(self.train_cfg)
        self.scheduler.base_lrs = self._group_base_lrs()
        self.scheduler.lr_lambdas = [schedule] * len(self.optimizer.param_groups)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = group["initial_lr"] = base * schedule(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
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
        result = evaluate_model(model, self.val_pairs, self.config["model"]["scale"], self.device)
        stats = {"psnr": result["psnr"], "ssim": result["ssim"]}
        if self.sigma_readout is not None:
            stats["sigma_r2"] = self.sigma_readout.r2(model)
        return stats

    # ------------------------------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train from the current iteration to train.iters (or until `stop_after` iterations are done)."""
        total = self.train_cfg["iters"]
        end = total if stop_after is None else min(total, stop_after)
        result = TrainResult(run_dir=self.run_dir, iteration=self.iteration, best_psnr=self.best_psnr)
        logger = None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            logger = _RunLogger(
                self.run_dir,
                self.log_cfg["tensorboard"],
                resume_from=self.iteration,
                extra_fields=_RunLogger.GAN_FIELDS if self.gan is not None else (),
            )
            ckpt_io.remove_stale_temp_files(self.run_dir)
            (self.run_dir / "config.yaml").write_text(dump_config(self.config))
        bar = tqdm(
            total=total,
            initial=self.iteration,
            desc=f"{self.stage} {self.config['name']}",
            disable=not (self.progress and self.ctx.is_main),
            dynamic_ncols=True,
        )
        start_time = time.perf_counter()
        window_start, window_iters = start_time, 0
        if self.iteration < end:
            self.loader.start(self.iteration, end)
        try:
            while self.iteration < end:
                it = self.iteration
                stats = self.train_step(it)
                self.iteration = it + 1
                result.losses.append(stats["loss"])
                window_iters += 1
                bar.update(1)
                if self.iteration % 10 == 0 or self.iteration == end:
                    bar.set_postfix(
                        loss=f"{stats['loss']:.4f}", kd=f"{stats['kd']:.4f}", lr=f"{stats['lr']:.1e}"
                    )
                if logger is not None and (
                    self.iteration % self.log_cfg["print_every"] == 0 or self.iteration == end
                ):
                    now = time.perf_counter()
                    stats["it_per_s"] = window_iters / max(now - window_start, 1e-9)
                    window_start, window_iters = now, 0
                    logger.log_train(self.iteration, stats)
                at_end = self.iteration == total
                if self.val_pairs and (self.iteration % self.log_cfg["val_every"] == 0 or at_end):
                    val = self.validate()
                    result.last_val_psnr = val["psnr"]
                    logger.log_val(self.iteration, val)
                    if self.best_psnr is None or val["psnr"] > self.best_psnr:
                        self.best_psnr = val["psnr"]
                        self.save("best.pt")
                    readout = f", σ-R² {val['sigma_r2']:.3f}" if "sigma_r2" in val else ""
                    bar.write(
                        f"iter {self.iteration}: val PSNR {val['psnr']:.3f} dB, "
                        f"SSIM {val['ssim']:.4f}{readout}"
                    )
                if self.ctx.is_main and (
                    self.iteration % self.log_cfg["save_every"] == 0 or self.iteration == end
                ):
                    self.save("last.pt")
                if self.iteration % self.log_cfg["save_every"] == 0:
                    barrier(self.ctx)
        except BaseException:
            self.loader.close()
            raise
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        if self.iteration == total:
            self.loader.close()  # a run stopped early (stop_after) keeps its workers for the next run()
        result.iteration = self.iteration
        result.best_psnr = self.best_psnr
        result.wall_s = time.perf_counter() - start_time
        if self.ctx.is_main and self.iteration == total:
            from kdsr.training.plots import plot_curves

            plot_curves(self.run_dir)
        return result


def _data_error(exc: Exception) -> str:
    """One line for a data.train_dir problem (no images, none usable, an unwritable disk cache)."""
    if isinstance(exc, PermissionError):
        return f"data.cache: disk: {exc}; set data.cache_dir to a writable folder, or data.cache=ram / none"
    return f"data.train_dir: {exc}; point it at a folder of HR images (--set data.train_dir=/path/to/HR)"


class _RunLogger:
    """CSV + TensorBoard logging of training and validation scalars (rank 0 only)."""

    TRAIN_FIELDS = ("iteration", "loss", "l1", "kd", "lr", "it_per_s")
    GAN_FIELDS = ("percep", "gan_g", "d_real", "d_fake", "out_d_real", "out_d_fake")
    VAL_FIELDS = ("iteration", "psnr", "ssim", "sigma_r2")

    def __init__(
        self, run_dir: Path, tensorboard: bool, resume_from: int = 0, extra_fields: tuple[str, ...] = ()
    ):
        self.train_fields = self.TRAIN_FIELDS + tuple(extra_fields)
        self.train_csv = run_dir / "train_log.csv"
        self.val_csv = run_dir / "val_log.csv"
        for path in (self.train_csv, self.val_csv):  # rows after the checkpoint will be logged again
            self._drop_rows_after(path, resume_from)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(run_dir / "tb"), purge_step=resume_from + 1 if resume_from else None
            )

    @staticmethod
    def _drop_rows_after(path: Path, iteration: int) -> None:
        if not path.exists():
            return
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= iteration]
        if len(kept) != len(rows):
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerows(kept)

    @staticmethod
    def _append(path: Path, fields: tuple[str, ...], row: dict[str, Any]) -> None:
        if path.exists():  # a log written before a column was added: rewrite it with the new header
            with path.open(newline="") as handle:
                old = list(csv.DictReader(handle))
                header = tuple(old[0].keys()) if old else None
            if header is not None and header != fields:
                with path.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore", restval="")
                    writer.writeheader()
                    writer.writerows(old)
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def log_train(self, iteration: int, stats: dict[str, float]) -> None:
        self._append(self.train_csv, self.train_fields, {"iteration": iteration, **stats})
        if self.writer is not None:
            for key in self.train_fields[1:]:
                self.writer.add_scalar(f"train/{key}", stats[key], iteration)

    def log_val(self, iteration: int, stats: dict[str, float]) -> None:
        self._append(self.val_csv, self.VAL_FIELDS, {"iteration": iteration, **stats})
        if self.writer is not None:
            self.writer.add_scalar("val/psnr", stats["psnr"], iteration)
            self.writer.add_scalar("val/ssim", stats["ssim"], iteration)
            if "sigma_r2" in stats:
                self.writer.add_scalar("val/sigma_r2", stats["sigma_r2"], iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
