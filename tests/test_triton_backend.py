"""Triton-only checks: tile/config selection, the multi-tile grad_w workspace path, plane packing, gradient
flags, odd grad_out / saved-output strides, determinism, the float64 path.

The operator-level oracle tests for every backend live in test_idr_ddc.py. Runs on CUDA, or on CPU tensors
under the Triton interpreter (TRITON_INTERPRET=1, set by conftest.py on CPU-only machines); every launch here
stays at a few dozen programs at most (each interpreted program costs ~20-80 ms).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)
pytest.importorskip("triton")

from torch._prims_common import suggest_memory_format  # noqa: E402

from kdsr_kernels import reference as ref  # noqa: E402
from kdsr_kernels import triton_backend as tb  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1"
if tb.unavailable_reason(DEVICE.type) is not None:
    pytest.skip(f"triton backend unavailable: {tb.unavailable_reason(DEVICE.type)}", allow_module_level=True)

# The slope is a constexpr (one GPU compilation per value): the tests use 0.1 (and 0.0 once) to keep the
# number of compiled variants, i.e. the cold-cache GPU run time, down.
REL_RMSE = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.2e-2}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Outputs and the workspace start as NaN, so an element the kernels do not write fails the comparison."""
    monkeypatch.setenv("KDSR_POISON_OUTPUTS", "1")


def _rel_rmse(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    return ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt().clamp_min(1e-300)).item()


def _assert_close(got, want, dtype, what, scale=None):
    """RMS(got - want) / RMS(scale) within the dtype's bound; `scale` defaults to the float64 `want`."""
    assert torch.isfinite(got).all(), f"{what}: non-finite values (unwritten elements?)"
    err = _rel_rmse(got, want)
    if scale is not None:
        err *= (want.double().pow(2).mean().sqrt() / scale.double().pow(2).mean().sqrt()).item()
    assert err <= REL_RMSE[dtype], f"{what}: relative RMSE {err:.3g} > {REL_RMSE[dtype]:.3g}"


def _inputs(B, C, H, W, k, dtype, layout="nchw"):
    x = torch.randn(B, C, H, W, dtype=torch.float64, device=DEVICE).to(dtype)
    w = (torch.randn(B, C, k, k, dtype=torch.float64, device=DEVICE) / k).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        big = torch.randn(B, C + 1, H + 2, 2 * W, dtype=torch.float64, device=DEVICE).to(dtype)
        x = big[:, 1:, 1 : H + 1, ::2]
        w = (torch.randn(B, C, k, k, dtype=torch.float64, device=DEVICE) / k).to(dtype).transpose(-1, -2)
    return x, w


def _check_against_oracle(x, w, slope, need=(True, True), options=tb.DEFAULT_OPTIONS):
    """Forward and fused backward of the triton backend vs the reference evaluated in float64."""
    dtype = x.dtype
    y = tb.forward(x, w, slope, options)
    layout = suggest_memory_format(x)  # outputs follow x's memory format
    assert y.is_contiguous(memory_format=layout) and y.dtype == dtype and y.shape == x.shape
    x64, w64 = x.double(), w.double()
    y64 = ref.forward(x64, w64, slope)
    _assert_close(y, y64, dtype, "forward")
    g = torch.randn(x.shape, dtype=torch.float64, device=DEVICE).to(dtype)
    gx, gw = tb.backward(g, x, w, y if slope is not None else None, slope, *need, options)
    gx64, gw64 = ref.backward(g.double(), x64, w64, y64, slope, True, True)
    if need[0]:
        assert gx.is_contiguous(memory_format=layout) and gx.dtype == dtype and gx.shape == x.shape
        _assert_close(gx, gx64, dtype, "grad_x")
    else:
        assert gx is None
    if need[1]:
        assert gw.is_contiguous() and gw.dtype == dtype and gw.shape == w.shape
        # grad_w sums x·g over every pixel; an fp32 sum's error scales with the sum of |terms|, not with the
        # result, which can cancel (one weight of a 1x1 kernel). So the error is measured against sum |x||g|.
        gw_abs = ref.backward(g.double().abs(), x64.abs(), w64, None, None, False, True)[1]
        _assert_close(gw, gw64, dtype, "grad_w", scale=gw_abs)
    else:
        assert gw is None
    return y, gx, gw


# ------------------------------------------------------------------------------------------------------------
# config selection (pure host code, no launches)
# ------------------------------------------------------------------------------------------------------------
def _is_pow2(v):
    return v >= 1 and v & (v - 1) == 0


def test_config_training_shape_is_one_program_per_plane():
    pb, bh, bw, ch, nw = tb.pick_config(48 * 64, 64, 64, torch.float32)
    assert (pb, bh, bw) == (1, 64, 64)  # no second grad_w pass, 3072 programs
    assert ch < bh and nw == tb.GPU_WARPS[3]  # walked in row chunks on the GPU
    assert pb * ch * bw == 32 * nw * tb.GPU_ELEMS_PER_THREAD[3]
    assert tb.pick_config(48 * 64, 64, 64, torch.float32, interpret=True)[1:4] == (64, 64, 64)


def test_config_inference_shape_splits_planes():
    for dtype in (torch.float32, torch.bfloat16):
        pb, bh, bw, _, _ = tb.pick_config(64, 180, 320, dtype)
        tiles = -(-180 // bh) * -(-320 // bw)
        assert pb == 1 and tiles > 1 and bh * bw <= tb.MAX_TILE
        assert bw >= 64  # full 128-byte rows
        assert 64 * tiles >= 2 * 132  # enough programs for an H100's SMs


@pytest.mark.parametrize("interpret", [False, True])
def test_config_properties(interpret):
    for planes in (1, 3, 6, 64, 3072, 5000):
        for H, W in [(1, 1), (1, 64), (1, 5000), (5000, 3), (17, 20), (64, 64), (180, 320), (999, 1000)]:
            pb, bh, bw, ch, nw = tb.pick_config(planes, H, W, torch.float32, 3, interpret=interpret)
            assert all(_is_pow2(v) for v in (pb, bh, bw, ch, nw)) and nw <= 8
            assert bh * bw <= tb.MAX_TILE and ch <= bh
            assert ch == bh if interpret else pb * ch * bw <= max(8 * 32 * 8, bw)
            if not interpret:
                assert pb * ch * bw // (32 * nw) <= 8  # outputs per thread per iteration
            nt_h, nt_w = -(-H // bh), -(-W // bw)
            assert nt_h <= 65535 and nt_w <= 65535
            if pb > 1:
                assert nt_h == 1 and nt_w == 1  # packing only when a plane is one tile
                assert pb * bh * bw <= (tb.INTERPRET_MAX_BLOCK if interpret else tb.MAX_TILE)
            if _is_pow2(H) and _is_pow2(W) and H * W <= tb.MAX_TILE:
                assert (bh, bw) == (H, W)


def test_config_small_test_shapes_are_few_programs():
    # the interpreter path packs small planes: a 2x3x17x20 launch is one program, 4x4x17x20 is one as well
    assert tb.pick_config(6, 17, 20, torch.float32, interpret=True)[0] >= 6
    assert tb.pick_config(16, 17, 20, torch.float16, interpret=True)[0] == 16


def test_forced_tiles_reject_non_powers_of_two():
    with pytest.raises(ValueError, match="powers of two"):
        tb.LaunchOptions(tiles=(3, 4))
    with pytest.raises(ValueError, match="powers of two"):
        tb.LaunchOptions(tiles=(4, 4, 3))
    tiles = tb.LaunchOptions(tiles=(4, 8)).tiles
    assert tb.pick_config(1, 17, 20, torch.float32, interpret=True, tiles=tiles)[1:4] == (4, 8, 4)
    tiles = tb.LaunchOptions(tiles=(16, 8, 2)).tiles
    assert tb.pick_config(1, 17, 20, torch.float32, interpret=True, tiles=tiles)[1:4] == (16, 8, 2)
    assert tb.pick_config(1, 17, 20, torch.float32, interpret=True)[1:4] == (32, 32, 32)


# ------------------------------------------------------------------------------------------------------------
# multi-tile path: grad_w partials in the workspace, reduced in a fixed order
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,k,tiles,slope,dtype,layout",
    [
        ((1, 2, 11, 13), 3, (8, 8), 0.1, torch.float32, "nchw"),
        ((1, 2, 11, 13), 7, (8, 8), None, torch.float32, "sliced"),
        ((1, 1, 9, 13), 5, (4, 4), 0.1, torch.float32, "channels_last"),
        ((1, 1, 5, 6), 5, (2, 2), 0.1, torch.float32, "nchw"),  # tile smaller than the halo
        ((1, 1, 7, 9), 1, (4, 4), None, torch.float32, "nchw"),
        ((1, 2, 9, 11), 3, (4, 8), 0.1, torch.bfloat16, "nchw"),
        ((1, 2, 9, 11), 3, (8, 4), 0.0, torch.float16, "channels_last"),
        ((1, 1, 9, 11), 3, (1, 8), 0.1, torch.float64, "sliced"),
    ],
)
def test_multi_tile_matches_oracle(shape, k, tiles, slope, dtype, layout):
    x, w = _inputs(*shape, k, dtype, layout)
    options = tb.LaunchOptions(tiles=tiles)
    grid = tb._launch_geometry(x, k, options)[0]
    assert grid[1] * grid[2] > 1
    _check_against_oracle(x, w, slope, options=options)


@pytest.mark.parametrize(
    "shape,k,tiles,slope,dtype",
    [
        ((1, 2, 11, 13), 3, (16, 16, 4), 0.1, torch.float32),  # one tile per plane, 3 chunks (last partial)
        ((1, 1, 13, 9), 7, (8, 16, 2), None, torch.float32),  # 2 row tiles x 4 chunks, last tile short
        ((1, 1, 9, 6), 5, (16, 8, 1), 0.1, torch.bfloat16),  # chunk of one row, rows past H skipped
        ((3, 3, 5, 7), 3, (8, 8, 2), 0.1, torch.float64),  # packed planes (interpreter) and chunks
    ],
)
def test_row_chunk_loop_matches_oracle(shape, k, tiles, slope, dtype):
    """The GPU walks each tile CHUNK_H rows at a time; force that path here (the interpreter default is one
    chunk per tile)."""
    x, w = _inputs(*shape, k, dtype, "sliced")
    _check_against_oracle(x, w, slope, options=tb.LaunchOptions(tiles=tiles))


def test_inference_plane_with_default_config():
    """The real split config of the 180x320 inference plane (one plane in the interpreter, 64 on a GPU)."""
    C = 64 if ON_GPU else 1
    x, w = _inputs(1, C, 180, 320, 3, torch.float32)
    grid = tb._launch_geometry(x, 3)[0]
    assert grid[1] * grid[2] > 1
    _check_against_oracle(x, w, 0.1)


@pytest.mark.parametrize(
    "shape,k,slope,dtype",
    [
        ((1, 2, 64, 64), 3, 0.1, torch.float32),  # training plane: one program, 4 row chunks
        ((1, 1, 64, 64), 7, None, torch.bfloat16),  # k = 7: 8 row chunks
        ((1, 1, 180, 320), 3, 0.1, torch.float16),  # inference plane: 15 tiles (workspace), chunks
        ((1, 2, 9, 11), 5, 0.1, torch.float64),
    ],
)
def test_cuda_configs_in_the_interpreter(shape, k, slope, dtype):
    """The exact CUDA launch configs (row chunks, warps) run through the interpreter on CPU machines."""
    options = tb.LaunchOptions(cuda_config=True)
    x, w = _inputs(*shape, k, dtype)
    cfg = tb._launch_geometry(x, k, options)[1]
    if shape[2] >= 64:
        assert cfg["CHUNK_H"] < cfg["BLOCK_H"]
    _check_against_oracle(x, w, slope, options=options)


def test_int64_index_path():
    """Offsets inside a plane are int32 unless they could overflow; check the int64 variant too."""

    class Strided:
        def __init__(self, *stride):
            self._stride = stride

        def stride(self, dim):
            return self._stride[dim]

    assert tb._index_type(64, 64, 3, Strided(4096, 4096, 64, 1)) == tb.tl.int32
    assert tb._index_type(64, 64, 3, Strided(0, 0, 0, 0)) == tb.tl.int32
    assert tb._index_type(4, 4, 3, Strided(1, 1, 2**30, 1)) == tb.tl.int64
    assert tb._index_type(2**16, 2**15 + 1, 1, Strided(1, 1, 1, 1)) == tb.tl.int64  # H * W >= 2**31
    assert tb._index_type(64, 64, 3, Strided(4096, 4096, 64, 1), force64=True) == tb.tl.int64
    x, w = _inputs(2, 2, 9, 7, 3, torch.float32, "channels_last")
    _check_against_oracle(x, w, 0.1, options=tb.LaunchOptions(tiles=(8, 4, 2), index64=True))


def test_multi_tile_gradcheck_float64():
    x, w = _inputs(1, 1, 5, 6, 3, torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            y = tb.forward(x, w, 0.1, options)
            ctx.save_for_backward(x, w, y)
            return y

        @staticmethod
        def backward(ctx, g):
            x, w, y = ctx.saved_tensors
            return tb.backward(g, x, w, y, 0.1, *ctx.needs_input_grad, options)

    options = tb.LaunchOptions(tiles=(4, 4))
    assert torch.autograd.gradcheck(Fn.apply, (x, w), fast_mode=True)


def test_float64_slope_is_not_rounded_to_float32():
    x, w = _inputs(1, 2, 6, 7, 3, torch.float64)
    y = tb.forward(x, w, 0.1)
    y64 = ref.forward(x, w, 0.1)
    assert torch.allclose(y, y64, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------------------------------------------------
# plane packing, gradient flags, strides, determinism
# ------------------------------------------------------------------------------------------------------------
def test_packed_planes_with_a_partial_last_block():
    # interpreter: 9 planes in one 16-plane block; GPU: 2100 planes, 2 per program, the last one half empty
    B, C = (3, 700) if ON_GPU else (3, 3)
    x, w = _inputs(B, C, 5, 7, 3, torch.float32, "sliced")
    pb = tb._launch_geometry(x, 3)[1]["PB"]
    assert pb > 1 and (B * C) % pb != 0
    _check_against_oracle(x, w, 0.1)


@pytest.mark.parametrize("need", [(True, False), (False, True)])
@pytest.mark.parametrize("tiles", [None, (4, 8)])
def test_need_grad_flags(need, tiles):
    x, w = _inputs(1, 2, 7, 9, 3, torch.float32)
    _check_against_oracle(x, w, 0.1, need, tb.LaunchOptions(tiles=tiles))
    assert tb.backward(torch.ones_like(x), x, w, None, None, False, False) == (None, None)


def test_grad_out_and_saved_output_strides():
    x, w = _inputs(2, 2, 6, 5, 3, torch.float32)
    y = tb.forward(x, w, 0.1)
    g = torch.randn_like(y)
    want = tb.backward(g, x, w, y, 0.1, True, True)
    cl_g = g.contiguous(memory_format=torch.channels_last)
    cl_y = y.contiguous(memory_format=torch.channels_last)
    cl = tb.backward(cl_g, x, w, cl_y, 0.1, True, True)
    for a, b in zip(cl, want, strict=True):
        assert torch.equal(a, b)
    # grad of y.sum(): an expanded tensor with all strides 0
    ones = torch.ones((), device=DEVICE).expand_as(y)
    gx, gw = tb.backward(ones, x, w, y, 0.1, True, True)
    gx64, gw64 = ref.backward(ones.double(), x.double(), w.double(), y.double(), 0.1, True, True)
    _assert_close(gx, gx64, torch.float32, "grad_x (expanded grad_out)")
    _assert_close(gw, gw64, torch.float32, "grad_w (expanded grad_out)")


@pytest.mark.parametrize("tiles", [None, (4, 4)])
def test_backward_is_deterministic(tiles):
    x, w = _inputs(1, 2, 7, 9, 3, torch.float32)
    y = tb.forward(x, w, 0.1)
    g = torch.randn_like(y)
    options = tb.LaunchOptions(tiles=tiles)
    first = tb.backward(g, x, w, y, 0.1, True, True, options)
    second = tb.backward(g, x, w, y, 0.1, True, True, options)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not ON_GPU, reason="large shapes are too slow in the interpreter")
@pytest.mark.parametrize("dtype,k", [(torch.float32, 3), (torch.bfloat16, 7)])
def test_gpu_training_shape(dtype, k):
    x, w = _inputs(48, 64, 64, 64, k, dtype, "nchw")
    _check_against_oracle(x, w, 0.1)


def test_opcheck_triton():
    import kdsr_kernels  # noqa: F401  (registers torch.ops.kdsr.idr_ddc)

    x, w = _inputs(2, 3, 9, 10, 3, torch.float32)
    x.requires_grad_(True)
    w.requires_grad_(True)
    torch.library.opcheck(torch.ops.kdsr.idr_ddc, (x, w, 0.1, "triton"))


def test_cpu_needs_the_interpreter():
    """Without TRITON_INTERPRET=1 at import time, CPU tensors are refused with a reason saying what to do."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    code = "from kdsr_kernels import triton_backend as tb; print(tb.unavailable_reason('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "TRITON_INTERPRET=1" in out.stdout
