"""The learning-rate schedule: a pure function of the train config and the iteration (never checkpointed).

`lr_factor(train, i)` is the factor on train.lr at iteration i (0-based: the step that makes iteration
i + 1). Student encoder-only phase (i < encoder_iters): lr_encoder / lr * gamma_encoder ** (i //
encoder_lr_decay_iters). Afterwards, with j = i - encoder_iters:
  step    gamma ** (j // lr_decay_iters)  (the reference's epoch step schedule counted in iterations)
  cosine  (lr_min + (lr - lr_min) * (1 + cos(pi * j / (iters - encoder_iters))) / 2) / lr
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from kdsr.training.config import TrainConfig

__all__ = ["LRSchedule", "lr_factor", "set_lr"]


def lr_factor(train: TrainConfig, iteration: int) -> float:
    """The factor on train.lr (per parameter group: on its base lr) at `iteration`; see the module doc."""
    if iteration < train.encoder_iters:
        ratio = float(train.lr_encoder) / float(train.lr)
        return ratio * float(train.gamma_encoder) ** (iteration // train.encoder_lr_decay_iters)
    j = iteration - train.encoder_iters
    if train.schedule == "cosine":
        span = train.iters - train.encoder_iters
        lr, lr_min = float(train.lr), float(train.lr_min)
        return (lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * min(j, span) / span))) / lr
    return float(train.gamma) ** (j // train.lr_decay_iters)


class LRSchedule:
    """`lr_factor` bound to one train config: `LRSchedule(train)(iteration) -> float`."""

    def __init__(self, train: TrainConfig):
        self.train = train

    def __call__(self, iteration: int) -> float:
        return lr_factor(self.train, iteration)


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    """Set each parameter group's lr to its base lr times `factor` (as LambdaLR computes it)."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor
