"""The real-world sampler against the published constants (spec kdsr.md §6b, Real-ESRGAN's options).

Every probability and every range, for both stages separately, from many draws, with tolerances from the
sample size (tests/stat_bounds.py: Hoeffding for frequencies, DKW + end points for uniform ranges;
false-alarm rate < 1e-9 per check, < 1e-6 per test, so every run draws a fresh seed from the test's
replayable one). Then what each sample's blur / resize / noise / JPEG call really receives (a trace of the
calls, per sample), and the batched noise functions' per-sample parameters.
"""

from __future__ import annotations

import math

import pytest
import torch
from stat_bounds import DELTA, assert_frequency, assert_uniform, hoeffding

from kdsr.degradations.realworld import RealWorldDegradation
from kdsr.degradations.realworld_kernels import mixed_kernels
from kdsr.degradations.realworld_noise import gaussian_noise, poisson_noise

PI = math.pi
SIZES = (7, 9, 11, 13, 15, 17, 19, 21)
# Real-ESRGAN's kernel_list / kernel_prob, in the order of KERNEL_TYPES 1..6.
MIXED = {
    "iso": 0.45,
    "aniso": 0.25,
    "generalized_iso": 0.12,
    "generalized_aniso": 0.03,
    "plateau_iso": 0.12,
    "plateau_aniso": 0.03,
}
# One torch thread: these are many small ops, which two OpenMP threads on a loaded machine make 100× slower.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
KIND = {"sinc": 0, **{name: i + 1 for i, name in enumerate(MIXED)}}

# The published constants (spec kdsr.md §6b, Real-ESRGAN finetune_realesrgan_x4plus.yml), written out here,
# not read from the code. Per stage: sinc p, σ range, (β_gen, β_plateau) ranges, blur p, resize p
# (up, down, keep), up range, down range, Gaussian-noise p, σ_noise (8-bit), Poisson scale, gray p, JPEG.
PUBLISHED = {
    "first": dict(
        sinc=0.1,
        sigma=(0.2, 3.0),
        betag=(0.5, 4.0),
        betap=(1.0, 2.0),
        blur=1.0,
        resize=(0.2, 0.7, 0.1),
        up=(1.0, 1.5),
        down=(0.15, 1.0),
        gaussian=0.5,
        noise=(1.0, 30.0),
        poisson=(0.05, 3.0),
        gray=0.4,
        jpeg=(30.0, 95.0),
    ),
    "second": dict(
        sinc=0.1,
        sigma=(0.2, 1.5),
        betag=(0.5, 4.0),
        betap=(1.0, 2.0),
        blur=0.8,
        resize=(0.3, 0.4, 0.3),
        up=(1.0, 1.2),
        down=(0.3, 1.0),
        gaussian=0.5,
        noise=(1.0, 25.0),
        poisson=(0.05, 2.5),
        gray=0.4,
        jpeg=(30.0, 95.0),
    ),
    "final_sinc": 0.8,
}

# Every stage-2 value differs from its stage-1 value (and the published one): a stage reading the other
# stage's setting, or a default, shows. β ranges are shared by both stages in this implementation.
DISTINCT = {
    "first": dict(
        PUBLISHED["first"],
        sinc=0.3,
        sigma=(0.5, 1.0),
        resize=(0.5, 0.2, 0.3),
        up=(1.0, 1.3),
        down=(0.5, 1.0),
        gaussian=0.3,
        noise=(3.0, 8.0),
        poisson=(0.2, 0.6),
        gray=0.15,
        jpeg=(40.0, 55.0),
    ),
    "second": dict(
        PUBLISHED["second"],
        sinc=0.05,
        sigma=(1.6, 2.6),
        blur=0.35,
        resize=(0.1, 0.3, 0.6),
        up=(1.0, 1.8),
        down=(0.7, 1.0),
        gaussian=0.75,
        noise=(12.0, 20.0),
        poisson=(1.0, 2.0),
        gray=0.65,
        jpeg=(70.0, 90.0),
    ),
    "final_sinc": 0.55,
}


# Real-ESRGAN option name of a stage -> RealWorldDegradation field (the second stage's end in "2").
STAGE_FIELDS = {
    "sinc": "sinc_prob",
    "sigma": "blur_sigma",
    "resize": "resize_prob",
    "gaussian": "gaussian_noise_prob",
    "noise": "noise_range",
    "poisson": "poisson_scale_range",
    "gray": "gray_noise_prob",
    "jpeg": "jpeg_range",
}


def _stage(stage: dict, suffix: str) -> dict:
    fields = {f"{field}{suffix}": stage[key] for key, field in STAGE_FIELDS.items()}
    fields[f"resize_range{suffix}"] = (stage["down"][0], stage["up"][1])
    return fields


def _degradation(spec: dict) -> RealWorldDegradation:
    """RealWorldDegradation configured with ``spec`` (field names are the Real-ESRGAN option names)."""
    a, b = spec["first"], spec["second"]
    return RealWorldDegradation(
        scale=4,
        betag_range=a["betag"],
        betap_range=a["betap"],
        second_blur_prob=b["blur"],
        final_sinc_prob=spec["final_sinc"],
        **_stage(a, ""),
        **_stage(b, "2"),
    )


def _generator() -> torch.Generator:
    """A generator seeded from the test's (replayable) global seed: a fresh stream on every run."""
    return torch.Generator().manual_seed(int(torch.randint(2**62, ())))


def _check_kernels(k, spec: dict, where: str) -> None:
    n = k.kind.numel()
    assert_frequency(k.kind == KIND["sinc"], spec["sinc"], f"{where}: sinc kernels")
    for name, p in MIXED.items():
        assert_frequency(k.kind == KIND[name], (1 - spec["sinc"]) * p, f"{where}: {name} kernels")
    for s in SIZES:
        assert_frequency(k.size == s, 1 / len(SIZES), f"{where}: kernel size {s}")
    assert int(((k.size % 2 == 1) & (k.size >= 7) & (k.size <= 21)).sum()) == n
    # Sinc cut-off by kernel size: U(π/3, π) below 13, U(π/5, π) from 13 on, checked size by size.
    sinc = k.kind == 0
    for s in SIZES:
        lo = PI / 3 if s < 13 else PI / 5
        assert_uniform(k.omega_c[sinc & (k.size == s)], lo, PI, f"{where}: sinc ω_c at size {s}")
    iso = (k.kind == 1) | (k.kind == 3) | (k.kind == 5)
    aniso = (k.kind == 2) | (k.kind == 4) | (k.kind == 6)
    assert torch.equal(k.sigma_x[iso], k.sigma_y[iso]), f"{where}: an isotropic kernel with σx ≠ σy"
    assert bool((k.theta[iso] == 0).all()), f"{where}: an isotropic kernel with a rotation"
    assert_uniform(k.sigma_x[iso], *spec["sigma"], f"{where}: isotropic σ")
    assert_uniform(k.sigma_x[aniso], *spec["sigma"], f"{where}: anisotropic σx")
    assert_uniform(k.sigma_y[aniso], *spec["sigma"], f"{where}: anisotropic σy")
    assert_uniform(k.theta[aniso], -PI, PI, f"{where}: rotation")
    corr = torch.corrcoef(torch.stack([k.sigma_x[aniso], k.sigma_y[aniso]]))[0, 1].item()
    # |r| of independent draws: r·sqrt(n) is sub-Gaussian; 0.1 is > 10 standard errors at n ≥ 10⁴.
    assert abs(corr) < 0.1, f"{where}: anisotropic σx and σy are correlated (r = {corr:.3f})"
    # β: U(lo, 1) or U(1, hi) with p 0.5 each (Real-ESRGAN's random_bivariate_generalized/plateau).
    gen = (k.kind == 3) | (k.kind == 4)
    lo, hi = spec["betag"]
    beta = k.beta[gen]
    assert_frequency(beta < 1, 0.5, f"{where}: generalized β below 1")
    assert_uniform(beta[beta < 1], lo, 1.0, f"{where}: generalized β below 1")
    assert_uniform(beta[beta >= 1], 1.0, hi, f"{where}: generalized β above 1")
    plat = (k.kind == 5) | (k.kind == 6)
    lo, hi = spec["betap"]
    beta = k.beta[plat]
    assert lo == 1.0  # U(1, 1) is exactly 1: half the plateau kernels have β = 1
    assert_frequency(beta == 1, 0.5, f"{where}: plateau β = 1")
    assert_uniform(beta[beta > 1], 1.0, hi, f"{where}: plateau β above 1")
    assert bool(torch.isnan(k.beta[~(gen | plat)]).all()), f"{where}: β recorded for a kernel without one"


def _check_stage(s, spec: dict, where: str) -> None:
    _check_kernels(s.kernel, spec, where)
    assert_frequency(s.blur.bool(), spec["blur"], f"{where}: blur applied")
    up, down, keep = (s.resize == 0), (s.resize == 1), (s.resize == 2)
    for flags, p, name in zip((up, down, keep), spec["resize"], ("up", "down", "keep"), strict=True):
        assert_frequency(flags, p, f"{where}: resize {name}")
    assert_uniform(s.resize_scale[up], *spec["up"], f"{where}: up-scale")
    assert_uniform(s.resize_scale[down], *spec["down"], f"{where}: down-scale")
    assert bool((s.resize_scale[keep] == 1).all()), f"{where}: 'keep' with a scale other than 1"
    for m in range(3):
        assert_frequency(s.resize_mode == m, 1 / 3, f"{where}: resize mode {m}")
    gauss = s.gaussian.bool()
    assert_frequency(gauss, spec["gaussian"], f"{where}: Gaussian (vs Poisson) noise")
    assert_uniform(s.noise_sigma[gauss], *spec["noise"], f"{where}: Gaussian σ (8-bit units)")
    assert_uniform(s.poisson_scale[~gauss], *spec["poisson"], f"{where}: Poisson scale")
    for flags, name in ((gauss, "Gaussian"), (~gauss, "Poisson")):
        assert_frequency(s.gray.bool()[flags], spec["gray"], f"{where}: gray {name} noise")
    assert_uniform(s.jpeg_quality, *spec["jpeg"], f"{where}: JPEG quality")


@pytest.mark.parametrize("spec_name", ["published", "distinct-per-stage"])
def test_every_probability_and_range_of_both_stages(spec_name):
    """N = 60 000 draws: Hoeffding ±0.020 on a frequency; the rarest group checked (a sinc size, ~750 draws)
    still separates U(π/3, π) from U(π/5, π) by 40× its end-point tolerance."""
    spec = PUBLISHED if spec_name == "published" else DISTINCT
    deg = RealWorldDegradation(scale=4) if spec is PUBLISHED else _degradation(spec)
    n = 60_000
    p = deg.sample(n, generator=_generator())
    _check_stage(p.first, spec["first"], "stage 1")
    _check_stage(p.second, spec["second"], "stage 2")
    f = p.final_sinc
    use = f.kind == 0
    assert bool(((f.kind == 0) | (f.kind == -1)).all()), "final filter neither a sinc nor a pulse"
    assert_frequency(use, spec["final_sinc"], "final sinc applied")
    for s in SIZES:
        assert_frequency(f.size[use] == s, 1 / len(SIZES), f"final sinc size {s}")
    for small in (True, False):  # the final sinc is U(π/3, π) whatever its size
        assert_uniform(f.omega_c[use & ((f.size < 13) == small)], PI / 3, PI, f"final ω_c (size<13: {small})")
    for m in range(3):
        assert_frequency(p.final_resize_mode == m, 1 / 3, f"final resize mode {m}")
    assert_frequency(p.jpeg_first.bool(), 0.5, "JPEG before the final resize + sinc")
    # The two stages draw independently: their JPEG qualities are uncorrelated (|r| < 0.1, > 20 std. errors).
    r = torch.corrcoef(torch.stack([p.first.jpeg_quality, p.second.jpeg_quality]))[0, 1].item()
    assert abs(r) < 0.1, f"stage 1 and stage 2 JPEG qualities correlated (r = {r:.3f})"


def test_defaults_are_the_published_constants():
    """The dataclass defaults, field by field (a config that omits a key gets the paper's value)."""
    d = RealWorldDegradation()
    a, b = PUBLISHED["first"], PUBLISHED["second"]
    assert (d.scale, d.sinc_prob, d.sinc_prob2, d.second_blur_prob, d.final_sinc_prob) == (
        4,
        a["sinc"],
        b["sinc"],
        b["blur"],
        PUBLISHED["final_sinc"],
    )
    assert (tuple(d.blur_sigma), tuple(d.blur_sigma2)) == (a["sigma"], b["sigma"])
    assert (tuple(d.betag_range), tuple(d.betap_range)) == (a["betag"], a["betap"])
    assert (tuple(d.resize_prob), tuple(d.resize_prob2)) == (a["resize"], b["resize"])
    assert tuple(d.resize_range) == (a["down"][0], a["up"][1])
    assert tuple(d.resize_range2) == (b["down"][0], b["up"][1])
    assert (d.gaussian_noise_prob, d.gaussian_noise_prob2) == (a["gaussian"], b["gaussian"])
    assert (tuple(d.noise_range), tuple(d.noise_range2)) == (a["noise"], b["noise"])
    assert (tuple(d.poisson_scale_range), tuple(d.poisson_scale_range2)) == (a["poisson"], b["poisson"])
    assert (d.gray_noise_prob, d.gray_noise_prob2) == (a["gray"], b["gray"])
    assert (tuple(d.jpeg_range), tuple(d.jpeg_range2)) == (a["jpeg"], b["jpeg"])


@pytest.mark.parametrize("spec_name", ["published", "distinct-per-stage"])
def test_each_sample_receives_its_own_draws(monkeypatch, spec_name):
    """The calls the pipeline makes, sample by sample, equal what that sample's record says (kernel, resize
    sizes and mode, noise type / level / gray, JPEG quality, order); then the applied frequencies.

    Stubbed filters / noise / JPEG (only the calls are under test here), 16×16 HR, 1 200 samples: Hoeffding
    ±0.094 per frequency at δ = 1e-9.
    """
    from realworld_trace import assert_trace_matches, trace

    spec = PUBLISHED if spec_name == "published" else DISTINCT
    deg = RealWorldDegradation(scale=4) if spec is PUBLISHED else _degradation(spec)
    n, hw = 1200, (16, 16)
    hr = torch.rand(n, 3, *hw)
    g = _generator()
    params = deg.sample(n, generator=torch.Generator().set_state(g.get_state()))
    kernels = {
        "first": mixed_kernels(params.first.kernel),
        "second": mixed_kernels(params.second.kernel),
        "final": mixed_kernels(params.final_sinc),
    }
    t = trace(monkeypatch, stub=True)
    _, applied = deg(hr, generator=g, return_params=True)
    assert torch.equal(applied.second.jpeg_quality, params.second.jpeg_quality)  # same stream, same draws
    assert_trace_matches(t.events, applied, kernels, n, hw, deg.scale)
    # What was applied, counted from the trace-verified records.
    recs = [applied.record(i) for i in range(n)]
    for stage in ("first", "second"):
        sp = spec[stage]
        blur = torch.tensor([r[stage]["blur"] for r in recs])
        assert_frequency(blur, sp["blur"], f"{stage}: blur applied")
        gauss = torch.tensor([r[stage]["noise"]["type"] == "gaussian" for r in recs])
        assert_frequency(gauss, sp["gaussian"], f"{stage}: Gaussian noise applied")
        q = torch.tensor([r[stage]["jpeg_quality"] for r in recs])
        assert_uniform(q, *sp["jpeg"], f"{stage}: applied JPEG quality")
        sigma = torch.tensor([r[stage]["noise"]["sigma"] for r in recs if "sigma" in r[stage]["noise"]])
        assert_uniform(sigma, *sp["noise"], f"{stage}: applied Gaussian σ")
    assert_frequency(torch.tensor([r["order"].startswith("jpeg") for r in recs]), 0.5, "JPEG first")
    sinc = torch.tensor([r["final_sinc"]["type"] == "sinc" for r in recs])
    assert_frequency(sinc, spec["final_sinc"], "final sinc applied")


def test_gaussian_noise_level_and_gray_per_sample():
    """Each sample of a batch gets its own σ and its own gray flag.

    The noise / (σ_i/255) of sample i is n standard normals; Laurent–Massart: P(|χ²_n/n − 1| ≥ 2√(x/n) + 2x/n)
    ≤ 2e^{−x}; x = 21 gives 0.153 at n = 4 096 (one channel of 64×64) with false-alarm ≤ 1.5e-9 per sample.
    σ ratios between neighbours ≥ 1.8, so a sample given another's σ is off by > 3× in variance.
    """
    sigma = torch.tensor([3.0, 28.0, 7.0, 15.0])
    gray = torch.tensor([False, True, True, False])
    img = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    noise = gaussian_noise(img, sigma, gray, _generator())
    n, x = 64 * 64, 21.0
    tol = 2 * math.sqrt(x / n) + 2 * x / n
    for i in range(4):
        z = noise[i, 0] / (sigma[i] / 255)
        ratio = (z**2).mean().item()
        assert abs(ratio - 1) < tol, f"sample {i}: noise variance {ratio:.3f} × σ_i², want 1 ± {tol:.3f}"
        same = torch.equal(noise[i, 0], noise[i, 1]) and torch.equal(noise[i, 1], noise[i, 2])
        assert same == bool(gray[i]), f"sample {i}: gray={bool(gray[i])} but channels equal={same}"


def test_poisson_noise_scale_levels_and_gray_per_sample():
    """Each sample's Poisson noise is scale_i · (k/L_i − v) with integer k ≥ 0 and L_i = 2^⌈log₂(#levels_i)⌉,
    exactly (no statistics): a sample given another sample's scale or level count falls off its lattice.

    Sample 0 has the most levels (256) so that sample 0's lattice, if reused, contains no other sample's.
    """
    counts, levels = (200, 5, 17, 3), (256, 8, 32, 4)
    g = _generator()
    gray = torch.tensor([False, False, True, False])
    img = torch.empty(4, 3, 32, 32, dtype=torch.float64)
    for i, c in enumerate(counts):
        values = torch.randperm(256, generator=g)[:c].double() / 255  # c distinct 8-bit levels
        idx = torch.randint(c, (1 if gray[i] else 3, 32, 32), generator=g)
        idx.view(-1)[:c] = torch.arange(c)  # every level present
        img[i] = values[idx]  # a gray sample is gray: its luma has the same c levels
    scale = torch.tensor([0.7, 2.3, 0.11, 1.45], dtype=torch.float64)
    noise = poisson_noise(img, scale, gray, g)
    for i in range(4):
        ref = img[i] if not gray[i] else (img[i] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
        ref = torch.round(ref * 255) / 255  # Real-ESRGAN rounds to 8 bits before drawing
        k = (noise[i] / scale[i] + ref) * levels[i]
        assert bool((k > -1e-6).all()), f"sample {i}: negative Poisson count"
        off = (k - k.round()).abs().max().item()
        assert off < 1e-6, f"sample {i}: noise/scale_i + v is {off:.3f} off the 1/{levels[i]} lattice"
        assert k.round().std().item() > 0, f"sample {i}: no noise"
        same = torch.equal(noise[i, 0], noise[i, 1]) and torch.equal(noise[i, 1], noise[i, 2])
        assert same == bool(gray[i]), f"sample {i}: gray={bool(gray[i])} but channels equal={same}"


def test_bounds_are_what_the_docstrings_say():
    """The tolerances quoted above, so a change of sample size shows in review."""
    assert hoeffding(60_000) < 0.021 and DELTA <= 1e-9
