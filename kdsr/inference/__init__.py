"""Inference: tiled upscaling with one degradation estimate per image, its memory model, and files.

    sr = kdsr.upscale(model, lr, tile=256)           # kdsr.inference.tiling.upscale
    tile = plan_tile(mem, (H, W), 4, 10, 6, budget)  # kdsr.inference.memory (pure sizes)
    mem = measure_memory(runner, device)             # kdsr.inference.probe (reads the machine)
    result = upscale_pixels(runner, px, plan, ...)   # kdsr.inference.pixels (8/16-bit, alpha, OOM retry)

Modules: tiling (windows, blending, streaming), memory (buffer sizes, budgets, tile planning), probe (free
memory, measured peaks and speeds), pixels (decoded images in and out), progress (stages and ETA), catalog
(the shipped models and the default per job).
"""

from .tiling import (
    ENCODE,
    RESTORE,
    TileRunner,
    encode_image,
    resolve_precision,
    runner_for,
    upscale,
    upscale_stream,
)

__all__ = [
    "ENCODE",
    "RESTORE",
    "TileRunner",
    "encode_image",
    "resolve_precision",
    "runner_for",
    "upscale",
    "upscale_stream",
]
