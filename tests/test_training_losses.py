"""KD losses against float64 hand computations (spec §5a: KL(T||S) on softmax(D'/τ), batchmean, no τ²)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdsr.training.losses import kd_loss


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.15, 1.0])
def test_kl_matches_hand_formula(temperature):
    g = torch.Generator().manual_seed(11)
    s = torch.randn(5, 32, generator=g, dtype=torch.float64)
    t = torch.randn(5, 32, generator=g, dtype=torch.float64)
    p_t, p_s = _softmax(t.numpy() / temperature), _softmax(s.numpy() / temperature)
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum() / s.shape[0]  # (1/B) Σ_b Σ_i p_T (log p_T - log p_S)
    got = kd_loss(s, t, "kl", temperature)
    assert got.dtype == torch.float64 and got.dim() == 0
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10, atol=1e-12)


def test_kl_is_zero_only_for_equal_distributions_and_ignores_a_shift():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(3, 16, generator=g, dtype=torch.float64)
    assert kd_loss(t + 0.7, t, "kl").abs().item() < 1e-12  # softmax is shift invariant per row
    assert kd_loss(t.flip(1), t, "kl").item() > 1e-3


def test_kl_gradient_flows_to_student_only():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    kd_loss(s, t, "kl", 0.5).backward()
    # d/ds of (1/B) Σ KL = (p_S - p_T) / (τ B)
    p_s, p_t = _softmax(s.detach().numpy() / 0.5), _softmax(t.detach().numpy() / 0.5)
    np.testing.assert_allclose(s.grad.numpy(), (p_s - p_t) / (0.5 * 4), rtol=1e-9, atol=1e-12)
    assert t.grad is None


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_l1_l2_match_hand_formula(kind):
    g = torch.Generator().manual_seed(5)
    s = torch.randn(6, 20, generator=g, dtype=torch.float64)
    t = torch.randn(6, 20, generator=g, dtype=torch.float64)
    diff = s.numpy() - t.numpy()
    expected = np.abs(diff).mean() if kind == "l1" else (diff**2).mean()
    np.testing.assert_allclose(kd_loss(s, t, kind).item(), expected, rtol=1e-12)


def test_none_is_a_zero_scalar():
    s = torch.randn(2, 8, dtype=torch.float64)
    out = kd_loss(s, torch.randn(2, 8, dtype=torch.float64), "none")
    assert out.dim() == 0 and out.item() == 0.0 and out.dtype == torch.float64


def test_bad_kind_and_shape_mismatch_are_clear():
    s = torch.randn(2, 8)
    with pytest.raises(ValueError, match="unknown KD loss"):
        kd_loss(s, s, "cosine")
    with pytest.raises(ValueError, match="same variant"):
        kd_loss(s, torch.randn(2, 16), "kl")


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_kl_std_matches_hand_formula_and_sees_a_per_dimension_shift(temperature):
    g = torch.Generator().manual_seed(17)
    s = torch.randn(6, 24, generator=g, dtype=torch.float64) * 3 + 5
    t = torch.randn(6, 24, generator=g, dtype=torch.float64) * 0.5 + 20  # a large shared offset
    tn = t.numpy()
    mean, std = tn.mean(axis=0, keepdims=True), tn.std(axis=0, keepdims=True) + 1e-6
    zt, zs = (tn - mean) / std, (s.numpy() - mean) / std
    p_t, p_s = _softmax(zt / temperature), _softmax(zs / temperature)
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum() / s.shape[0]
    np.testing.assert_allclose(kd_loss(s, t, "kl_std", temperature).item(), expected, rtol=1e-9, atol=1e-12)
    assert kd_loss(t, t, "kl_std", temperature).abs().item() < 1e-12
    shift = torch.linspace(-1.0, 1.0, 24, dtype=torch.float64)  # a per-dimension shift of the student
    assert kd_loss(t + shift, t, "kl_std", temperature).item() > 1e-3
