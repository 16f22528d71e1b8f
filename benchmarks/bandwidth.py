"""Roofline floors for the IDR-DDC benchmarks: bytes a pass must move, this machine's copy bandwidth.

The floor of a pass is (minimal bytes it moves: every tensor read once, written once) / (copy bandwidth of
this device, counting read + write bytes, measured in the same run). IDR-DDC is memory-bound for k <= 5
(kernel-design.md §4), so "distance to the floor" = measured time / floor time says how much is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PASSES = ("fwd", "bwd", "fwd+bwd")


def pass_bytes(shape: tuple[int, int, int, int], k: int, dtype: torch.dtype, pass_: str, act: bool) -> int:
    """Minimal bytes moved by one pass of IDR-DDC on x of `shape` with k x k kernels.

    fwd: read x, w; write y. Fused bwd: read grad_out, x, w (+ the saved output y with the fused LeakyReLU);
    write grad_x, grad_w. fwd+bwd: both.
    """
    B, C, H, W = shape
    elem = torch.empty((), dtype=dtype).element_size()
    plane = B * C * H * W * elem
    weights = B * C * k * k * elem
    fwd = 2 * plane + weights
    bwd = (4 if act else 3) * plane + 2 * weights
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_]


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA launches are asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_buffers(nbytes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst) float32 buffers whose copy `dst.copy_(src)` moves `nbytes` (read + write)."""
    src = torch.rand(max(1, nbytes // 8), device=device)
    return src, torch.empty_like(src)


@dataclass
class Row:
    """One benchmark result: median seconds of `impl` for `pass_` at `shape` on `device`."""

    device: str
    shape: str
    pass_: str
    impl: str
    median_s: float
    bytes_moved: int


@dataclass
class Results:
    """Collected by the IDR-DDC benchmarks, summarised at the end of the session (benchmarks/conftest.py).

    The "memcpy" row of each (device, shape, pass) copies as many bytes as the pass must move: its time is
    the floor of that pass on this machine, measured in the same run.
    """

    rows: list[Row] = field(default_factory=list)

    def markdown(self) -> str:
        """Markdown table: median ms, GB/s, floor ms (memcpy row), distance to it, speed-up vs reference."""
        if not self.rows:
            return ""
        lines = [
            "| device | shape | pass | impl | median ms | GB/s | floor ms | x floor | x vs reference |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        key = lambda r: (r.device, r.shape, r.pass_)  # noqa: E731
        floor = {key(r): r.median_s for r in self.rows if r.impl == "memcpy"}
        reference = {key(r): r.median_s for r in self.rows if r.impl == "reference"}
        for r in sorted(self.rows, key=lambda r: (*key(r), r.impl != "memcpy", r.median_s)):
            floor_s = floor.get(key(r))
            ref = reference.get(key(r))
            lines.append(
                f"| {r.device} | {r.shape} | {r.pass_} | {r.impl} | {r.median_s * 1e3:.3f} | "
                f"{r.bytes_moved / r.median_s / 1e9:.1f} | "
                + (f"{floor_s * 1e3:.3f} | {r.median_s / floor_s:.2f} | " if floor_s else "- | - | ")
                + (f"{ref / r.median_s:.2f} |" if ref else "- |")
            )
        return "\n".join(lines)


RESULTS = Results()
