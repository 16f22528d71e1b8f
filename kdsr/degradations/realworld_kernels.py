"""Blur kernels of the Real-ESRGAN second-order pipeline (spec kdsr.md §6b, ecosystem.md §1.4), batched.

Every kernel lives on the 21×21 grid of offsets -10 … 10 (x = column offset, y = row offset). A kernel of odd
size s < 21 is evaluated on its own s×s support, normalised, and zero-padded to 21×21 — done here as a mask on
the 21×21 grid, so a batch of kernels of different sizes is one tensor. Evaluated in float64.

    k = mixed_kernels(sample_kernel_params(8, generator=g))      # (8, 21, 21) float64, each sums to 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "KERNEL_TYPES",
    "KERNEL_PROBS",
    "PAD_TO",
    "KernelParams",
    "bivariate_quadratic_form",
    "gaussian_family_kernel",
    "sinc_kernel",
    "mixed_kernels",
    "sample_kernel_params",
]

PAD_TO = 21
# Index 0 is the sinc kernel; 1..6 the mixed-kernel types with Real-ESRGAN's `kernel_prob`.
KERNEL_TYPES = (
    "sinc",
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
KERNEL_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


def _grid(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(PAD_TO, dtype=torch.float64, device=device) - PAD_TO // 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x, y


def _support_mask(size: torch.Tensor) -> torch.Tensor:
    """(B, 21, 21) bool: True inside each sample's centred size×size support."""
    x, y = _grid(size.device)
    half = (size.to(torch.float64) // 2).reshape(-1, 1, 1)
    return (x.abs() <= half) & (y.abs() <= half)


def _normalise_on_support(values: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    values = torch.where(_support_mask(size), values, torch.zeros((), dtype=values.dtype))
    return values / values.sum(dim=(-2, -1), keepdim=True)


def bivariate_quadratic_form(
    sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """q(x, y) = [x y] Σ⁻¹ [x y]ᵀ with Σ = R(θ) diag(σx², σy²) R(θ)ᵀ on the 21×21 grid.

    Args: (B,) float tensors (σ in pixels, θ in radians). Returns (B, 21, 21) float64.
    """
    sx, sy, th = (t.to(torch.float64).reshape(-1, 1, 1) for t in (sigma_x, sigma_y, theta))
    x, y = _grid(sx.device)
    c, s = torch.cos(th), torch.sin(th)
    u = c * x + s * y  # coordinate along the first rotated axis (R(θ)ᵀ [x, y])
    v = -s * x + c * y
    return u**2 / sx**2 + v**2 / sy**2


def gaussian_family_kernel(
    kind: str,
    size: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    theta: torch.Tensor,
    beta=None,
) -> torch.Tensor:
    """Gaussian (β unused), generalized Gaussian exp(-½ q^β) or plateau 1 / (1 + q^β), normalised.

    Args:
        kind: "gaussian", "generalized" or "plateau".
        size: (B,) odd integer supports (7…21); sigma_x, sigma_y, theta, beta: (B,) floats.
    Returns:
        (B, 21, 21) float64, zero outside each size×size support, each summing to 1.
    """
    q = bivariate_quadratic_form(sigma_x, sigma_y, theta)
    if kind == "gaussian":
        values = torch.exp(-0.5 * q)
    else:
        b = beta.to(torch.float64).reshape(-1, 1, 1)
        values = torch.exp(-0.5 * q.pow(b)) if kind == "generalized" else 1.0 / (q.pow(b) + 1.0)
    return _normalise_on_support(values, size)


def sinc_kernel(size: torch.Tensor, omega_c: torch.Tensor) -> torch.Tensor:
    """Circular low-pass kernel ω_c·J1(ω_c·r) / (2π·r), with the r = 0 limit ω_c² / (4π), normalised.

    Args: size (B,) odd ints, omega_c (B,) cut-off in radians/pixel. Returns (B, 21, 21) float64.
    """
    w = omega_c.to(torch.float64).reshape(-1, 1, 1)
    x, y = _grid(w.device)
    r = torch.sqrt(x**2 + y**2)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    values = w * torch.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r)
    values = torch.where(r == 0, w**2 / (4 * math.pi), values)
    return _normalise_on_support(values, size)


@dataclass
class KernelParams:
    """What was drawn for a batch of kernels; every field is a (B,) CPU tensor.

    kind: int64 index into KERNEL_TYPES (0 = sinc, -1 = pulse/identity); size: int64 odd support;
    sigma_x, sigma_y, theta, beta, omega_c: float64 (unused fields of a type hold NaN).
    """

    kind: torch.Tensor
    size: torch.Tensor
    sigma_x: torch.Tensor
    sigma_y: torch.Tensor
    theta: torch.Tensor
    beta: torch.Tensor
    omega_c: torch.Tensor

    def record(self, i: int) -> dict:
        """Sample i as a JSON-ready dict (only the fields its kernel type uses)."""
        kind = int(self.kind[i])
        name = "pulse" if kind < 0 else KERNEL_TYPES[kind]
        out: dict = {"type": name}
        if kind < 0:
            return out
        out["size"] = int(self.size[i])
        for field in ("sigma_x", "sigma_y", "theta", "beta", "omega_c"):
            value = float(getattr(self, field)[i])
            if not math.isnan(value):
                out[field] = value
        return out


def mixed_kernels(p: KernelParams) -> torch.Tensor:
    """The (B, 21, 21) float64 kernels described by ``p`` (each type evaluated, then selected per sample)."""
    size = p.size
    filled = {k: torch.nan_to_num(getattr(p, k), nan=1.0) for k in ("sigma_x", "sigma_y", "theta", "beta")}
    gauss = gaussian_family_kernel("gaussian", size, filled["sigma_x"], filled["sigma_y"], filled["theta"])
    gen = gaussian_family_kernel("generalized", size, *filled.values())
    plat = gaussian_family_kernel("plateau", size, *filled.values())
    sinc = sinc_kernel(size, torch.nan_to_num(p.omega_c, nan=math.pi))
    pulse = torch.zeros_like(gauss)
    pulse[:, PAD_TO // 2, PAD_TO // 2] = 1.0
    kind = p.kind.reshape(-1, 1, 1)
    out = torch.where(kind <= 0, torch.where(kind == 0, sinc, pulse), gauss)
    out = torch.where((kind == 3) | (kind == 4), gen, out)
    return torch.where((kind == 5) | (kind == 6), plat, out)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def sample_kernel_params(
    batch: int,
    *,
    generator: torch.Generator | None = None,
    sinc_prob: float = 0.1,
    sigma_range: tuple[float, float] = (0.2, 3.0),
    betag_range: tuple[float, float] = (0.5, 4.0),
    betap_range: tuple[float, float] = (1.0, 2.0),
    kernel_probs: tuple[float, ...] = KERNEL_PROBS,
    sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21),
) -> KernelParams:
    """Draw ``batch`` kernels as Real-ESRGAN's dataset does (a sinc with p sinc_prob, else a mixed kernel).

    Sinc: ω_c ~ U(π/3, π) for size < 13, else U(π/5, π). Mixed: type by ``kernel_probs``; iso: σx = σy ~ U,
    θ = 0; aniso: σx, σy ~ U independently, θ ~ U(-π, π); β (generalized, plateau) is U(β_lo, 1) or U(1, β_hi)
    with p 0.5 each (clamped into the range). All draws are made for every sample in a fixed order, so the
    stream consumed from ``generator`` does not depend on the outcome.
    """
    g = generator
    size = torch.tensor(sizes)[torch.randint(len(sizes), (batch,), generator=g)]
    is_sinc = torch.rand(batch, generator=g, dtype=torch.float64) < sinc_prob
    mixed = torch.multinomial(
        torch.tensor(kernel_probs, dtype=torch.float64).expand(batch, -1), 1, generator=g
    ).reshape(-1)
    kind = torch.where(is_sinc, 0, mixed + 1)
    sigma_x = _uniform(batch, *sigma_range, g)
    sigma_y = _uniform(batch, *sigma_range, g)
    theta = _uniform(batch, -math.pi, math.pi, g)
    low_side = torch.rand(batch, generator=g, dtype=torch.float64) < 0.5
    u = torch.rand(batch, generator=g, dtype=torch.float64)

    def split_beta(lo: float, hi: float) -> torch.Tensor:
        below = lo + (min(1.0, hi) - lo) * u
        above = max(1.0, lo) + (hi - max(1.0, lo)) * u
        return torch.where(low_side, below, above)

    beta_g, beta_p = split_beta(*betag_range), split_beta(*betap_range)
    omega_u = torch.rand(batch, generator=g, dtype=torch.float64)
    omega_lo = torch.where(size < 13, math.pi / 3, math.pi / 5)
    omega_c = omega_lo + (math.pi - omega_lo) * omega_u

    nan = torch.full((batch,), math.nan, dtype=torch.float64)
    iso = (kind == 1) | (kind == 3) | (kind == 5)
    gaussian_like = kind > 0
    sigma_y = torch.where(iso, sigma_x, sigma_y)
    theta = torch.where(iso, torch.zeros_like(theta), theta)
    beta = torch.where((kind == 3) | (kind == 4), beta_g, torch.where(kind >= 5, beta_p, nan))
    return KernelParams(
        kind=kind,
        size=size,
        sigma_x=torch.where(gaussian_like, sigma_x, nan),
        sigma_y=torch.where(gaussian_like, sigma_y, nan),
        theta=torch.where(gaussian_like, theta, nan),
        beta=beta,
        omega_c=torch.where(kind == 0, omega_c, nan),
    )


def sample_final_sinc(
    batch: int, *, generator: torch.Generator | None = None, prob: float = 0.8, sizes=tuple(range(7, 22, 2))
) -> KernelParams:
    """The final-stage sinc: with p ``prob`` a sinc of random size with ω_c ~ U(π/3, π), else a pulse."""
    g = generator
    size = torch.tensor(sizes)[torch.randint(len(sizes), (batch,), generator=g)]
    use = torch.rand(batch, generator=g, dtype=torch.float64) < prob
    omega_c = _uniform(batch, math.pi / 3, math.pi, g)
    nan = torch.full((batch,), math.nan, dtype=torch.float64)
    return KernelParams(
        kind=torch.where(use, 0, -1),
        size=size,
        sigma_x=nan,
        sigma_y=nan,
        theta=nan,
        beta=nan,
        omega_c=torch.where(use, omega_c, nan),
    )
