"""The memory model of tiled upscaling: pure functions of sizes, with no reading of the machine.

    buffers = StreamBuffers(batch=1, scale=4, win_h=276, win_w=276, width=4000)
    band = torch.zeros(buffers.band)                  # the streamer allocates from these shapes ...
    host = buffers.peak_bytes()                       # ... and the planner counts the same shapes
    budget = default_budget("cpu", free=available_bytes(cpu), fixed=image_bytes(...))
    tile = plan_tile(model, (H, W), 4, 10, 6, budget, fixed)

The machine's free memory and a model's measured peak come from `kdsr.inference.probe`; here they are inputs,
so every number below can be checked by hand. Sizes: `parse_size("2GiB") == 2 * 1024**3`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

FLOAT32 = 4  # bytes per float32 sample
FLUSH_ROWS = 64  # output rows normalised / quantised at a time (bounds the float temporaries of a sink)
FLUSH_TEMPORARIES = 3  # per flushed chunk: the normaliser, the normalised block, the sink's float copy
MIN_AUTO_TILE = 32  # smallest tile `plan_tile` picks (below it the overlap costs more than the tile)
DEFAULT_FRACTION = {"cpu": 0.5, "cuda": 0.8}
DEFAULT_WORK_CAP = 1024**3  # CPU only: at most this much beyond the image's own arrays

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
_UNITS |= {"t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> int:
    """ "2GiB", "800MB", "1.5 GB", "123456" (bytes) -> bytes. Raises ValueError naming the accepted form."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not a memory size; write e.g. 2GiB, 800MB or 1.5GB (B, KB/MB/GB/TB, KiB/MiB/GiB)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    """Bytes -> "1.23 GiB" / "456 MiB"."""
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def default_budget(device_type: str, free: int | None, fixed: int = 0) -> int:
    """The default --max-memory from the machine's `free` bytes (None: unknown): DEFAULT_FRACTION of it; on
    CPU also at most `fixed` (the caller's own arrays) + DEFAULT_WORK_CAP."""
    if device_type != "cuda":
        cap = fixed + DEFAULT_WORK_CAP
        return cap if free is None else min(int(DEFAULT_FRACTION["cpu"] * free), cap)
    if free is None:
        raise ValueError("the free CUDA memory is unknown; give --max-memory")
    return int(DEFAULT_FRACTION["cuda"] * free)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class StreamBuffers:
    """The float32 buffers `upscale_stream` holds while it blends one image (on the image's device).

    The streamer allocates `band` from this shape and flushes FLUSH_ROWS rows at a time; the planner counts
    `peak_bytes()`. batch: images B; scale: s; win_h x win_w: one SR window in LR pixels; width: the image's
    W; tile_batch: windows per model call.
    """

    batch: int
    scale: int
    win_h: int
    win_w: int
    width: int
    tile_batch: int = 1

    @property
    def band(self) -> tuple[int, int, int, int]:
        """(B, 3, s*win_h, s*W): one row of windows, blended (the streamer shifts its tail up by a copy)."""
        return (self.batch, 3, self.scale * self.win_h, self.scale * self.width)

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(tile_batch*B, 3, s*win_h, s*win_w): one model call's output as float32."""
        return (self.tile_batch * self.batch, 3, self.scale * self.win_h, self.scale * self.win_w)

    @property
    def flush(self) -> tuple[int, int, int, int]:
        """(B, 3, FLUSH_ROWS, s*W): one chunk handed to the sink."""
        return (self.batch, 3, FLUSH_ROWS, self.scale * self.width)

    def peak_bytes(self, tiled: bool = True) -> int:
        """Bytes at the peak: band + its shifted tail, the window output + its weighted product, and the flush
        temporaries (`tiled=False`: one window is the whole image, only the sink's flush temporaries)."""
        flush = FLUSH_TEMPORARIES * _numel(self.flush)
        if not tiled:
            return FLOAT32 * flush
        return FLOAT32 * (2 * _numel(self.band) + 2 * _numel(self.window) + flush)


def image_bytes(
    height: int, width: int, scale: int, sample_bytes: int, grayscale: bool = False, alpha: bool = False
) -> int:
    """Host bytes of `kdsr upscale`'s own arrays for one decoded image: the decoded samples, the float32 LR
    tensor, the output array(s), and the writer's copies (rgb + alpha joined; Pillow keeps 4 bytes per RGB
    pixel)."""
    lr_px, sr_px = height * width, scale * scale * height * width
    decoded = lr_px * (3 + alpha) * sample_bytes
    out = sr_px * ((1 if grayscale else 3) + alpha) * sample_bytes
    writer = out * alpha + max(out, 4 * sr_px)
    return decoded + 3 * lr_px * FLOAT32 + out + writer


@dataclass(frozen=True)
class MemoryModel:
    """Measured peak bytes per LR pixel of one window (batch 1): of the encoder's features and of the SR
    network (its (scale^2 * 3) float output included), safety factor applied (`kdsr.inference.probe`); plus a
    constant per window for what a probe misses: a oneDNN convolution of a new shape creates a primitive
    (JIT code, scratchpad) outside torch's allocator -- measured ~6 MB on a 256x256 bf16 encoder window."""

    encoder_per_px: float
    sr_per_px: float
    overhead: int = 16 * 2**20

    def window_bytes(self, kind: str, pixels: int) -> float:
        """Peak bytes of one `kind` ("encoder" / "sr") window of `pixels` LR pixels (batch included)."""
        return self.overhead + (self.encoder_per_px if kind == "encoder" else self.sr_per_px) * pixels


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
    blending buffers (`StreamBuffers`) and the `fixed` bytes of the caller's own arrays.
    host_budget (CUDA): host bytes for `fixed` + the buffers; `budget` is then device memory only.
    Raises MemoryError with a one-line message when even the smallest tile does not fit.
    """
    H, W = image_hw
    shared = host_budget is None

    def cost(tile: int | None) -> tuple[float, float]:
        """(network working set, host arrays + blending buffers) in bytes."""
        if tile is None:
            work = max(mem.window_bytes(k, batch * H * W) for k in ("encoder", "sr"))
            return work, fixed + StreamBuffers(batch, scale, H, W, W).peak_bytes(tiled=False)
        win_h, win_w = min(tile + 2 * tile_pad, H), min(tile + 2 * tile_pad, W)
        enc_h, enc_w = min(tile + 2 * encoder_radius, H), min(tile + 2 * encoder_radius, W)
        work = max(
            mem.window_bytes("encoder", batch * enc_h * enc_w),
            mem.window_bytes("sr", batch * tile_batch * win_h * win_w),
        )
        buffers = StreamBuffers(batch, scale, win_h, win_w, W, tile_batch)
        return work, fixed + buffers.peak_bytes()

    def fits(tile: int | None) -> bool:
        work, host = cost(tile)
        return work + host <= budget if shared else (work <= budget and host <= host_budget)

    if fits(None):
        return None
    lo, hi = MIN_AUTO_TILE, max(H, W)
    if not fits(lo):
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
