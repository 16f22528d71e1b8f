"""The teacher's auxiliary read-out loss (train.readout_weight > 0; ours, not the paper's).

A linear head maps the teacher's D' (B, 4C) to the normalised ``RealWorldParams`` summaries of each
training pair (kdsr.degradations.realworld_targets: final JPEG quality, the noise level and blur width of
each stage), and ``weight · MSE`` is added to the L1 loss. It makes D carry the degradation explicitly,
where the paper relies on the SR loss alone. The head lives in the training checkpoint only
(``state()["readout_head"]``); exported weights (kdsr.load, model.save) never contain it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from kdsr.degradations.realworld_targets import REALWORLD_TARGETS, TARGET_CENTER, TARGET_HALF_RANGE

if TYPE_CHECKING:
    from kdsr.training.config_schema import RunConfig

__all__ = ["ReadoutAux", "build_readout_aux"]


class ReadoutAux(nn.Module):
    """Head D' (B, 4C) -> (B, 5): batch-standardised D' (BatchNorm1d without affine), then linear; teacher
    loss L1 + weight · MSE(head(D'), normalised targets).

    Why the standardisation: D' carries a large shared offset (mean |D'| ~10 at the high-pass init) and the
    degradation moves it by ~2 %, so a plain linear head learns the targets slowly (measured on a JPEG-only
    degradation, student encoder, 300 Adam steps: MSE 0.29 plain, 0.20 standardised, target variance 0.33;
    experiments/rw_supervised_ceiling.py).
    """

    def __init__(self, dprime_dim: int, weight: float):
        super().__init__()
        self.weight = float(weight)
        self.head = nn.Sequential(
            nn.BatchNorm1d(dprime_dim, affine=False), nn.Linear(dprime_dim, len(REALWORLD_TARGETS))
        )
        self.register_buffer("center", torch.tensor(TARGET_CENTER, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "half_range", torch.tensor(TARGET_HALF_RANGE, dtype=torch.float32), persistent=False
        )

    def normalise(self, targets: torch.Tensor) -> torch.Tensor:
        """Raw targets (B, 5) -> about [-1, 1] per column."""
        return (targets.to(self.center) - self.center) / self.half_range

    def teacher_loss(
        self, teacher: nn.Module, lr: torch.Tensor, hr: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(L1 + weight · MSE, {"l1", "kd" (0), "readout"}) for one batch; runs the teacher's forward.

        targets (B, 5) raw float: the queue's ``last_aux`` for this batch. Raises ValueError without them.
        """
        if targets is None or targets.shape[0] != lr.shape[0]:
            raise ValueError("train.readout_weight > 0 needs the real-world targets of every training pair")
        d, d_prime = teacher.encode(lr, hr)
        sr = teacher.sr_net(lr, d)
        l1 = F.l1_loss(sr.float(), hr)
        pred = self.head(d_prime.float())
        readout = F.mse_loss(pred, self.normalise(targets.to(pred.device)))
        zero = torch.zeros((), device=lr.device)
        return l1 + self.weight * readout, {"l1": l1.detach(), "kd": zero, "readout": readout.detach()}


def build_readout_aux(config: RunConfig, model: nn.Module, device: torch.device) -> ReadoutAux | None:
    """The aux head for a teacher run with train.readout_weight > 0 (seeded by config seed + 2), else None."""
    weight = float(config.train.readout_weight)
    if weight <= 0 or config.stage != "teacher":
        return None
    dprime_dim = 4 * int(model.config["n_feats"])
    with torch.random.fork_rng():
        torch.manual_seed(int(config.seed) + 2)
        return ReadoutAux(dprime_dim, weight).to(device)
