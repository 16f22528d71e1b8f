"""The GAN stage (KDSR_S-GAN, spec §5c) as a step engine that any batch source can drive.

``GANStage(student, teacher, perceptual, batch_for, ...)``: G is the student (initialise it from a student
checkpoint's EMA weights before passing it), the teacher is frozen, D (``UNetDiscriminatorSN``) starts from
scratch. Each ``step(iteration)``: one G step on L1 + KD + perceptual + GAN (all weight 1.0 by default), then
one D step on the real and the fake BCE terms; Adam lr 1e-4 betas (0.9, 0.99) for both; EMA of G (0.999).
``batch_for(iteration) -> (lr, hr)`` is the trainer's batch path (classic degradation now, real-world batches
once they exist), so the stage does not own data. V2: ``teacher_hr`` maps the GT to what the teacher sees
(USM-sharpened GT); every loss still uses the plain GT — the reference's behaviour (spec §5c, §9.5).
``state()`` / ``load_state()`` carry G, D, both optimizers, the EMA and nothing else: the caller stores them
with the RNG state in its checkpoint, which makes a resumed run bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdsr.models.discriminator import UNetDiscriminatorSN
from kdsr.training.gan_losses import discriminator_fake_loss, discriminator_real_loss, generator_gan_loss
from kdsr.training.losses import kd_loss

__all__ = ["GANStage", "GANSettings"]


@dataclass(frozen=True)
class GANSettings:
    """The stage's numbers; the defaults are the published ones (KDSR's loss weights 1.0, Real-ESRGAN's
    Adam 1e-4 (0.9, 0.99), EMA 0.999, D width 64)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: float = 0.999
    l1_weight: float = 1.0
    kd_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 1.0
    temperature: float = 0.15
    d_num_feat: int = 64


class _StudentForward(nn.Module):
    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, d_prime = self.student.encode(lr)
        return self.student.sr_net(lr, d), d_prime


class GANStage:
    """One-D-step-per-G-step GAN training of a KDSR student; see the module docstring.

    ``perceptual(sr, gt) -> 0-dim`` is a frozen loss module (VGG19 or the offline ST-LPIPS network);
    ``ddp`` wraps G's forward and D in DistributedDataParallel (pass the process group's device ids).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batch_for: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
        settings: GANSettings | None = None,
        teacher_hr: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ddp: bool = False,
        device_ids: list[int] | None = None,
    ) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.settings = settings or GANSettings()
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.perceptual = perceptual
        self.batch_for = batch_for
        self.teacher_hr = teacher_hr
        device = next(student.parameters()).device
        self.disc = UNetDiscriminatorSN(3, num_feat=self.settings.d_num_feat).to(device)
        self.g_forward: nn.Module = _StudentForward(student)
        self.d_forward: nn.Module = self.disc
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.g_forward = DDP(self.g_forward, device_ids=device_ids)
            self.d_forward = DDP(self.disc, device_ids=device_ids, forward_sync_buffers=False)
        betas = tuple(self.settings.betas)
        self.opt_g = torch.optim.Adam(
            [p for p in student.parameters() if p.requires_grad], self.settings.lr, betas
        )
        self.opt_d = torch.optim.Adam(self.disc.parameters(), self.settings.lr, betas)
        self.ema = AveragedModel(
            student, multi_avg_fn=get_ema_multi_avg_fn(self.settings.ema_decay), use_buffers=True
        )

    def step(self, iteration: int) -> dict[str, float]:
        """One G step then one D step on ``batch_for(iteration)``; returns this rank's loss parts."""
        c = self.settings
        self.student.train()
        self.disc.train()
        lr, hr = self.batch_for(iteration)
        with torch.no_grad():
            t_hr = self.teacher_hr(hr) if self.teacher_hr is not None else hr
            _, teacher_dprime = self.teacher.encode(lr, t_hr)
        # ---- G step (D frozen)
        self.disc.requires_grad_(False)
        sr, student_dprime = self.g_forward(lr)
        l1 = F.l1_loss(sr, hr)
        kd = kd_loss(student_dprime, teacher_dprime, "kl", c.temperature)
        percep = self.perceptual(sr, hr)
        gan_g = generator_gan_loss(self.d_forward(sr), c.gan_weight)
        loss_g = c.l1_weight * l1 + c.kd_weight * kd + c.perceptual_weight * percep + gan_g
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        # ---- D step: real and fake terms backpropagated separately, one optimizer step
        self.disc.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        real_logits = self.d_forward(hr)
        d_real = discriminator_real_loss(real_logits)
        d_real.backward()
        fake_logits = self.d_forward(sr.detach())
        d_fake = discriminator_fake_loss(fake_logits)
        d_fake.backward()
        self.opt_d.step()
        self.ema.update_parameters(self.student)
        parts = (loss_g, l1, kd, percep, gan_g, d_real, d_fake, real_logits.mean(), fake_logits.mean())
        names = ("loss_g", "l1", "kd", "percep", "gan_g", "d_real", "d_fake", "out_d_real", "out_d_fake")
        return dict(zip(names, torch.stack([p.detach() for p in parts]).tolist(), strict=True))

    def state(self) -> dict[str, Any]:
        """G, D, both optimizers and the EMA as plain state dicts (tensors only)."""
        return {
            "generator": self.student.state_dict(),
            "discriminator": self.disc.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "ema": self.ema.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state()`` returned (the caller restores the RNG state)."""
        self.student.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.ema.load_state_dict(state["ema"])
