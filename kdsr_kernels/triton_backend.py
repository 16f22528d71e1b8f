"""The `triton` backend of IDR-DDC: a forward kernel and ONE fused backward kernel.

Design (see ../shared/spec/kernel-design.md §5a):
  * grid = (B*C planes, row tiles, column tiles); int64 plane offsets; any input strides (NCHW, channels_last,
    slices, expanded grad_out) are passed to the kernels, nothing is copied. Outputs are contiguous NCHW.
  * taps: K is a constexpr, `tl.static_range` over the K*K taps, each tap a masked load of the tile shifted by
    (i-P, j-P) (`other=0` is the zero padding); loads are converted to the accumulation type (float32, or float64
    when the inputs are float64 so `torch.autograd.gradcheck` passes).
  * LeakyReLU fused both ways: forward epilogue `acc > 0 ? acc : acc*slope`; the backward reads the saved output y
    and uses `y > 0 ? g : g*slope` on every (shifted) grad_out load. The slope is a constexpr (exact in float64;
    one compilation per distinct slope value).
  * backward: one kernel reads grad_out (and y) and x once per tile and writes grad_x and the grad_w partials of the
    tile. grad_w is deterministic: when one tile covers the plane it is written directly (no second pass);
    otherwise each tile writes its K*K partial sums into a float32 (float64) workspace [planes, tiles, K*K] that
    is reduced in a fixed order (`sum(dim=1)`). No atomics. grad_x / grad_w work is skipped (constexpr flags)
    when not needed.
  * tile configs are explicit (`pick_config`), no `@triton.autotune`, so the same code runs under the Triton CPU
    interpreter (TRITON_INTERPRET=1, how CI tests this backend on CPU tensors).

Test hooks (module attributes, meant for tests only):
  * `force_tiles(bh, bw)` context manager: force a tile shape (powers of two) to exercise the multi-tile path.
  * `POISON_OUTPUTS` (default: env KDSR_POISON_OUTPUTS=1): allocate outputs and the workspace filled with NaN, so an
    element the kernels fail to write shows up as NaN.
"""

from __future__ import annotations

import contextlib
import os

import torch

NAME = "triton"
DEVICE_TYPES = ("cuda", "cpu")

MAX_TILE = 4096  # outputs per program: a 64x64 plane (the KDSR training shape) is one program
_MAX_GRID_YZ = 65535  # CUDA limit of grid axes 1 and 2

POISON_OUTPUTS = os.environ.get("KDSR_POISON_OUTPUTS", "0") == "1"
_TILE_OVERRIDE: tuple[int, int] | None = None

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except Exception as exc:  # noqa: BLE001 - any import failure makes the backend unavailable, with the reason
    triton = None
    tl = None
    _IMPORT_ERROR = f"triton cannot be imported ({type(exc).__name__}: {exc}); install it with `pip install triton`"


# ---------------------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _idr_ddc_fwd_kernel(
        x_ptr, w_ptr, out_ptr,
        C, H, W,
        sxb, sxc, sxh, sxw,
        swb, swc, swh, sww,
        K: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
        HAS_ACT: tl.constexpr, NEG_SLOPE: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        P: tl.constexpr = K // 2
        pid_p = tl.program_id(0).to(tl.int64)  # plane = b * C + c
        b = pid_p // C
        c = pid_p % C
        x_base = x_ptr + b * sxb + c * sxc
        w_base = w_ptr + b * swb + c * swc

        offs_h = tl.program_id(1).to(tl.int64) * BLOCK_H + tl.arange(0, BLOCK_H)
        offs_w = tl.program_id(2).to(tl.int64) * BLOCK_W + tl.arange(0, BLOCK_W)

        acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
        for i in tl.static_range(K):
            hh = offs_h + (i - P)
            mh = (hh >= 0) & (hh < H)
            row = hh * sxh
            for j in tl.static_range(K):
                ww = offs_w + (j - P)
                mw = (ww >= 0) & (ww < W)
                wv = tl.load(w_base + i * swh + j * sww).to(ACC)
                xv = tl.load(
                    x_base + row[:, None] + (ww * sxw)[None, :], mask=mh[:, None] & mw[None, :], other=0.0
                ).to(ACC)
                acc += xv * wv
        if HAS_ACT:
            acc = tl.where(acc > 0, acc, acc * NEG_SLOPE)

        m_out = (offs_h < H)[:, None] & (offs_w < W)[None, :]
        out_offs = pid_p * H * W + (offs_h * W)[:, None] + offs_w[None, :]
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def _load_dpre(g_base, y_base, hh, ww, H, W, sgh, sgw, syh, syw,
                   HAS_ACT: tl.constexpr, NEG_SLOPE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
        """Gradient w.r.t. the pre-activation at rows hh, columns ww (zero outside the plane)."""
        m = ((hh >= 0) & (hh < H))[:, None] & ((ww >= 0) & (ww < W))[None, :]
        g = tl.load(g_base + (hh * sgh)[:, None] + (ww * sgw)[None, :], mask=m, other=0.0).to(ACC)
        if HAS_ACT:
            y = tl.load(y_base + (hh * syh)[:, None] + (ww * syw)[None, :], mask=m, other=0.0)
            g = tl.where(y > 0, g, g * NEG_SLOPE)
        return g

    @triton.jit
    def _idr_ddc_bwd_kernel(
        g_ptr, x_ptr, w_ptr, y_ptr, gx_ptr, gw_ptr,
        C, H, W, NT_W,
        sgb, sgc, sgh, sgw,
        sxb, sxc, sxh, sxw,
        swb, swc, swh, sww,
        syb, syc, syh, syw,
        K: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
        HAS_ACT: tl.constexpr, NEG_SLOPE: tl.constexpr, ACC: tl.constexpr,
        NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
    ):  # fmt: skip
        """One tile: grad_x of the tile, and the tile's K*K grad_w partial sums.

        gw_ptr is grad_w itself (one tile per plane) or the workspace [planes, tiles, K*K]; element
        (plane, tile, tap) lives at (plane * tiles + tile) * K*K + tap in both cases.
        """
        P: tl.constexpr = K // 2
        pid_p = tl.program_id(0).to(tl.int64)
        pid_h = tl.program_id(1)
        pid_w = tl.program_id(2)
        b = pid_p // C
        c = pid_p % C
        g_base = g_ptr + b * sgb + c * sgc
        x_base = x_ptr + b * sxb + c * sxc
        w_base = w_ptr + b * swb + c * swc
        y_base = y_ptr + b * syb + c * syc

        offs_h = pid_h.to(tl.int64) * BLOCK_H + tl.arange(0, BLOCK_H)
        offs_w = pid_w.to(tl.int64) * BLOCK_W + tl.arange(0, BLOCK_W)

        # dpre at the tile's own positions (zero outside the plane): the grad_w operand and grad_x's centre tap
        dpre = _load_dpre(g_base, y_base, offs_h, offs_w, H, W, sgh, sgw, syh, syw, HAS_ACT, NEG_SLOPE, ACC)

        if NEED_DX:
            # dx[h, w] = sum_ij w[i, j] * dpre[h - (i - P), w - (j - P)]
            dx = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
            for i in tl.static_range(K):
                for j in tl.static_range(K):
                    wv = tl.load(w_base + i * swh + j * sww).to(ACC)
                    if i == P and j == P:
                        dx += dpre * wv
                    else:
                        d = _load_dpre(g_base, y_base, offs_h + (P - i), offs_w + (P - j), H, W,
                                       sgh, sgw, syh, syw, HAS_ACT, NEG_SLOPE, ACC)  # fmt: skip
                        dx += d * wv
            m_out = (offs_h < H)[:, None] & (offs_w < W)[None, :]
            gx_offs = pid_p * H * W + (offs_h * W)[:, None] + offs_w[None, :]
            tl.store(gx_ptr + gx_offs, dx.to(gx_ptr.dtype.element_ty), mask=m_out)

        if NEED_DW:
            # dw[i, j] = sum_hw dpre[h, w] * x[h + i - P, w + j - P] over this tile
            KK: tl.constexpr = K * K
            gw_base = gw_ptr + (pid_p * (tl.num_programs(1) * tl.num_programs(2)) + pid_h * NT_W + pid_w) * KK
            for i in tl.static_range(K):
                hh = offs_h + (i - P)
                mh = (hh >= 0) & (hh < H)
                row = hh * sxh
                for j in tl.static_range(K):
                    ww = offs_w + (j - P)
                    mw = (ww >= 0) & (ww < W)
                    xv = tl.load(
                        x_base + row[:, None] + (ww * sxw)[None, :], mask=mh[:, None] & mw[None, :], other=0.0
                    ).to(ACC)
                    part = tl.sum(dpre * xv)
                    tl.store(gw_base + (i * K + j), part.to(gw_ptr.dtype.element_ty))


# ---------------------------------------------------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------------------------------------------------
def _interpreted() -> bool:
    """True when the kernels were built by the Triton CPU interpreter (TRITON_INTERPRET=1 before import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_idr_ddc_fwd_kernel, InterpretedFunction)


def unavailable_reason(device_type: str) -> str | None:
    """None when the backend can run `device_type` tensors, else a sentence saying why not and what to do."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if device_type == "cpu":
        if not _interpreted():
            return (
                "CPU tensors run only in the Triton interpreter: set TRITON_INTERPRET=1 in the environment before "
                "importing triton or kdsr_kernels (it is a test path, not a fast one)"
            )
        return None
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available (no GPU or a CPU-only torch build)"
        return None
    return f"it runs {'/'.join(DEVICE_TYPES)} tensors only"


def _np2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def pick_config(H: int, W: int, dtype: torch.dtype, max_tile: int = MAX_TILE) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, num_warps) for an H x W plane.

    The whole plane is one program when its power-of-two box has <= max_tile elements (64x64 -> one program, so
    grad_w needs no second pass). Larger planes are split: column tiles of 64 or 128 (whichever pads W less;
    full 128/256-byte rows), widened when there are only a few rows, and as many rows as fit max_tile
    (1x64x180x320 -> 64x64 tiles, 3x5 per plane). num_warps gives each thread ~16 outputs.
    dtype is accepted for future per-dtype tuning; the same tiles serve every dtype today.
    """
    if _TILE_OVERRIDE is not None:
        bh, bw = _TILE_OVERRIDE
    else:
        ph, pw = _np2(H), _np2(W)
        if ph * pw <= max_tile:
            bh, bw = ph, pw
        else:
            if pw <= 128:
                bw = pw
            else:
                bw = 64 if -(-W // 64) * 64 < -(-W // 128) * 128 else 128
            bw = max(bw, min(pw, max_tile // ph))
            bh = min(ph, max_tile // bw)
    num_warps = max(1, min(8, (bh * bw) // 256))
    return bh, bw, num_warps


@contextlib.contextmanager
def force_tiles(block_h: int, block_w: int):
    """Test hook: force (BLOCK_H, BLOCK_W) (powers of two) inside the `with` block, e.g. to exercise the
    multi-tile grad_w workspace reduction on small planes."""
    global _TILE_OVERRIDE
    for v in (block_h, block_w):
        if v < 1 or v & (v - 1):
            raise ValueError(f"force_tiles: tile sizes must be powers of two, got {(block_h, block_w)}")
    previous = _TILE_OVERRIDE
    _TILE_OVERRIDE = (int(block_h), int(block_w))
    try:
        yield
    finally:
        _TILE_OVERRIDE = previous


def _alloc(shape, dtype, device) -> torch.Tensor:
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _acc_type(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_geometry(x: torch.Tensor):
    B, C, H, W = x.shape
    bh, bw, num_warps = pick_config(H, W, x.dtype)
    nt_h, nt_w = triton.cdiv(H, bh), triton.cdiv(W, bw)
    if nt_h > _MAX_GRID_YZ or nt_w > _MAX_GRID_YZ:
        raise ValueError(f"idr_ddc (triton): plane {H}x{W} needs {nt_h}x{nt_w} tiles, over the grid limit")
    return (B * C, nt_h, nt_w), bh, bw, num_warps


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def forward(x: torch.Tensor, weight: torch.Tensor, negative_slope: float | None) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k) (any strides) -> out (B,C,H,W), contiguous NCHW, x's dtype."""
    B, C, H, W = x.shape
    K = weight.shape[-1]
    out = _alloc((B, C, H, W), x.dtype, x.device)
    grid, bh, bw, num_warps = _launch_geometry(x)
    with _device_guard(x):
        _idr_ddc_fwd_kernel[grid](
            x, weight, out,
            C, H, W,
            *x.stride(), *weight.stride(),
            K=K, BLOCK_H=bh, BLOCK_W=bw,
            HAS_ACT=negative_slope is not None,
            NEG_SLOPE=float(negative_slope) if negative_slope is not None else 0.0,
            ACC=_acc_type(x.dtype),
            num_warps=num_warps,
        )  # fmt: skip
    return out


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor | None,
    negative_slope: float | None,
    need_grad_x: bool,
    need_grad_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fused backward: (grad_x | None, grad_w | None), contiguous, x's dtype. `out` is the saved forward output
    (needed only with the activation)."""
    if not (need_grad_x or need_grad_w):
        return None, None
    B, C, H, W = x.shape
    K = weight.shape[-1]
    has_act = negative_slope is not None
    if has_act and out is None:
        raise ValueError("idr_ddc (triton) backward: the saved output is required when negative_slope is set")
    grid, bh, bw, num_warps = _launch_geometry(x)
    n_tiles = grid[1] * grid[2]

    grad_x = _alloc((B, C, H, W), x.dtype, x.device) if need_grad_x else None
    grad_w = ws = None
    if need_grad_w:
        if n_tiles == 1:
            grad_w = _alloc((B, C, K, K), weight.dtype, x.device)
            ws = grad_w
        else:
            ws_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            ws = _alloc((B * C, n_tiles, K * K), ws_dtype, x.device)

    y = out if has_act else grad_out  # dummy pointer when there is no activation (never read)
    dummy = x  # placeholder for outputs that are not computed (never written)
    with _device_guard(x):
        _idr_ddc_bwd_kernel[grid](
            grad_out, x, weight, y,
            grad_x if grad_x is not None else dummy,
            ws if ws is not None else dummy,
            C, H, W, grid[2],
            *grad_out.stride(), *x.stride(), *weight.stride(), *y.stride(),
            K=K, BLOCK_H=bh, BLOCK_W=bw,
            HAS_ACT=has_act,
            NEG_SLOPE=float(negative_slope) if has_act else 0.0,
            ACC=_acc_type(x.dtype),
            NEED_DX=bool(need_grad_x), NEED_DW=bool(need_grad_w),
            num_warps=num_warps,
        )  # fmt: skip
    if need_grad_w and grad_w is None:
        # fixed-order reduction over the tiles of each plane: deterministic
        grad_w = ws.sum(dim=1).view(B, C, K, K).to(weight.dtype)
    return grad_x, grad_w
