"""Sample-size-derived tolerances for the probabilistic tests (each with its false-alarm rate).

Every check takes ``delta``, the probability that it fails on a correct implementation (a *false alarm*). A
test making m checks has a false-alarm rate ≤ m·delta (union bound); the tests use DELTA = 1e-9 per check
and make fewer than 1000 checks each, so each test's rate is < 1e-6 and they can draw fresh seeds on every
run.

- Frequencies (Hoeffding): P(|p̂ − p| ≥ t) ≤ 2·exp(−2·n·t²)  ⇒  t = sqrt(ln(2/δ) / (2n)).
- Uniform shape (Dvoretzky–Kiefer–Wolfowitz, Massart's constant):
  P(sup_x |F_n(x) − F(x)| > ε) ≤ 2·exp(−2·n·ε²).
- Uniform end points: for n draws from U(lo, hi), P(min − lo > η·(hi − lo)) = (1 − η)^n ≤ exp(−n·η), the
  same for hi − max  ⇒  η = ln(1/δ) / n. This is what catches a range that is a little too narrow.
"""

from __future__ import annotations

import math

import torch

DELTA = 1e-9


def hoeffding(n: int, delta: float = DELTA) -> float:
    """Half-width t with P(|mean of n Bernoulli − p| ≥ t) ≤ delta."""
    return math.sqrt(math.log(2 / delta) / (2 * n))


def assert_frequency(flags: torch.Tensor, p: float, what: str, delta: float = DELTA) -> None:
    """flags: (n,) bool draws that should be Bernoulli(p)."""
    n = flags.numel()
    assert n > 0, f"{what}: no draws"
    freq = flags.double().mean().item()
    t = hoeffding(n, delta)
    assert abs(freq - p) < t, f"{what}: frequency {freq:.4f} over {n} draws, published {p} (bound ±{t:.4f})"


def assert_uniform(values: torch.Tensor, lo: float, hi: float, what: str, delta: float = DELTA) -> None:
    """values: (n,) draws that should be U(lo, hi): inside [lo, hi], end points reached, DKW on the CDF."""
    v = values.double().flatten()
    n = v.numel()
    assert n > 0, f"{what}: no draws"
    vmin, vmax = v.min().item(), v.max().item()
    inside = lo - 1e-12 <= vmin and vmax <= hi + 1e-12
    assert inside, f"{what}: draws in [{vmin}, {vmax}], outside [{lo}, {hi}]"
    eta = math.log(1 / delta) / n * (hi - lo)
    assert vmin - lo < eta and hi - vmax < eta, (
        f"{what}: {n} draws span [{vmin:.5f}, {vmax:.5f}], "
        f"but U({lo}, {hi}) reaches within {eta:.5f} of both ends"
    )
    if hi == lo:
        return
    u = ((torch.sort(v).values - lo) / (hi - lo)).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.maximum(i / n - u, u - (i - 1) / n).max().item()
    eps = math.sqrt(math.log(2 / delta) / (2 * n))
    assert ks < eps, f"{what}: Kolmogorov distance {ks:.4f} from U({lo}, {hi}), {n} draws (bound {eps:.4f})"
