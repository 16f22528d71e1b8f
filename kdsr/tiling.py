"""Upscale images of any size with a KDSR student, tile by tile, with one degradation estimate per image.

    sr = kdsr.upscale(model, lr)                      # whole image at once
    sr = kdsr.upscale(model, lr, tile=256)            # bounded memory: 256x256 LR tiles + 10 px context

Tiling, and what it does differently from the reference code (per-tile chop) and Real-ESRGAN (paste, no
blending):
  * D is estimated ONCE per image, exactly as on the whole image: KD-IDE ends in a global average pool, so
    the encoder's per-pixel features are computed tile by tile (each tile with `encoder.receptive_radius`
    pixels of context, which makes its features identical to the whole-image ones), summed over the tile
    cores and averaged; the pooled vector then goes through the MLP. Every SR tile runs under that one D.
  * SR tiles are windows of tile + 2*tile_pad LR pixels on an evenly spaced grid whose neighbours overlap by
    at least 2*tile_pad. Within each overlap, the outer quarters (next to a window edge, where that window
    saw zero padding instead of image) take the other window only, and the middle half cross-fades with
    sin^2 weights that sum to one; so no seam shows, and with tile_pad >= 2x the SR network's receptive
    radius the tiled result equals the untiled one up to float rounding.
  * Only one batch of tiles is on the model's device at a time; the image and the output stay where the
    image is (e.g. CPU), so device memory is bounded by the tile size.
  * When one window covers the image (H, W <= tile + 2*tile_pad) the result is identical to the untiled one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .models.checks import MIN_LR_SIZE, check_image
from .models.kdsr_model import KDSRStudent

Progress = Callable[[int, int], None]

# precision="auto" per device type: the fastest path measured in benchmarks/test_bench_inference.py.
AUTO_PRECISION = {"cpu": "bf16", "cuda": "fp16"}


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows of size `window` covering [0, length), evenly spaced, neighbours
    overlapping by at least `overlap` (window > overlap). One window when it covers everything."""
    if window >= length:
        return [0]
    stride = window - overlap
    n = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (n - 1)) for i in range(n)]


def _ramp(n: int, up: int, down: int) -> torch.Tensor:
    """(n,) float32 weights of one window along one axis, given its overlaps with the previous (`up`) and
    next (`down`) window: 0 on the outer quarter of each overlap (pixels near a window edge see zero padding
    instead of image), a sin^2 cross-fade over the middle half, 1 elsewhere. A neighbour's mirrored ramp over
    the same overlap adds up to exactly 1."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    w = torch.ones(n, dtype=torch.float64)
    if up > 0:
        w *= torch.sin(0.5 * math.pi * ((i - up / 4) / (up / 2)).clamp(0.0, 1.0)) ** 2
    if down > 0:
        w *= torch.sin(0.5 * math.pi * ((n - i - down / 4) / (down / 2)).clamp(0.0, 1.0)) ** 2
    return w.float()


def _axis_weights(starts: list[int], window: int, length: int, scale: int) -> list[torch.Tensor]:
    """Per-window output-space (scale*window,) blending weights along an axis of `length` LR pixels.

    When windows overlap by more than half their size (tile < 2*tile_pad) a window meets several neighbours
    and some output pixels can fall in zero-weight margins of every window covering them; those pixels get
    weight 1 in each covering window (a plain average there).
    """
    weights = []
    for k, start in enumerate(starts):
        up = starts[k - 1] + window - start if k > 0 else 0
        down = start + window - starts[k + 1] if k + 1 < len(starts) else 0
        weights.append(_ramp(scale * window, scale * up, scale * down))
    total = torch.zeros(scale * length)
    for start, w in zip(starts, weights, strict=True):
        total[scale * start : scale * (start + window)] += w
    uncovered = total <= 0
    if bool(uncovered.any()):
        for k, start in enumerate(starts):
            hole = uncovered[scale * start : scale * (start + window)]
            weights[k] = torch.where(hole, torch.ones_like(weights[k]), weights[k])
    return weights


def _check_args(model: KDSRStudent, tile: int | None, tile_pad: int, tile_batch: int) -> None:
    if not isinstance(model, KDSRStudent):
        raise TypeError(
            f"upscale needs a KDSRStudent (it estimates the degradation from the LR image alone), got "
            f"{type(model).__name__}; a teacher needs the HR image -- build a student with "
            "KDSRStudent.from_teacher or load a student checkpoint"
        )
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_LR_SIZE):
        raise ValueError(f"tile must be None (no tiling) or an int >= {MIN_LR_SIZE}, got {tile!r}")
    if isinstance(tile_pad, bool) or not isinstance(tile_pad, int) or tile_pad < 0:
        raise ValueError(f"tile_pad must be an int >= 0, got {tile_pad!r}")
    if isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1:
        raise ValueError(f"tile_batch must be an int >= 1, got {tile_batch!r}")


@dataclass(frozen=True)
class TileRunner:
    """What the tiling needs from a network, so PyTorch and onnxruntime share one tiling code path.

    features: (B, 3, h, w) LR patch -> (B, F, h, w) per-pixel encoder features (before the global pool).
    head: (B, F) pooled features, float64 -> the degradation estimate handed to `sr`.
    sr: ((N, 3, h, w) LR windows, (N, ...) estimate) -> (N, 3, scale*h, scale*w).
    encoder_radius: context pixels that make a patch's features equal the whole image's.
    scale: the upscaling factor. `to_input` casts/moves an LR patch to what `features`/`sr` take.
    """

    features: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]
    sr: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    encoder_radius: int
    scale: int
    to_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x


def torch_runner(model: KDSRStudent, low_dtype: torch.dtype | None = None) -> TileRunner:
    """A TileRunner for a PyTorch student (inputs cast to its first parameter's device and dtype).

    low_dtype (bfloat16 / float16): the encoder and the SR network's IDR-DCRBs and upsampler run under
    autocast to it, on channels_last inputs; the SR residual stream, head, body conv and tail stay in the
    model's dtype (`SRNetwork.forward(body_dtype=...)`).
    """
    param = model.sr_net.head.weight
    encoder = model.encoder
    fmt = torch.contiguous_format if low_dtype is None else torch.channels_last
    autocast = functools.partial(
        torch.autocast, param.device.type, dtype=low_dtype, enabled=low_dtype is not None
    )

    def features(x: torch.Tensor) -> torch.Tensor:
        with autocast():
            return encoder.features(x)

    def sr(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if low_dtype is None:
            return model.sr_net(x, d)
        return model.sr_net(x, d, body_dtype=low_dtype)

    def to_input(x: torch.Tensor) -> torch.Tensor:
        return x.to(param.device, param.dtype).contiguous(memory_format=fmt)

    def head(pooled: torch.Tensor) -> torch.Tensor:
        return encoder.head(pooled.to(param.dtype))[0]

    return TileRunner(features, head, sr, encoder.receptive_radius, model.scale, to_input)


def estimate_with(
    runner: TileRunner, image: torch.Tensor, tile: int | None = None, progress: Progress | None = None
) -> torch.Tensor:
    """The runner's degradation estimate of a whole image (B, 3, H, W), from tiles of `tile` LR pixels.

    Each tile gets `runner.encoder_radius` pixels of context and only its core's features enter the
    (float64) average, so the result equals the untiled one up to float summation order.
    """
    B, _, H, W = image.shape
    if tile is None or (H <= tile and W <= tile):
        feats = runner.features(runner.to_input(image))
        return runner.head(feats.mean(dim=(2, 3)))
    radius = runner.encoder_radius
    rows, cols = range(0, H, tile), range(0, W, tile)
    total = None
    done, steps = 0, len(rows) * len(cols)
    for top in rows:
        for left in cols:
            bottom, right = min(top + tile, H), min(left + tile, W)
            y0, x0 = max(top - radius, 0), max(left - radius, 0)
            y1, x1 = min(bottom + radius, H), min(right + radius, W)
            feats = runner.features(runner.to_input(image[:, :, y0:y1, x0:x1]))
            part = feats[:, :, top - y0 : bottom - y0, left - x0 : right - x0].double().sum(dim=(2, 3))
            total = part if total is None else total + part
            done += 1
            if progress is not None:
                progress(done, steps)
    return runner.head(total / (H * W))


def estimate_degradation(
    model: KDSRStudent, image: torch.Tensor, tile: int | None = None, progress: Progress | None = None
) -> torch.Tensor:
    """D (B, C) of a whole image (B, 3, H, W), computed in tiles of `tile` LR pixels when given.

    The tiled result equals `model.encode(image)[0]` up to float summation order: each tile gets
    `model.encoder.receptive_radius` pixels of context and only its core's features enter the average.
    Returned on the model's device and dtype.
    """
    return estimate_with(torch_runner(model), image, tile, progress)


PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> the fastest path we measured on `device` (benchmarks/RESULTS.md); checks the name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return AUTO_PRECISION.get(device.type, "fp32")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' runs on CUDA only; on CPU use 'bf16' (or 'auto')")
    return precision


def upscale(
    model: KDSRStudent,
    image: torch.Tensor,
    tile: int | None = None,
    tile_pad: int = 10,
    *,
    tile_batch: int = 1,
    degradation: torch.Tensor | None = None,
    progress: Progress | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Super-resolve `image` with a KDSR student, optionally in blended tiles.

    Args:
        model: a KDSRStudent, on any device / dtype (e.g. CUDA float16); it is not switched to eval mode
            (KDSR has no layers that differ between modes).
        image: (B, 3, H, W) or (3, H, W) float in [0, 1], H, W >= 4, on any device (CPU keeps the output in
            host memory). Cast to the model's dtype tile by tile.
        tile: LR tile size in pixels; None processes the whole image at once.
        tile_pad: LR context pixels around each tile; neighbouring tiles overlap by 2*tile_pad and are
            blended across the overlap.
        tile_batch: windows run per model call (each holding the B images).
        degradation: an explicit D (B, C) or (1, C) to use instead of estimating it from the image.
        progress: optional callback(done, total) called after each tile (encoder tiles, then SR tiles).
        precision: "fp32" (default; the model's own dtype), "bf16" (CPU or CUDA: the encoder and the
            IDR-DCRBs and upsampler under bfloat16 autocast on channels_last inputs, the fused IDR-DDC on its
            bf16 path; the residual stream, head, body conv and tail stay float32), "fp16" (the same in
            float16, CUDA only) or "auto" (the fastest path measured on the device, benchmarks/RESULTS.md).

    Returns:
        (B, 3, scale*H, scale*W) clamped to [0, 1], on the image's device, in the image's dtype (a (3, H, W)
        input gives B = 1). Runs under torch.no_grad().
    """
    _check_args(model, tile, tile_pad, tile_batch)
    device = model.sr_net.head.weight.device
    precision = resolve_precision(precision, device)
    if degradation is not None:
        if isinstance(image, torch.Tensor) and image.dim() == 3:
            image = image.unsqueeze(0)
        check_image(image, "image")
        degradation = _check_degradation(degradation, image.shape[0], model.n_feats)
        degradation = degradation.to(device, model.sr_net.head.weight.dtype)
    runner = runner_for(model, precision)
    return upscale_with(runner, image, tile, tile_pad, tile_batch, degradation, progress)


def runner_for(model: KDSRStudent, precision: str = "fp32") -> TileRunner:
    """The TileRunner `upscale` uses for `model` at `precision` ("fp32" / "bf16" / "fp16" / "auto")."""
    precision = resolve_precision(precision, model.sr_net.head.weight.device)
    low_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch_runner(model, low_dtype)


# (first output row, block (B, 3, rows, scale*W) in [0, 1]): receives the SR result top to bottom, each output
# row exactly once, in the dtype the network produced (float32 when tiles were blended).
Sink = Callable[[int, torch.Tensor], None]


def upscale_with(
    runner: TileRunner,
    image: torch.Tensor,
    tile: int | None = None,
    tile_pad: int = 10,
    tile_batch: int = 1,
    degradation: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """`upscale` for any TileRunner (PyTorch or onnxruntime); same arguments and result as `upscale`.

    `degradation`, when given, is the (B, ...) estimate `runner.sr` takes, used instead of estimating it.
    """
    if isinstance(image, torch.Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    check_image(image, "image")
    B, _, H, W = image.shape
    s = runner.scale
    out = torch.empty(B, 3, s * H, s * W, dtype=image.dtype, device=image.device)

    def sink(y: int, block: torch.Tensor) -> None:
        out[:, :, y : y + block.shape[2]] = block

    upscale_stream(runner, image, sink, tile, tile_pad, tile_batch, degradation, progress)
    return out


def sr_steps(runner: TileRunner, image_hw: tuple[int, int], tile: int | None, tile_pad: int) -> int:
    """How many SR windows `upscale_stream` runs on an (H, W) image (1: untiled)."""
    H, W = image_hw
    if tile is None:
        return 1
    win_h, win_w = min(tile + 2 * tile_pad, H), min(tile + 2 * tile_pad, W)
    return len(window_starts(H, win_h, 2 * tile_pad)) * len(window_starts(W, win_w, 2 * tile_pad))


def upscale_stream(
    runner: TileRunner,
    image: torch.Tensor,
    sink: Sink,
    tile: int | None = None,
    tile_pad: int = 10,
    tile_batch: int = 1,
    degradation: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> None:
    """Super-resolve `image` (B, 3, H, W) and hand the result to `sink` in horizontal bands, top to bottom.

    The SR windows of one row of tiles are blended into a float32 band of scale*(tile + 2*tile_pad) output
    rows by scale*W (on the image's device); once a row of windows is done, the output rows no later window
    touches are normalised, clamped and passed on, so no copy of the whole output exists here (the sink
    decides where it goes: a tensor in `upscale_with`, a uint8/uint16 array in `kdsr upscale`). Blend weights
    are separable, so the normaliser is a product of two 1-D sums. One window covering the image: the
    network's own output, clamped, in one block (identical to untiled).
    """
    s = runner.scale
    B, _, H, W = image.shape
    win_h = H if tile is None else min(tile + 2 * tile_pad, H)
    win_w = W if tile is None else min(tile + 2 * tile_pad, W)
    rows = window_starts(H, win_h, 2 * tile_pad)
    cols = window_starts(W, win_w, 2 * tile_pad)
    single = len(rows) == 1 and len(cols) == 1  # one window covers the image: no tiling at all
    enc_tile = None if single else tile
    n_enc = 1 if enc_tile is None else math.ceil(H / enc_tile) * math.ceil(W / enc_tile)
    per_row = math.ceil(len(cols) / tile_batch)
    n_sr = len(rows) * per_row
    total_steps = (0 if degradation is not None else n_enc) + n_sr

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total_steps)

    with torch.no_grad():
        d = (
            estimate_with(runner, image, enc_tile, lambda k, _n: report(k))
            if degradation is None
            else degradation
        )
        done = total_steps - n_sr
        if single:
            out = runner.sr(runner.to_input(image), d).clamp_(0, 1)
            report(total_steps)
            sink(0, out)
            return

        row_w = _axis_weights(rows, win_h, H, s)
        col_w = _axis_weights(cols, win_w, W, s)
        row_norm = _coverage(rows, row_w, s, H).to(image.device)
        col_norm = _coverage(cols, col_w, s, W).to(image.device)
        band = torch.zeros(B, 3, s * win_h, s * W, dtype=torch.float32, device=image.device)
        for i, top in enumerate(rows):
            wy = row_w[i].to(image.device).view(-1, 1)
            for first in range(0, len(cols), tile_batch):
                group = range(first, min(first + tile_batch, len(cols)))
                tiles = torch.cat([image[:, :, top : top + win_h, cols[j] : cols[j] + win_w] for j in group])
                sr = runner.sr(runner.to_input(tiles), d.repeat(len(group), 1))
                sr = sr.float().to(image.device)
                for k, j in enumerate(group):
                    weight = wy * col_w[j].to(image.device).view(1, -1)
                    x = s * cols[j]
                    band[:, :, :, x : x + s * win_w].addcmul_(sr[k * B : (k + 1) * B], weight)
                done += 1
                report(done)
            y0 = s * top
            y1 = s * rows[i + 1] if i + 1 < len(rows) else s * H
            _flush(band[:, :, : y1 - y0], row_norm[y0:y1], col_norm, y0, sink)
            if i + 1 < len(rows):
                keep = band[:, :, y1 - y0 :].clone()
                band.zero_()
                band[:, :, : keep.shape[2]] = keep
                del keep


FLUSH_ROWS = 64  # output rows normalised and handed to the sink at a time (bounds the temporaries)


def _flush(band: torch.Tensor, row_norm: torch.Tensor, col_norm: torch.Tensor, y0: int, sink: Sink) -> None:
    """Normalise `band` (B, 3, n, sW) by row_norm (n,) x col_norm (sW,), clamp, pass to `sink` in chunks."""
    for a in range(0, band.shape[2], FLUSH_ROWS):
        b = min(a + FLUSH_ROWS, band.shape[2])
        norm = row_norm[a:b].view(-1, 1) * col_norm.view(1, -1)
        sink(y0 + a, (band[:, :, a:b] / norm).clamp_(0, 1))


def _coverage(starts: list[int], weights: list[torch.Tensor], scale: int, length: int) -> torch.Tensor:
    """(scale*length,) sum of the per-window weights along one axis (the 1-D factor of the normaliser)."""
    total = torch.zeros(scale * length)
    for start, w in zip(starts, weights, strict=True):
        total[scale * start : scale * start + w.shape[0]] += w
    return total


def _check_degradation(d: torch.Tensor, batch: int, n_feats: int) -> torch.Tensor:
    if (
        not isinstance(d, torch.Tensor)
        or d.dim() != 2
        or d.shape[1] != n_feats
        or d.shape[0] not in (1, batch)
    ):
        shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
        raise ValueError(
            f"degradation must be a (B, C) = ({batch}, {n_feats}) or (1, {n_feats}) tensor, got {shape}"
        )
    if not d.is_floating_point() or not bool(torch.isfinite(d).all()):
        raise ValueError("degradation must be a finite floating tensor (e.g. from model.encode(lr)[0])")
    return d.expand(batch, -1)


# ----------------------------------------------------------------------------------------------------
# choosing the tile from a memory budget
# ----------------------------------------------------------------------------------------------------
MIN_AUTO_TILE = 32  # smallest tile `plan_tile` picks (below it the overlap costs more than the tile)


@dataclass(frozen=True)
class MemoryModel:
    """Measured peak bytes per LR pixel of one window (batch 1): of the encoder's features and of the SR
    network (its (scale^2 * 3) float output included), safety factor applied (see kdsr.memory); plus a
    constant per window for what a probe misses: a oneDNN convolution of a new shape creates a primitive
    (JIT code, scratchpad) outside torch's allocator -- measured ~6 MB on a 256x256 bf16 encoder window."""

    encoder_per_px: float
    sr_per_px: float
    overhead: int = 16 * 2**20  # per window: library state a probe does not see (oneDNN primitives, scratch)

    def window_bytes(self, kind: str, pixels: int) -> float:
        """Peak bytes of one `kind` ("encoder" / "sr") window of `pixels` LR pixels (batch included)."""
        return self.overhead + (self.encoder_per_px if kind == "encoder" else self.sr_per_px) * pixels


def measure_memory(runner: TileRunner, device: torch.device, how: str = "torch") -> MemoryModel:
    """Probe the runner on a kdsr.memory.PROBE-sized window and measure its peak (first calls included:
    one-off caches count, which errs on the safe side; an onnxruntime arena would hide a second call).

    how: "torch" (profiler on CPU / allocator stats on CUDA; a PyTorch model) or "rss" (onnxruntime).
    A probe whose measurement is unavailable gives a deliberately large 64 KiB per pixel.
    """
    from . import memory

    n = memory.PROBE
    with torch.no_grad():
        x = runner.to_input(torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0)))
        d = runner.head(runner.features(x).double().mean(dim=(2, 3)))

        def enc() -> None:
            runner.features(x)

        def sr() -> None:
            runner.sr(x, d)

        peaks = [memory.measure_peak(fn, how, device) for fn in (enc, sr)]
    factor = memory.safety_factor(device, how)
    enc_px, sr_px = (65536.0 if p is None else factor * p / (n * n) for p in peaks)
    return MemoryModel(enc_px, sr_px)


def _band_bytes(B: int, scale: int, win_h: int, win_w: int, W: int) -> int:
    """Host float32 bytes of the blending in `upscale_stream`: the band and its shift copy, the float copy of
    a window's output and its weighted product, and the flush temporaries."""
    band = B * 3 * 4 * scale * win_h * scale * W
    window = B * 3 * 4 * scale * win_h * scale * win_w
    flush = 3 * B * 3 * 4 * FLUSH_ROWS * scale * W
    return 2 * band + 2 * window + flush


def plan_tile(
    mem: MemoryModel,
    image_hw: tuple[int, int],
    scale: int,
    tile_pad: int,
    encoder_radius: int,
    budget: int,
    fixed: int = 0,
    *,
    batch: int = 1,
    tile_batch: int = 1,
    host_budget: int | None = None,
) -> int | None:
    """The tile for `upscale_stream` that keeps the peak under the budget: None (untiled) when the whole
    image fits, else the largest tile >= MIN_AUTO_TILE that does.

    budget: bytes for the network's working set -- plus, when host_budget is None (CPU: one memory), the
    blending band and the `fixed` bytes of the caller's own arrays (decoded image, LR tensor, output array).
    host_budget (CUDA): host bytes for `fixed` + the band; `budget` is then device memory only.
    Raises MemoryError with a one-line message when even the smallest tile does not fit.
    """
    H, W = image_hw
    shared = host_budget is None

    def cost(tile: int | None) -> tuple[float, float]:
        """(network working set, host arrays + blending band) in bytes."""
        if tile is None:
            work = max(mem.window_bytes(k, batch * H * W) for k in ("encoder", "sr"))
            return work, fixed + 3 * batch * 3 * 4 * FLUSH_ROWS * scale * W
        win_h, win_w = min(tile + 2 * tile_pad, H), min(tile + 2 * tile_pad, W)
        enc_h, enc_w = min(tile + 2 * encoder_radius, H), min(tile + 2 * encoder_radius, W)
        work = max(
            mem.window_bytes("encoder", batch * enc_h * enc_w),
            mem.window_bytes("sr", batch * tile_batch * win_h * win_w),
        )
        return work, fixed + _band_bytes(batch, scale, win_h, win_w, W)

    def fits(tile: int | None) -> bool:
        work, host = cost(tile)
        return work + host <= budget if shared else (work <= budget and host <= host_budget)

    if fits(None):
        return None
    lo, hi = MIN_AUTO_TILE, max(H, W)
    if not fits(lo):
        from .memory import format_size

        work, host = cost(lo)
        need, have = (work + host, budget) if shared else max((work, budget), (host, host_budget))
        raise MemoryError(
            f"a {W}x{H} image at x{scale} needs about {format_size(need)} even in {lo}-pixel tiles, more "
            f"than the budget of {format_size(have)}; raise --max-memory or free memory"
        )
    while lo < hi:  # the largest fitting tile: fits() is monotone in the tile size
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo
