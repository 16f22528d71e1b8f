"""Upscale a decoded image (`kdsr.data.io.Pixels`, 8/16-bit samples) into a new one, in bounded memory.

    plan = Plan("auto")                                  # or Plan(256) / Plan(None): tile size
    result = upscale_pixels(runner, px, plan, device, say=print)
    result = resize_pixels(result, 1.5 / 4)              # --outscale 1.5 on a x4 model (Lanczos)

The result is streamed into a preallocated uint8/uint16 array (never a float copy of the output), alpha is
upscaled separately (bicubic), and a tile (or the whole image) that runs out of memory is retried in half-size
tiles down to MIN_RETRY_TILE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kdsr.data.io import LUMA, Pixels, pixels_to_tensor

from ..device import reuse_freed_memory
from . import probe
from .memory import FLUSH_ROWS, MemoryModel, default_budget, image_bytes, plan_tile
from .progress import Eta, TileBars
from .tiling import ENCODE, ENCODER_PIXELS, RESTORE, TileRunner, sr_steps, upscale_stream, work_plan

MIN_RETRY_TILE = 32  # smallest tile the out-of-memory retry halves the tile to
RESIZE_FILTER = "Lanczos"  # --outscale's filter (Pillow's LANCZOS, a = 3; Real-ESRGAN uses cv2's Lanczos-4)


class ArraySink:
    """Receives `upscale_stream`'s (1, 3, n, sW) bands and quantises them into `out`.

    out: (sH, sW, 3) -- or (sH, sW, 1) luma for grayscale -- uint8 or uint16, preallocated; the float
    temporaries are at most FLUSH_ROWS rows.
    """

    def __init__(self, out: np.ndarray, grayscale: bool):
        self.out, self.grayscale = out, grayscale
        self.top = 65535 if out.dtype == np.uint16 else 255
        self.finite = True

    def __call__(self, y: int, block: torch.Tensor) -> None:
        for a in range(0, block.shape[2], FLUSH_ROWS):
            x = block[0, :, a : a + FLUSH_ROWS].float()
            if not bool(torch.isfinite(x).all()):
                self.finite = False
            if self.grayscale:
                x = (x[0] * LUMA[0] + x[1] * LUMA[1] + x[2] * LUMA[2]).clamp_(0, 1)[None]
            q = (x * self.top).round_().to(torch.int32).permute(1, 2, 0).cpu().numpy()
            self.out[y + a : y + a + q.shape[0]] = q


def upscale_alpha(alpha: np.ndarray, scale: int, chunk: int = 128) -> np.ndarray:
    """(H, W) uint8/uint16 alpha -> (scale*H, scale*W) of the same dtype, bicubic (clamped, rounded), in
    bands of `chunk` LR rows (with 4 rows of context each side: the same values as one whole-image call)."""
    import torch.nn.functional as F

    H, W = alpha.shape
    top = 65535 if alpha.dtype == np.uint16 else 255
    out = np.empty((scale * H, scale * W), alpha.dtype)
    for a in range(0, H, chunk):
        b = min(a + chunk, H)
        c0, c1 = max(a - 4, 0), min(b + 4, H)
        part = torch.from_numpy(alpha[c0:c1].astype(np.float32) / np.float32(top))[None, None]
        up = F.interpolate(part, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0, 1)
        up = up[0, 0, scale * (a - c0) : scale * (b - c0)]
        out[scale * a : scale * b] = (up * top).round_().to(torch.int32).numpy()
    return out


def resize_pixels(px: Pixels, factor: float) -> Pixels:
    """`px` resized by `factor` (output size rounded) with RESIZE_FILTER, channel by channel in float32 so
    16-bit samples keep 16 bits; alpha alike. factor == 1 returns `px` unchanged."""
    from PIL import Image

    H, W = px.rgb.shape[:2]
    size = (max(1, round(W * factor)), max(1, round(H * factor)))
    if size == (W, H):
        return px
    top = float(px.max_value)

    def plane(a: np.ndarray) -> np.ndarray:
        img = Image.fromarray(a.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
        return np.clip(np.round(np.asarray(img)), 0, top).astype(a.dtype)

    rgb = np.stack([plane(px.rgb[..., c]) for c in range(px.rgb.shape[2])], axis=-1)
    alpha = None if px.alpha is None else plane(px.alpha)
    return Pixels(rgb, alpha, px.grayscale, px.bits, px.format, px.icc_profile)


@dataclass
class Plan:
    """How `upscale_pixels` sizes its tiles: tile ("auto", None = whole image, or N), the measured
    MemoryModel (for "auto"; measured on first use), the --max-memory budget in bytes (None: the default),
    tile_pad, tile_batch, `speed`: (encoder, SR) seconds per LR pixel that weight the ETA, and
    `encoder_pixels`: how many LR pixels the degradation estimate reads (None: all; tiling.ENCODER_PIXELS)."""

    tile: int | str | None
    tile_pad: int = 10
    tile_batch: int = 1
    memory: MemoryModel | None = None
    max_memory: int | None = None
    speed: tuple[float, float] | None = None
    encoder_pixels: int | None = ENCODER_PIXELS


def choose_tile(plan: Plan, px: Pixels, runner: TileRunner, device: torch.device) -> int | None:
    """The tile for one image: plan.tile, or for "auto" `plan_tile` under the budget (the default budget
    from the machine's free memory, `probe.available_bytes`)."""
    if plan.tile != "auto":
        return plan.tile
    H, W = px.rgb.shape[:2]
    fixed = image_bytes(H, W, runner.scale, px.rgb.dtype.itemsize, px.grayscale, px.alpha is not None)
    host_default = default_budget("cpu", probe.available_bytes(torch.device("cpu")), fixed)
    if device.type == "cuda":
        budget = plan.max_memory or default_budget("cuda", probe.available_bytes(device))
        host_budget = host_default
    else:
        budget, host_budget = plan.max_memory or host_default, None
    return plan_tile(
        plan.memory,
        (H, W),
        runner.scale,
        plan.tile_pad,
        runner.encoder_radius,
        budget,
        fixed,
        tile_batch=plan.tile_batch,
        host_budget=host_budget,
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, or a CPU allocator that raises)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom)


def upscale_pixels(
    runner: TileRunner,
    px: Pixels,
    plan: Plan,
    device: torch.device,
    say: Callable[[str], None],
    progress: bool = True,
    degradation: torch.Tensor | None = None,
) -> Pixels:
    """Super-resolve decoded `px` with a TileRunner into a new Pixels of the same bit depth.

    Tiles as `plan` says; a tile (or whole image) that runs out of memory is retried in half-size tiles.
    `say` prints a line (the tile choice, a retry); `progress` shows labelled stage bars with the image's
    ETA. `degradation`: a ready D (1, ...) used instead of the image's own estimate (all tiles share it).
    Raises MemoryError (budget below the image's arrays) or RuntimeError (non-finite network output).
    """
    reuse_freed_memory()  # before the planner reads the headroom (the allocator policy decides what is free)
    s = runner.scale
    H, W = px.rgb.shape[:2]
    tile = choose_tile(plan, px, runner, device)
    lr = pixels_to_tensor(px)[None]
    out = np.empty((s * H, s * W, 1 if px.grayscale else 3), px.rgb.dtype)
    if plan.tile == "auto":
        steps = sr_steps(runner, (H, W), tile, plan.tile_pad)
        say(f"  {W}x{H}: " + ("whole image" if steps == 1 else f"tile {tile}, {steps} tiles"))
    while True:
        sink = ArraySink(out, px.grayscale)
        eta = None
        if plan.speed is not None:
            work = work_plan(
                (H, W),
                tile,
                plan.tile_pad,
                runner.encoder_radius,
                plan.tile_batch,
                degradation is None,
                plan.encoder_pixels,
            )
            eta = Eta(work, {ENCODE: plan.speed[0], RESTORE: plan.speed[1]})
        bars = TileBars(eta, enabled=progress)
        try:
            upscale_stream(
                runner,
                lr,
                sink,
                tile,
                plan.tile_pad,
                plan.tile_batch,
                degradation,
                None,
                bars,
                plan.encoder_pixels,
            )
            break
        except Exception as exc:
            if not is_out_of_memory(exc) or (tile is not None and tile <= MIN_RETRY_TILE):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            tile = max((max(H, W) if tile is None else tile) // 2, MIN_RETRY_TILE)
            say(f"  out of memory; retrying with --tile {tile}")
        finally:
            bars.close()
    if not sink.finite:
        raise RuntimeError(
            "the network produced NaN/Inf (float16 overflow?); run again with --precision fp32"
        )
    del lr
    alpha = None if px.alpha is None else upscale_alpha(px.alpha, s)
    return Pixels(out, alpha, px.grayscale, px.bits, px.format, px.icc_profile)
