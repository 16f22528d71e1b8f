"""Knowledge-distillation losses between the student's and the teacher's D' vectors (spec §5a).

`kd_loss(student_dprime, teacher_dprime, kind, temperature)`:
  kl   F.kl_div(log_softmax(S/τ), softmax(T/τ), reduction="batchmean") = (1/B) Σ_b KL(p_T,b ‖ p_S,b),
       softmax over the 4C dimension, no τ² factor (the reference code; τ = 0.15 there)
  l1   mean |S - T|
  l2   mean (S - T)²
  kl_std  ours, NOT the paper's: both vectors are standardised per dimension with the teacher batch's mean and
       std (z = (v - mean_T) / (std_T + 1e-6), statistics over the batch, detached), then KL as above on
       softmax(z/τ). It removes the teacher's shared offset, which makes softmax(D'/0.15) nearly one-hot, and
       a per-dimension shift of the student is no longer invisible to the KL (docs/reproduction.md)
  none a zero scalar (the student learns from L1 alone)
The teacher vector is always detached: the teacher is frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KD_LOSSES = ("kl", "kl_std", "l1", "l2", "none")


def kd_loss(
    student_dprime: torch.Tensor, teacher_dprime: torch.Tensor, kind: str = "kl", temperature: float = 0.15
) -> torch.Tensor:
    """KD loss between D'_S and D'_T, both (B, 4C) float tensors; returns a 0-dim tensor of their dtype."""
    if kind not in KD_LOSSES:
        raise ValueError(f"unknown KD loss {kind!r}; choose one of {KD_LOSSES}")
    if student_dprime.shape != teacher_dprime.shape or student_dprime.dim() != 2:
        raise ValueError(
            f"KD loss needs two (B, 4C) tensors of one shape, got {tuple(student_dprime.shape)} "
            f"and {tuple(teacher_dprime.shape)}; teacher and student must be the same variant"
        )
    target = teacher_dprime.detach()
    if kind == "kl_std":
        mean = target.mean(dim=0, keepdim=True)
        std = target.std(dim=0, unbiased=False, keepdim=True) + 1e-6
        student_dprime, target, kind = (student_dprime - mean) / std, (target - mean) / std, "kl"
    if kind == "kl":
        log_p_student = F.log_softmax(student_dprime / temperature, dim=1)
        p_teacher = F.softmax(target / temperature, dim=1)
        return F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    if kind == "l1":
        return F.l1_loss(student_dprime, target)
    if kind == "l2":
        return F.mse_loss(student_dprime, target)
    return student_dprime.new_zeros(())
