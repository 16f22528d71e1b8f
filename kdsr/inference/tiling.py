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

import math
from collections.abc import Callable

import torch

from ..device import reuse_freed_memory
from ..models.checks import MIN_LR_SIZE, check_image
from ..models.kdsr_model import KDSRStudent
from .encoder_budget import budget_tiles
from .memory import FLUSH_ROWS, StreamBuffers
from .runners import TileRunner, resolve_precision, runner_for, torch_runner

Progress = Callable[[int, int], None]  # (model calls done, total)
StageProgress = Callable[[str, int, int], None]  # (stage, calls done in it, its total)
ENCODE = "estimating degradation"  # stage 1: the encoder over the whole image (one D)
RESTORE = "restoring tiles"  # stage 2: the SR network, window by window


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


def _check_args(model: KDSRStudent | TileRunner, tile: int | None, tile_pad: int, tile_batch: int) -> None:
    if not isinstance(model, (KDSRStudent, TileRunner)):
        raise TypeError(
            f"upscale needs a KDSRStudent (it estimates the degradation from the LR image alone) or a "
            f"TileRunner, got "
            f"{type(model).__name__}; a teacher needs the HR image -- build a student with "
            "KDSRStudent.from_teacher or load a student checkpoint"
        )
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_LR_SIZE):
        raise ValueError(f"tile must be None (no tiling) or an int >= {MIN_LR_SIZE}, got {tile!r}")
    if isinstance(tile_pad, bool) or not isinstance(tile_pad, int) or tile_pad < 0:
        raise ValueError(f"tile_pad must be an int >= 0, got {tile_pad!r}")
    if isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1:
        raise ValueError(f"tile_batch must be an int >= 1, got {tile_batch!r}")


# The degradation estimate of an image with more LR pixels than this reads this many, as BUDGET_TILE-px
# tiles spread evenly over it (issue 24: on a 12 MP photo the encoder was ~40 % of the work). D is a mean of
# per-pixel features, so 1 MP of evenly spread samples estimates it closely (docs/upscaling.md).
ENCODER_PIXELS = 1 << 20
BUDGET_TILE = 128


def encoder_windows(
    image_hw: tuple[int, int],
    tile: int | None,
    radius: int,
    max_pixels: int | None = ENCODER_PIXELS,
    budget_tile: int = BUDGET_TILE,
) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """The encoder's tiles of an (H, W) image: ((top, bottom, left, right) core, (y0, y1, x0, x1) window with
    `radius` pixels of context). Above `max_pixels` (None: never) the cores are `budget_tile`-px tiles
    covering about `max_pixels`, evenly spread (kdsr.inference.encoder_budget.budget_tiles); else every pixel,
    row by row in `tile`-px cores, or one window of the whole image when `tile` is None or covers it."""
    H, W = image_hw
    if max_pixels is not None and H * W > max_pixels:
        cores = [
            (top, top + h, left, left + w)
            for top, left, h, w in budget_tiles(H, W, max_pixels / (H * W), budget_tile)
        ]
    elif tile is None or (H <= tile and W <= tile):
        return [((0, H, 0, W), (0, H, 0, W))]
    else:
        cores = [
            (top, min(top + tile, H), left, min(left + tile, W))
            for top in range(0, H, tile)
            for left in range(0, W, tile)
        ]
    return [
        (
            (top, bottom, left, right),
            (max(top - radius, 0), min(bottom + radius, H), max(left - radius, 0), min(right + radius, W)),
        )
        for top, bottom, left, right in cores
    ]


def encode_image(
    model: KDSRStudent | TileRunner,
    image: torch.Tensor,
    tile: int | None = None,
    progress: Progress | None = None,
    max_pixels: int | None = ENCODER_PIXELS,
    budget_tile: int = BUDGET_TILE,
) -> torch.Tensor:
    """The degradation estimate of an image (B, 3, H, W): D (B, C) of a KDSRStudent (on its device and dtype),
    or a TileRunner's `head` of the pooled features, computed in tiles of `tile` LR pixels when given.

    Each tile gets the encoder's receptive radius of context and only its core's features enter the
    (float64) average, so up to `max_pixels` (None: always) the result equals `model.encode(image)[0]` up to
    float summation order. A larger image is read from evenly spread `budget_tile`-px tiles covering about
    `max_pixels` (`encoder_windows`), as `upscale` does. progress(done, total) is called after each tile.
    """
    runner = torch_runner(model) if isinstance(model, KDSRStudent) else model
    B, _, H, W = image.shape
    windows = encoder_windows((H, W), tile, runner.encoder_radius, max_pixels, budget_tile)
    if len(windows) == 1:
        feats = runner.features(runner.to_input(image))
        out = runner.head(feats.mean(dim=(2, 3)))
        if progress is not None:
            progress(1, 1)
        return out
    total, pixels = None, 0
    for done, ((top, bottom, left, right), (y0, y1, x0, x1)) in enumerate(windows, 1):
        feats = runner.features(runner.to_input(image[:, :, y0:y1, x0:x1]))
        part = feats[:, :, top - y0 : bottom - y0, left - x0 : right - x0].double().sum(dim=(2, 3))
        total = part if total is None else total + part
        pixels += (bottom - top) * (right - left)
        if progress is not None:
            progress(done, len(windows))
    return runner.head(total / pixels)


def upscale(
    model: KDSRStudent | TileRunner,
    image: torch.Tensor,
    tile: int | None = None,
    tile_pad: int = 10,
    *,
    tile_batch: int = 1,
    degradation: torch.Tensor | None = None,
    progress: Progress | None = None,
    precision: str = "fp32",
    encoder_pixels: int | None = ENCODER_PIXELS,
) -> torch.Tensor:
    """Super-resolve `image` with a KDSR student, optionally in blended tiles.

    Args:
        model: a KDSRStudent, on any device / dtype (e.g. CUDA float16); it is not switched to eval mode
            (KDSR has no layers that differ between modes). Or any TileRunner (e.g. onnxruntime's,
            kdsr.deploy.OnnxStudent.runner()): then `precision` is the runner's own and `degradation` is the
            (B, ...) estimate its `sr` takes.
        image: (B, 3, H, W) or (3, H, W) float in [0, 1], H, W >= 4, on any device (CPU keeps the output in
            host memory). Cast to the model's dtype tile by tile.
        tile: LR tile size in pixels; None processes the whole image at once.
        tile_pad: LR context pixels around each tile; neighbouring tiles overlap by 2*tile_pad and are
            blended across the overlap.
        tile_batch: windows run per model call (each holding the B images).
        degradation: an explicit D (B, C) or (1, C) to use instead of estimating it from the image.
        progress: optional callback(done, total) called after each model call (encoder tiles, then SR
            tiles; `upscale_stream`'s `stages` callback tells the two apart).
        precision: "fp32" (default; the model's own dtype), "bf16" (CPU or CUDA: the encoder and the
            IDR-DCRBs and upsampler under bfloat16 autocast, the fused IDR-DDC on its bf16 path; the residual
            stream, head, body conv and tail stay float32), "fp16" (the same in float16, CUDA only) or "auto"
            (kdsr.device.auto_precision: bf16 only on a CPU with native bf16).
        encoder_pixels: the degradation estimate of a larger image reads about this many LR pixels, in
            evenly spread tiles (`encoder_windows`); None reads every pixel.

    Returns:
        (B, 3, scale*H, scale*W) clamped to [0, 1], on the image's device, in the image's dtype (a (3, H, W)
        input gives B = 1). Runs under torch.no_grad().
    """
    _check_args(model, tile, tile_pad, tile_batch)
    if isinstance(image, torch.Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    check_image(image, "image")
    if isinstance(model, TileRunner):
        runner = model
    else:
        device = model.sr_net.head.weight.device
        runner = runner_for(model, resolve_precision(precision, device))
        if degradation is not None:
            degradation = _check_degradation(degradation, image.shape[0], model.n_feats)
            degradation = degradation.to(device, model.sr_net.head.weight.dtype)
    B, _, H, W = image.shape
    s = runner.scale
    out = torch.empty(B, 3, s * H, s * W, dtype=image.dtype, device=image.device)

    def sink(y: int, block: torch.Tensor) -> None:
        out[:, :, y : y + block.shape[2]] = block

    upscale_stream(
        runner, image, sink, tile, tile_pad, tile_batch, degradation, progress, None, encoder_pixels
    )
    return out


# (first output row, block (B, 3, rows, scale*W) in [0, 1]): receives the SR result top to bottom, each output
# row exactly once, in the dtype the network produced (float32 when tiles were blended).
Sink = Callable[[int, torch.Tensor], None]


def sr_layout(
    image_hw: tuple[int, int], tile: int | None, tile_pad: int
) -> tuple[int, int, list[int], list[int]]:
    """(win_h, win_w, row starts, column starts) of `upscale_stream`'s SR windows on an (H, W) image."""
    H, W = image_hw
    win_h = H if tile is None else min(tile + 2 * tile_pad, H)
    win_w = W if tile is None else min(tile + 2 * tile_pad, W)
    return win_h, win_w, window_starts(H, win_h, 2 * tile_pad), window_starts(W, win_w, 2 * tile_pad)


def sr_steps(runner: TileRunner, image_hw: tuple[int, int], tile: int | None, tile_pad: int) -> int:
    """How many SR windows `upscale_stream` runs on an (H, W) image (1: untiled)."""
    _, _, rows, cols = sr_layout(image_hw, tile, tile_pad)
    return len(rows) * len(cols)


def work_plan(
    image_hw: tuple[int, int],
    tile: int | None,
    tile_pad: int,
    encoder_radius: int,
    tile_batch: int = 1,
    estimate: bool = True,
    encoder_pixels: int | None = ENCODER_PIXELS,
) -> dict[str, list[int]]:
    """The model calls `upscale_stream` makes, in order, per stage (ENCODE, RESTORE): the LR pixels (per
    image) each call processes -- what its progress counts and what the ETA weights by cost."""
    win_h, win_w, rows, cols = sr_layout(image_hw, tile, tile_pad)
    single = len(rows) == 1 and len(cols) == 1
    plan: dict[str, list[int]] = {}
    if estimate:
        windows = encoder_windows(image_hw, None if single else tile, encoder_radius, encoder_pixels)
        plan[ENCODE] = [(y1 - y0) * (x1 - x0) for _, (y0, y1, x0, x1) in windows]
    groups = [min(tile_batch, len(cols) - first) for first in range(0, len(cols), tile_batch)]
    plan[RESTORE] = [g * win_h * win_w for _ in rows for g in groups]
    return plan


def upscale_stream(
    runner: TileRunner,
    image: torch.Tensor,
    sink: Sink,
    tile: int | None = None,
    tile_pad: int = 10,
    tile_batch: int = 1,
    degradation: torch.Tensor | None = None,
    progress: Progress | None = None,
    stages: StageProgress | None = None,
    encoder_pixels: int | None = ENCODER_PIXELS,
) -> None:
    """Super-resolve `image` (B, 3, H, W) and hand the result to `sink` in horizontal bands, top to bottom.

    The SR windows of one row of tiles are blended into a float32 band of scale*(tile + 2*tile_pad) output
    rows by scale*W (on the image's device; its shape is `StreamBuffers.band`, the one the memory planner
    counts); once a row of windows is done, the output rows no later window touches are normalised, clamped
    and passed on, so no copy of the whole output exists here (the sink decides where it goes: a tensor in
    `upscale`, a uint8/uint16 array in `kdsr upscale`). Blend weights are separable, so the normaliser is
    a product of two 1-D sums. One window covering the image: the network's own output, clamped, in one block
    (identical to untiled).

    progress(done, total) counts every model call; stages(stage, done, total) counts them per stage
    (ENCODE, then RESTORE), in the order of `work_plan`.

    The process's allocator is set up once to reuse freed tile buffers (kdsr.device.reuse_freed_memory;
    KDSR_MALLOC=default opts out): the same output, far fewer page faults.
    """
    reuse_freed_memory()
    s = runner.scale
    B, _, H, W = image.shape
    win_h, win_w, rows, cols = sr_layout((H, W), tile, tile_pad)
    single = len(rows) == 1 and len(cols) == 1  # one window covers the image: no tiling at all
    enc_tile = None if single else tile
    plan = work_plan(
        (H, W), tile, tile_pad, runner.encoder_radius, tile_batch, degradation is None, encoder_pixels
    )
    total_steps = sum(len(v) for v in plan.values())
    n_sr = len(plan[RESTORE])
    counter = {"done": 0}

    def report(stage: str, done: int) -> None:
        counter["done"] += 1
        if progress is not None:
            progress(counter["done"], total_steps)
        if stages is not None:
            stages(stage, done, len(plan[stage]))

    with torch.no_grad():
        d = (
            encode_image(runner, image, enc_tile, lambda k, _n: report(ENCODE, k), encoder_pixels)
            if degradation is None
            else degradation
        )
        done = 0
        if single:
            out = runner.sr(runner.to_input(image), d).clamp_(0, 1)
            report(RESTORE, n_sr)
            sink(0, out)
            return

        row_w = _axis_weights(rows, win_h, H, s)
        col_w = _axis_weights(cols, win_w, W, s)
        row_norm = _coverage(rows, row_w, s, H).to(image.device)
        col_norm = _coverage(cols, col_w, s, W).to(image.device)
        band = torch.zeros(
            StreamBuffers(B, s, win_h, win_w, W, tile_batch).band, dtype=torch.float32, device=image.device
        )
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
                report(RESTORE, done)
            y0 = s * top
            y1 = s * rows[i + 1] if i + 1 < len(rows) else s * H
            _flush(band[:, :, : y1 - y0], row_norm[y0:y1], col_norm, y0, sink)
            if i + 1 < len(rows):
                keep = band[:, :, y1 - y0 :].clone()
                band.zero_()
                band[:, :, : keep.shape[2]] = keep
                del keep


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
