"""IDR-DDC: every backend on this machine against one float64 oracle (plain F.conv2d + autograd).

Parametrised over (device, backend) for every backend this machine must run (tests/backend_cases.py: decided
from what is installed, so a backend that breaks fails here instead of vanishing), so the same
file checks `reference` and `cpu` here, `triton` in the interpreter (TRITON_INTERPRET=1, set by conftest), and
`cuda` / `triton` on a GPU machine. Inputs are fresh random draws on every run (no fixed seed). Both memory
layouts: NCHW-contiguous and channels_last (NHWC) inputs, whose outputs and grad_x must come back in the same
layout (torch's suggest_memory_format rule; grad_w is contiguous).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from backend_cases import ALL_BACKENDS, CASE_IDS, CASES, DEVICES, expected_backends, missing_backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._prims_common import suggest_memory_format

import kdsr_kernels as kk
from kdsr_kernels import ops

# (B, C, H, W, k): B=1, C=1, H or W = 1, H/W smaller than k, odd sizes that are no multiple of any tile.
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 1, 1, 7, 3),
    (2, 3, 6, 1, 3),
    (2, 2, 2, 3, 5),
    (1, 2, 17, 20, 3),
    (2, 1, 9, 11, 7),
    (1, 3, 13, 8, 5),
    (1, 1, 3, 3, 7),
]


def oracle(x, weight, negative_slope, grad_out=None):
    """float64 forward (and grads when grad_out is given) by F.conv2d's own autograd."""
    x64 = x.detach().double().cpu().requires_grad_(True)
    w64 = weight.detach().double().cpu().requires_grad_(True)
    B, C, H, W = x64.shape
    k = w64.shape[-1]
    y = F.conv2d(x64.reshape(1, B * C, H, W), w64.reshape(B * C, 1, k, k), groups=B * C, padding=k // 2)
    y = y.reshape(B, C, H, W)
    if negative_slope is not None:
        y = F.leaky_relu(y, negative_slope)
    if grad_out is None:
        return y.detach()
    gx, gw = torch.autograd.grad(y, (x64, w64), grad_out.double().cpu())
    return y.detach(), gx, gw


def assert_close_to_oracle(actual, expected, reduce_size: int, what: str):
    """fp32/fp64: elementwise within k²- and reduction-scaled tolerances (half: assert_rounded_once)."""
    actual = actual.detach().cpu()
    assert not torch.isnan(actual).any(), f"{what}: NaN in output (an element was never written?)"
    assert actual.dtype in (torch.float32, torch.float64), "half precision goes through assert_rounded_once"
    eps = torch.finfo(actual.dtype).eps
    tol = 8 * eps * math.sqrt(reduce_size) * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=tol, msg=lambda m: f"{what}: {m}")


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` at each of `values` (float64 in, float64 out); subnormal spacing near zero."""
    info = torch.finfo(dtype)
    mantissa_bits = {torch.float16: 10, torch.bfloat16: 7}[dtype]
    _, exponent = torch.frexp(values.abs().clamp_min(info.tiny))
    return torch.ldexp(torch.ones_like(values), exponent - 1 - mantissa_bits)


def assert_rounded_once(actual, expected, abs_bound, n_terms: int, what: str, truncating_store: bool = False):
    """fp16/bf16 "fp32 accumulation, rounded once to nearest": |actual - exact| ≤ ½ ulp + fp32 sum error.

    `expected` is the float64 oracle, `abs_bound` the same sum over |terms| (bounds the fp32 accumulation
    error γ_n·Σ|terms|). A round-toward-zero store misses by up to 1 ulp and a half-precision accumulator by
    many, so both fail; the result is also within 1 ulp of the float32 oracle rounded to `dtype`.
    """
    actual = actual.detach().cpu()
    dtype = actual.dtype
    assert not torch.isnan(actual).any(), f"{what}: NaN in output (an element was never written?)"
    a = actual.double()
    fp32_error = (n_terms + 2) * 2.0**-24 * abs_bound
    limit = (1.0 if truncating_store else 0.5) * ulp(a, dtype) + fp32_error
    err = (a - expected).abs()
    bad = err > limit
    assert not bad.any(), (
        f"{what} ({dtype}): {int(bad.sum())}/{bad.numel()} elements not rounded once to nearest; worst "
        f"{float((err / ulp(expected, dtype)).max()):.2f} ulp"
    )
    if truncating_store:
        return
    rounded = expected.float().to(dtype).double()  # oracle_fp32.to(dtype)
    # fp32_error too: where terms cancel, two fp32 summation orders may differ by more than an fp16 ulp of the
    # (small) result, and then the two roundings land several ulps apart while both are "rounded once".
    assert ((a - rounded).abs() <= ulp(rounded, dtype) + fp32_error).all(), (
        f"{what}: more than 1 ulp from oracle_fp32.to(dtype)"
    )


LAYOUTS = ["nchw", "channels_last"]


def assert_layout_follows(out, x, what):
    """out has x's shape and the strides torch gives x's suggested memory format (channels_last in, out)."""
    fmt = suggest_memory_format(x)
    want = torch.empty(x.shape, memory_format=fmt).stride()
    assert out.shape == x.shape and out.stride() == want, (
        f"{what}: strides {out.stride()}, want {want} ({fmt})"
    )


def make_inputs(shape, dtype, device, layout="contiguous"):
    B, C, H, W, k = shape
    if layout == "strided":  # a non-contiguous slice of a larger tensor
        x = torch.randn(B, C + 1, H + 2, 2 * W, dtype=dtype, device=device)[:, 1:, 1 : H + 1, ::2]
    else:
        x = torch.randn(B, C, H, W, dtype=dtype, device=device)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(B, C, k, k, dtype=dtype, device=device) / k
    return x, weight


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("negative_slope", [None, 0.0, 0.1])  # 0.0 = ReLU: the `>` vs `>=` edge at zero
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_and_grads_match_oracle_fp32(device, backend, shape, negative_slope, layout):
    x, weight = make_inputs(shape, torch.float32, device, layout)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    y = kk.idr_ddc(x, weight, negative_slope=negative_slope, backend=backend)
    grad_out = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, weight), grad_out)
    y_ref, gx_ref, gw_ref = oracle(x, weight, negative_slope, grad_out)
    B, C, H, W, k = shape
    assert y.dtype == x.dtype
    assert_layout_follows(y, x, "forward")
    assert_layout_follows(gx, x, "grad_x")
    assert gw.is_contiguous()
    assert_close_to_oracle(y, y_ref, k * k, "forward")
    assert_close_to_oracle(gx, gx_ref, k * k, "grad_x")
    assert_close_to_oracle(gw, gw_ref, H * W, "grad_w")


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_inputs(device, backend, layout):
    shape = (2, 3, 7, 9, 3)
    x, weight = make_inputs(shape, torch.float32, device, layout)
    x.requires_grad_(True)
    weight = weight.transpose(2, 3).detach().requires_grad_(True)  # a non-contiguous weight too
    y = kk.idr_ddc(x, weight, negative_slope=0.1, backend=backend)
    grad_out = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, weight), grad_out)
    y_ref, gx_ref, gw_ref = oracle(x, weight, 0.1, grad_out)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
        assert gx.is_contiguous(memory_format=torch.channels_last) and not gx.is_contiguous()
    else:  # a slice of an NCHW tensor: NCHW out
        assert y.is_contiguous() and gx.is_contiguous()
    assert_close_to_oracle(y, y_ref, 9, "forward")
    assert_close_to_oracle(gx, gx_ref, 9, "grad_x")
    assert_close_to_oracle(gw, gw_ref, 7 * 9, "grad_w")


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("negative_slope", [None, 0.0, 0.1])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_half_precision_rounded_once(device, backend, dtype, negative_slope, layout):
    shape = (2, 19, 11, 13, 3)  # 19 channels: NHWC vectors along C with a partial last one
    x, weight = make_inputs(shape, dtype, device, layout)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    y = kk.idr_ddc(x, weight, negative_slope=negative_slope, backend=backend)
    grad_out = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, weight), grad_out)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    assert_layout_follows(y, x, "forward")
    assert_layout_follows(gx, x, "grad_x")
    y_ref, gx_ref, gw_ref = oracle(x, weight, negative_slope, grad_out)
    # Σ|terms| with the LeakyReLU derivative taken as 1 (≥ slope): an upper bound for every element.
    y_abs, gx_abs, gw_abs = oracle(x.abs(), weight.abs(), None, grad_out.abs())
    # The Triton interpreter (numpy) truncates float32 -> bfloat16; compiled Triton rounds to nearest even.
    trunc = backend == "triton" and device == "cpu" and dtype == torch.bfloat16
    assert_rounded_once(y, y_ref, y_abs, 9, "forward", trunc)
    assert_rounded_once(gx, gx_ref, gx_abs, 9, "grad_x", trunc)
    assert_rounded_once(gw, gw_ref, gw_abs, 11 * 13, "grad_w", trunc)


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_float64(device, backend, k, layout):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(1, 2, k, k, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: kk.idr_ddc(a, b, negative_slope=0.1, backend=backend), (x, weight), fast_mode=True
    )


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
def test_gradcheck_float64_full(device, backend):
    """One full (every Jacobian column) gradcheck per backend on a tiny shape, LeakyReLU 0.1 and ReLU."""
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(1, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    for slope in (0.1, 0.0):
        assert torch.autograd.gradcheck(
            lambda a, b, s=slope: kk.idr_ddc(a, b, negative_slope=s, backend=backend), (x, weight)
        )


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("need", ["x", "weight"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_of_one_input_only(device, backend, need, layout):
    x, weight = make_inputs((2, 5, 6, 5, 3), torch.float32, device, layout)
    target = x if need == "x" else weight
    target.requires_grad_(True)
    y = kk.idr_ddc(x, weight, negative_slope=0.1, backend=backend)
    grad_out = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, (target,), grad_out)
    _, gx_ref, gw_ref = oracle(x, weight, 0.1, grad_out)
    assert_close_to_oracle(g, gx_ref if need == "x" else gw_ref, 30, f"grad_{need}")


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_is_bitwise_repeatable(device, backend, layout):
    x, weight = make_inputs((2, 3, 10, 12, 3), torch.float32, device, layout)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    grad_out = torch.randn(x.shape, device=device)
    runs = []
    for _ in range(2):
        y = kk.idr_ddc(x, weight, negative_slope=0.1, backend=backend)
        runs.append(torch.autograd.grad(y, (x, weight), grad_out))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck(device, backend, layout):
    """The backend's operator: fake (shape + strides) == real, autograd registration, schema. Compiled
    backends are the C++ operator idr_ddc_compiled, the Python ones the custom op idr_ddc with the name."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    for slope in (None, 0.1):
        if ops.BACKENDS[backend].compiled:
            torch.library.opcheck(torch.ops.kdsr.idr_ddc_compiled, (x, weight, slope))
        else:
            torch.library.opcheck(torch.ops.kdsr.idr_ddc, (x, weight, slope, backend))


@pytest.mark.parametrize("backend", [name for name in ALL_BACKENDS if ops.BACKENDS[name].compiled])
def test_python_op_refuses_compiled_backends(backend):
    with pytest.raises(ValueError, match="idr_ddc_compiled"):
        torch.ops.kdsr.idr_ddc(_x, _w, None, backend)


class _DynamicConvBlock(torch.nn.Module):
    """A KDSR-like use: a linear layer predicts the kernels from a per-sample vector."""

    def __init__(self, channels: int, backend: str):
        super().__init__()
        self.kernel = torch.nn.Linear(4, channels * 9, bias=False)
        self.backend = backend

    def forward(self, x, d):
        weight = self.kernel(d).view(x.shape[0], x.shape[1], 3, 3)
        return kk.idr_ddc(x, weight, negative_slope=0.1, backend=self.backend) + x


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_compile_fullgraph_matches_eager(device, backend, layout):
    module = _DynamicConvBlock(3, backend).to(device)
    x = torch.randn(2, 3, 8, 9, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    d = torch.randn(2, 4, device=device)
    y_eager = module(x, d)
    y_eager.square().sum().backward()
    grads_eager = [x.grad.clone(), module.kernel.weight.grad.clone()]
    x.grad = None
    module.kernel.weight.grad = None
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    y = compiled(x, d)
    y.square().sum().backward()
    assert y.stride() == y_eager.stride()
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(x.grad, grads_eager[0])
    torch.testing.assert_close(module.kernel.weight.grad, grads_eager[1])


def test_torch_compile_inductor_auto_backend():
    """Inductor sees the custom op as one opaque node: no graph break, same values as eager."""
    torch._dynamo.reset()
    module = _DynamicConvBlock(3, "auto")
    x = torch.randn(2, 3, 8, 9, requires_grad=True)
    d = torch.randn(2, 4)
    y_eager = module(x, d)
    (gx_eager,) = torch.autograd.grad(y_eager.sum(), (x,))
    y = torch.compile(module, fullgraph=True)(x, d)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(gx, gx_eager)


@given(
    B=st.integers(1, 2),
    C=st.integers(1, 3),
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    k=st.sampled_from([1, 3, 5, 7]),
    slope=st.sampled_from([None, 0.0, 0.1, 0.2]),
    case=st.sampled_from(CASES),
    layout=st.sampled_from(LAYOUTS),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_random_shapes(B, C, H, W, k, slope, case, layout):
    device, backend = case
    x, weight = make_inputs((B, C, H, W, k), torch.float32, device, layout)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    y = kk.idr_ddc(x, weight, negative_slope=slope, backend=backend)
    grad_out = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, weight), grad_out)
    y_ref, gx_ref, gw_ref = oracle(x, weight, slope, grad_out)
    assert_close_to_oracle(y, y_ref, k * k, "forward")
    assert_close_to_oracle(gx, gx_ref, k * k, "grad_x")
    assert_close_to_oracle(gw, gw_ref, H * W, "grad_w")


@pytest.mark.parametrize("device,backend", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 5), (2, 0, 4, 4)])
def test_empty_inputs_give_empty_outputs_and_zero_grads(device, backend, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    weight = torch.randn(shape[0], shape[1], 3, 3, device=device, requires_grad=True)
    y = kk.idr_ddc(x, weight, negative_slope=0.1, backend=backend)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape and weight.grad.shape == weight.shape
    assert not x.grad.any() and not weight.grad.isnan().any()
    if shape[2] == 0:  # H = 0: weight.grad has elements, and every one must be an exact zero
        assert weight.grad.numel() > 0 and torch.equal(weight.grad, torch.zeros_like(weight.grad))


# ---- input validation: clear Python errors, never a crash or a silent wrong answer ----

_x = torch.randn(2, 3, 8, 8)
_w = torch.randn(2, 3, 3, 3)


@pytest.mark.parametrize(
    "x,weight,kwargs,error,match",
    [
        (_x[0], _w, {}, ValueError, "x must be 4-D"),
        (_x, _w.view(2, 27), {}, ValueError, "weight must be 4-D"),
        (_x, torch.randn(1, 3, 3, 3), {}, ValueError, "do not match x"),
        (_x, torch.randn(2, 4, 3, 3), {}, ValueError, "do not match x"),
        (_x, torch.randn(2, 3, 3, 5), {}, ValueError, "square"),
        (_x, torch.randn(2, 3, 4, 4), {}, ValueError, "odd"),
        (_x, torch.randn(2, 3, 9, 9), {}, ValueError, "between 1 and 7"),
        (_x.long(), _w.long(), {}, TypeError, "not supported"),
        (_x, _w.double(), {}, TypeError, "differs from x dtype"),
        (_x, _w, {"negative_slope": -0.1}, ValueError, "negative_slope"),
        (_x, _w, {"negative_slope": float("nan")}, ValueError, "negative_slope"),
        (_x, _w, {"backend": "fastest"}, ValueError, "unknown backend"),
        ("x", _w, {}, TypeError, "expects tensors"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, weight, kwargs, error, match):
    with pytest.raises(error, match=match):
        kk.idr_ddc(x, weight, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_is_rejected():
    with pytest.raises(ValueError, match="move both to one device"):
        kk.idr_ddc(_x, _w.cuda())


def test_named_backend_that_cannot_run_raises():
    unusable = [name for name in ALL_BACKENDS if name not in kk.available_backends("cpu")]
    if not unusable:
        pytest.skip("every backend runs on CPU tensors on this machine")
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        kk.idr_ddc(_x, _w, backend=unusable[0])


@pytest.mark.parametrize("device", DEVICES)
def test_every_expected_backend_is_available(device):
    """The triton distribution installed ⇒ triton runs; CUDA + nvcc ⇒ cuda runs; a C++ compiler ⇒ cpu runs."""
    missing = missing_backends(device)
    assert not missing, "; ".join(
        f"backend {n!r} expected on {device} but unavailable: {r}" for n, r in missing.items()
    )
    assert set(expected_backends(device)) <= set(kk.available_backends(device))


def test_reference_is_always_available():
    assert "reference" in kk.available_backends("cpu")
    assert ops.resolve_backend("auto", "cpu") in kk.available_backends("cpu")
