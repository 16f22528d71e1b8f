"""The `triton` backend of IDR-DDC: a forward kernel and ONE fused backward kernel.

Design (see ../shared/spec/kernel-design.md §5a):
  * grid = (B*C planes, row tiles, column tiles); int64 plane offsets; any input strides (NCHW, channels_last,
    slices, expanded grad_out) go to the kernels, nothing is copied. Outputs (out, grad_x) are written through
    their strides in x's memory format (channels_last in, channels_last out); grad_w is contiguous. (The
    kernels tile H x W planes for both layouts; a channels_last kernel vectorised along C is not written yet.)
  * small planes (one tile) are packed PB per program (a leading block dim): on CUDA only while >= ~1024
    programs remain, in the interpreter as many as fit 16K elements (each program costs tens of ms there).
  * taps: K is a constexpr, `tl.static_range` over the K*K taps, each a masked load of the tile shifted by
    (i-P, j-P) (`other=0` is the zero padding); loads are converted to the accumulation type: float32, or
    float64 when the inputs are float64 (so `torch.autograd.gradcheck` passes).
  * LeakyReLU fused both ways: forward epilogue `acc > 0 ? acc : acc*slope`; the backward reads the saved
    output y and applies `y > 0 ? g : g*slope` to every (shifted) grad_out load. The slope is a constexpr
    (exact in float64; one compilation per distinct slope value).
  * backward: one kernel reads grad_out (and y) and x once per tile and writes grad_x and the tile's grad_w
    partials. grad_w is deterministic: when one tile covers the plane it is written directly (no second
    pass); otherwise each tile writes its K*K partial sums into a float32 (float64) workspace
    [planes, tiles, K*K], reduced in a fixed order (`sum(dim=1)`). No atomics. grad_x / grad_w work is
    skipped (constexpr flags) when not needed.
  * tile configs are explicit (`pick_config`), no `@triton.autotune`, so the same code runs under the Triton
    CPU interpreter (TRITON_INTERPRET=1 before import; how CI tests this backend on CPU tensors).

Test switches are explicit arguments: `forward(..., options=LaunchOptions(tiles=(bh, bw), cuda_config=True,
index64=True))` (same for `backward`). Outputs and the workspace come from `_alloc.new_buffer` (NaN-filled
under KDSR_POISON_OUTPUTS=1).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ._alloc import memory_format, new_buffer

DEVICE_TYPES = ("cuda", "cpu")

MAX_TILE = 4096  # outputs per program: a 64x64 plane (the KDSR training shape) is one program
INTERPRET_MAX_BLOCK = 16384  # interpreter only: pack small planes up to this many elements per program
GPU_WARPS = {1: 8, 3: 8, 5: 8, 7: 4}  # CUDA: warps per program by k (fewer for small blocks)
GPU_ELEMS_PER_THREAD = {1: 8, 3: 4, 5: 2, 7: 2}  # CUDA: outputs per thread per row-chunk iteration, by k
_MAX_GRID_YZ = 65535  # CUDA limit of grid axes 1 and 2


@dataclass(frozen=True)
class LaunchOptions:
    """Explicit launch choices for tests and experiments (the default is what `idr_ddc` uses).

    tiles: force (BLOCK_H, BLOCK_W) and optionally CHUNK_H (powers of two), e.g. to exercise the multi-tile
        grad_w workspace reduction or the row-chunk loop on small planes.
    cuda_config: use the CUDA tile/chunk/packing config in the interpreter too.
    index64: use int64 offsets inside a plane even where int32 would do.
    """

    tiles: tuple[int, int, int | None] | None = None
    cuda_config: bool = False
    index64: bool = False

    def __post_init__(self):
        if self.tiles is not None:
            bh, bw, *rest = self.tiles
            ch = rest[0] if rest else None
            for v in (bh, bw, 1 if ch is None else ch):
                if v < 1 or v & (v - 1):
                    raise ValueError(f"LaunchOptions.tiles: sizes must be powers of two, got {self.tiles}")
            object.__setattr__(self, "tiles", (int(bh), int(bw), None if ch is None else int(ch)))


DEFAULT_OPTIONS = LaunchOptions()

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except Exception as exc:  # noqa: BLE001 - any import failure makes the backend unavailable, with the reason
    triton = None
    tl = None
    _IMPORT_ERROR = (
        f"triton cannot be imported ({type(exc).__name__}: {exc}); install it with `pip install triton`"
    )


# ------------------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _idr_ddc_fwd_kernel(
        x_ptr, w_ptr, out_ptr,
        NP, C, H, W,
        sxb, sxc, sxh, sxw,
        swb, swc, swh, sww,
        sob, soc, soh, sow,
        K: tl.constexpr,
        PB: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, CHUNK_H: tl.constexpr,
        HAS_ACT: tl.constexpr, NEG_SLOPE: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
    ):  # fmt: skip
        """Tile [PB planes, BLOCK_H rows, BLOCK_W columns], computed CHUNK_H rows per loop iteration (bounds
        the registers per thread). PB > 1 only when a whole plane is one tile."""
        P: tl.constexpr = K // 2
        pp = tl.program_id(0).to(tl.int64) * PB + tl.arange(0, PB)  # planes: b * C + c
        mp = pp < NP
        b = pp // C
        c = pp % C
        # int64 plane bases; offsets inside a plane in IDX (int32 unless the host says they may overflow)
        x_base = x_ptr + (b * sxb + c * sxc)[:, None, None]
        out_base = out_ptr + (b * sob + c * soc)[:, None, None]
        w_ptrs = w_ptr + b * swb + c * swc

        h0 = tl.program_id(1) * BLOCK_H
        offs_w = (tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)).to(IDX)
        m_w = (offs_w < W)[None, None, :]
        n_chunks = tl.cdiv(tl.minimum(H - h0, BLOCK_H), CHUNK_H)  # chunks past the last row are skipped
        for ci in range(n_chunks):
            offs_h = (h0 + ci * CHUNK_H + tl.arange(0, CHUNK_H)).to(IDX)
            acc = tl.zeros((PB, CHUNK_H, BLOCK_W), dtype=ACC)
            for i in tl.static_range(K):
                hh = offs_h + (i - P)
                m_row = mp[:, None, None] & ((hh >= 0) & (hh < H))[None, :, None]
                row = (hh * sxh)[None, :, None]
                for j in tl.static_range(K):
                    ww = offs_w + (j - P)
                    m_col = ((ww >= 0) & (ww < W))[None, None, :]
                    wv = tl.load(w_ptrs + (i * swh + j * sww), mask=mp, other=0.0).to(ACC)
                    xv = tl.load(x_base + (row + (ww * sxw)[None, None, :]), mask=m_row & m_col, other=0.0)
                    acc += xv.to(ACC) * wv[:, None, None]
            if HAS_ACT:
                acc = tl.where(acc > 0, acc, acc * NEG_SLOPE)
            m_out = mp[:, None, None] & (offs_h < H)[None, :, None] & m_w
            out_ptrs = out_base + ((offs_h * soh)[None, :, None] + (offs_w * sow)[None, None, :])
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def _load_dpre(g_base, y_base, mp, hh, ww, H, W, sgh, sgw, syh, syw,
                   HAS_ACT: tl.constexpr, NEG_SLOPE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
        """d(loss)/d(pre-activation) at rows hh, columns ww of planes mp (zero outside the planes)."""
        m = mp[:, None, None] & ((hh >= 0) & (hh < H))[None, :, None] & ((ww >= 0) & (ww < W))[None, None, :]
        g = tl.load(g_base + ((hh * sgh)[None, :, None] + (ww * sgw)[None, None, :]), mask=m, other=0.0)
        g = g.to(ACC)
        if HAS_ACT:
            # compare in ACC: bf16 comparisons read the raw bits in the CPU interpreter (triton 3.9)
            y_ptrs = y_base + ((hh * syh)[None, :, None] + (ww * syw)[None, None, :])
            y = tl.load(y_ptrs, mask=m, other=0.0)
            g = tl.where(y.to(ACC) > 0, g, g * NEG_SLOPE)
        return g

    @triton.jit
    def _idr_ddc_bwd_kernel(
        g_ptr, x_ptr, w_ptr, y_ptr, gx_ptr, gw_ptr,
        NP, C, H, W,
        sgb, sgc, sgh, sgw,
        sxb, sxc, sxh, sxw,
        swb, swc, swh, sww,
        syb, syc, syh, syw,
        sdb, sdc, sdh, sdw,
        K: tl.constexpr, KK_PAD: tl.constexpr,
        PB: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, CHUNK_H: tl.constexpr,
        HAS_ACT: tl.constexpr, NEG_SLOPE: tl.constexpr, ACC: tl.constexpr,
        NEED_DX: tl.constexpr, NEED_DW: tl.constexpr, IDX: tl.constexpr,
    ):  # fmt: skip
        """One tile (same geometry as the forward): grad_x of the tile, and the tile's K*K grad_w partial
        sums, accumulated over the row chunks in registers and stored once.

        gw_ptr is grad_w itself (one tile per plane) or the workspace [planes, tiles, K*K]; element
        (plane, tile, tap) lives at (plane * tiles + tile) * K*K + tap in both cases (tiles = 1 for grad_w).
        """
        P: tl.constexpr = K // 2
        KK: tl.constexpr = K * K
        pp = tl.program_id(0).to(tl.int64) * PB + tl.arange(0, PB)
        mp = pp < NP
        b = pp // C
        c = pp % C
        g_base = g_ptr + (b * sgb + c * sgc)[:, None, None]
        x_base = x_ptr + (b * sxb + c * sxc)[:, None, None]
        y_base = y_ptr + (b * syb + c * syc)[:, None, None]
        gx_base = gx_ptr + (b * sdb + c * sdc)[:, None, None]
        w_ptrs = w_ptr + b * swb + c * swc

        pid_h = tl.program_id(1)
        pid_w = tl.program_id(2)
        h0 = pid_h * BLOCK_H
        offs_w = (pid_w * BLOCK_W + tl.arange(0, BLOCK_W)).to(IDX)
        m_w = (offs_w < W)[None, None, :]
        taps = tl.arange(0, KK_PAD)[None, :]
        dw = tl.zeros((PB, KK_PAD), dtype=ACC)  # this tile's grad_w partials

        n_chunks = tl.cdiv(tl.minimum(H - h0, BLOCK_H), CHUNK_H)
        for ci in range(n_chunks):
            offs_h = (h0 + ci * CHUNK_H + tl.arange(0, CHUNK_H)).to(IDX)
            # dpre at the chunk's own positions (0 outside the planes): grad_w's operand, grad_x's centre tap
            dpre = _load_dpre(g_base, y_base, mp, offs_h, offs_w, H, W, sgh, sgw, syh, syw,
                              HAS_ACT, NEG_SLOPE, ACC)  # fmt: skip

            if NEED_DX:
                # dx[h, w] = sum_ij w[i, j] * dpre[h - (i - P), w - (j - P)]
                dx = tl.zeros((PB, CHUNK_H, BLOCK_W), dtype=ACC)
                for i in tl.static_range(K):
                    for j in tl.static_range(K):
                        wv = tl.load(w_ptrs + (i * swh + j * sww), mask=mp, other=0.0).to(ACC)[:, None, None]
                        if i == P and j == P:
                            dx += dpre * wv
                        else:
                            d = _load_dpre(g_base, y_base, mp, offs_h + (P - i), offs_w + (P - j),
                                           H, W, sgh, sgw, syh, syw, HAS_ACT, NEG_SLOPE, ACC)  # fmt: skip
                            dx += d * wv
                m_out = mp[:, None, None] & (offs_h < H)[None, :, None] & m_w
                gx_ptrs = gx_base + ((offs_h * sdh)[None, :, None] + (offs_w * sdw)[None, None, :])
                tl.store(gx_ptrs, dx.to(gx_ptr.dtype.element_ty), mask=m_out)

            if NEED_DW:
                # dw[i, j] += sum over the chunk of dpre[h, w] * x[h + i - P, w + j - P]
                for i in tl.static_range(K):
                    hh = offs_h + (i - P)
                    m_row = mp[:, None, None] & ((hh >= 0) & (hh < H))[None, :, None]
                    row = (hh * sxh)[None, :, None]
                    for j in tl.static_range(K):
                        ww = offs_w + (j - P)
                        m_col = ((ww >= 0) & (ww < W))[None, None, :]
                        x_ptrs = x_base + (row + (ww * sxw)[None, None, :])
                        xv = tl.load(x_ptrs, mask=m_row & m_col, other=0.0)
                        part = tl.sum(tl.sum(dpre * xv.to(ACC), axis=2), axis=1)  # [PB]
                        dw = tl.where(taps == i * K + j, dw + part[:, None], dw)

        if NEED_DW:
            tile = pid_h * tl.num_programs(2) + pid_w
            gw_ptrs = gw_ptr + ((pp * (tl.num_programs(1) * tl.num_programs(2)) + tile) * KK)[:, None] + taps
            tl.store(gw_ptrs, dw.to(gw_ptr.dtype.element_ty), mask=mp[:, None] & (taps < KK))


# ------------------------------------------------------------------------------------------------------------
# host side
# ------------------------------------------------------------------------------------------------------------
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
                "CPU tensors run only in the Triton interpreter: set TRITON_INTERPRET=1 in the environment "
                "before importing triton or kdsr_kernels (a test path, not a fast one)"
            )
        return None
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available (no GPU or a CPU-only torch build)"
        return None
    return f"it runs {'/'.join(DEVICE_TYPES)} tensors only"


def _np2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def _np2_floor(n: int) -> int:
    """Largest power of two <= n (1 for n <= 1)."""
    return 1 << max(0, int(n).bit_length() - 1)


def pick_config(
    planes: int,
    H: int,
    W: int,
    dtype: torch.dtype,
    k: int = 3,
    interpret: bool = False,
    max_tile: int = MAX_TILE,
    tiles: tuple[int, int, int | None] | None = None,
) -> tuple[int, int, int, int, int]:
    """(PLANES_PER_PROGRAM, BLOCK_H, BLOCK_W, CHUNK_H, num_warps) for `planes` planes of H x W, kernel k.

    Tile: the whole plane is one program when its power-of-two box has <= max_tile elements (64x64 -> one
    program, so grad_w needs no second pass). Larger planes are split: column tiles of 64 or 128 (whichever
    pads W less; full 128/256-byte rows), widened when there are only a few rows, and as many rows as fit
    max_tile (1x64x180x320 -> 64x64 tiles, 3x5 per plane); on CUDA a tile row is at most one iteration
    (see Chunk) wide. Small planes are packed several per program: on
    CUDA only while >= ~1024 programs remain (to fill 132 SMs), in the interpreter as many as fit
    INTERPRET_MAX_BLOCK elements (each program costs tens of ms there).
    Chunk: on CUDA a program walks its tile CHUNK_H rows at a time, GPU_ELEMS_PER_THREAD[k] outputs per
    thread per iteration (halved for float64) with up to GPU_WARPS[k] warps: the k*k shifted loads of an
    iteration are all in flight, so registers grow with k^2 x outputs per thread (sm_90 ptxas, fp32:
    k=3 fwd 77 / bwd 116 registers, k=7 ~170 / ~200, no spills). The interpreter does the whole tile in
    one iteration.
    """
    per_thread, max_warps = GPU_ELEMS_PER_THREAD[k], GPU_WARPS[k]
    if dtype == torch.float64:
        per_thread = max(1, per_thread // 2)
    budget = per_thread * 32 * max_warps  # CUDA: outputs per loop iteration (at least one row of a tile)
    w_cap = max_tile if interpret else max(128, budget)
    ph, pw = _np2(H), _np2(W)
    override = tiles
    if override is not None:
        bh, bw = override[0], override[1]
    elif ph * pw <= max_tile and pw <= w_cap:
        bh, bw = ph, pw
    else:
        if pw <= 128:
            bw = pw
        else:
            bw = 64 if -(-W // 64) * 64 < -(-W // 128) * 128 else 128
        bw = max(bw, min(pw, max_tile // ph, w_cap))
        bh = min(ph, max_tile // bw)
    pb = 1
    if bh >= H and bw >= W:  # one tile per plane: pack planes
        box = bh * bw
        if interpret:
            pb = max(1, min(_np2(planes), INTERPRET_MAX_BLOCK // box))
        else:
            pb = max(1, min(max_tile // box, _np2_floor(planes // 1024), _np2_floor(budget // bw)))
    if override is not None and override[2] is not None:
        ch = min(override[2], bh)
    elif interpret:
        ch = bh
    else:
        ch = max(1, min(bh, budget // (pb * bw)))
    num_warps = max(1, min(max_warps, (pb * ch * bw) // (32 * per_thread)))
    return pb, bh, bw, ch, num_warps


def _acc_type(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_geometry(x: torch.Tensor, k: int, options: LaunchOptions = DEFAULT_OPTIONS):
    B, C, H, W = x.shape
    interpret = (not x.is_cuda or _interpreted()) and not options.cuda_config
    pb, bh, bw, ch, num_warps = pick_config(B * C, H, W, x.dtype, k, interpret=interpret, tiles=options.tiles)
    nt_h, nt_w = triton.cdiv(H, bh), triton.cdiv(W, bw)
    if nt_h > _MAX_GRID_YZ or nt_w > _MAX_GRID_YZ:
        raise ValueError(f"idr_ddc (triton): plane {H}x{W} needs {nt_h}x{nt_w} tiles, over the grid limit")
    grid = (triton.cdiv(B * C, pb), nt_h, nt_w)
    return grid, dict(PB=pb, BLOCK_H=bh, BLOCK_W=bw, CHUNK_H=ch, num_warps=num_warps)


def _index_type(H: int, W: int, K: int, *tensors: torch.Tensor, force64: bool = False):
    """tl.int32 when every offset inside a plane (taps included) fits int32, else tl.int64 (or if force64)."""
    if force64:
        return tl.int64
    P = K // 2
    reach = H * W
    for t in tensors:
        reach = max(reach, (H + 2 * P) * abs(t.stride(2)) + (W + 2 * P) * abs(t.stride(3)))
    return tl.int32 if reach < 2**31 - 1 else tl.int64


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    negative_slope: float | None,
    options: LaunchOptions = DEFAULT_OPTIONS,
) -> torch.Tensor:
    """x (B,C,H,W), weight (B,C,k,k) (any strides) -> out (B,C,H,W), x's dtype and memory format."""
    B, C, H, W = x.shape
    K = weight.shape[-1]
    out = new_buffer((B, C, H, W), x.dtype, x.device, memory_format(x))
    grid, cfg = _launch_geometry(x, K, options)
    with _device_guard(x):
        _idr_ddc_fwd_kernel[grid](
            x, weight, out,
            B * C, C, H, W,
            *x.stride(), *weight.stride(), *out.stride(),
            K=K,
            HAS_ACT=negative_slope is not None,
            NEG_SLOPE=float(negative_slope) if negative_slope is not None else 0.0,
            ACC=_acc_type(x.dtype),
            IDX=_index_type(H, W, K, x, out, force64=options.index64),
            enable_fp_fusion=True,  # FMAs (Triton 3.10 turns fusion off by default)
            **cfg,
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
    options: LaunchOptions = DEFAULT_OPTIONS,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fused backward: (grad_x | None, grad_w | None), x's dtype; grad_x in x's memory format, grad_w
    contiguous. `out` is the saved forward output (needed only with the activation)."""
    if not (need_grad_x or need_grad_w):
        return None, None
    B, C, H, W = x.shape
    K = weight.shape[-1]
    has_act = negative_slope is not None
    if has_act and out is None:
        raise ValueError("idr_ddc (triton) backward: the saved output is required when negative_slope is set")
    grid, cfg = _launch_geometry(x, K, options)
    n_tiles = grid[1] * grid[2]

    grad_x = new_buffer((B, C, H, W), x.dtype, x.device, memory_format(x)) if need_grad_x else None
    grad_w = ws = None
    if need_grad_w:
        if n_tiles == 1:
            grad_w = new_buffer((B, C, K, K), weight.dtype, x.device)
            ws = grad_w
        else:
            ws_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            ws = new_buffer((B * C, n_tiles, K * K), ws_dtype, x.device)

    y = out if has_act else grad_out  # dummy pointer when there is no activation (never read)
    dummy = x  # placeholder for outputs that are not computed (never written)
    with _device_guard(x):
        _idr_ddc_bwd_kernel[grid](
            grad_out, x, weight, y,
            grad_x if grad_x is not None else dummy,
            ws if ws is not None else dummy,
            B * C, C, H, W,
            *grad_out.stride(), *x.stride(), *weight.stride(), *y.stride(),
            *(grad_x if grad_x is not None else x).stride(),
            K=K, KK_PAD=_np2(K * K),
            HAS_ACT=has_act,
            NEG_SLOPE=float(negative_slope) if has_act else 0.0,
            ACC=_acc_type(x.dtype),
            NEED_DX=bool(need_grad_x), NEED_DW=bool(need_grad_w),
            IDX=_index_type(H, W, K, grad_out, x, y, grad_x if grad_x is not None else x,
                            force64=options.index64),
            enable_fp_fusion=True,
            **cfg,
        )  # fmt: skip
    if need_grad_w and grad_w is None:
        # fixed-order reduction over the tiles of each plane: deterministic
        grad_w = ws.sum(dim=1).view(B, C, K, K).to(weight.dtype)
    return grad_x, grad_w
