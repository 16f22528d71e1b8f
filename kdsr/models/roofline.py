"""How close a KDSR network runs to its machine's limit: MAC/s against a dense 3x3 conv, memory-bound share.

    result = roofline(kdsr.load("iso-x4-student"), (256, 256), precision="fp32", rounds=7)
    print(result.summary())

The yardstick is the best dense 3x3 conv with the network's channel count (C -> C, 1 x C x H x W, NCHW or
channels_last, whichever is faster) on the same device, threads and run. Timing rule: `rounds` interleaved
rounds; each round times one network forward, then the conv `conv_repeat` (10) times back to back (per-conv
time = that / 10); each side keeps its best round. The ratio is (network MACs / network s) / (conv MACs /
conv s), MACs counted as spec §7 does (`count_macs`: conv and linear modules, encoder included).

`op_census` runs one forward under a dispatch mode and attributes each ATen op's time and bytes (inputs read
+ outputs written) to "compute" (dense convs, matmuls) or "memory" (everything else: IDR-DDC, adds,
PixelShuffle, activations, casts, layout copies); `copy_bandwidth` measures `dst.copy_(src)` so the
memory-bound ops' bytes can be set against the floor they would take at copy speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .complexity import count_macs

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CONV_REPEAT = 10
COMPUTE_OPS = ("aten.convolution", "aten.mkldnn_convolution", "aten.addmm", "aten.mm", "aten.bmm")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def student_forward(model: nn.Module, precision: str = "fp32") -> Callable[[torch.Tensor], torch.Tensor]:
    """lr (B, 3, H, W) -> sr, the way `kdsr upscale` runs a student at `precision` (untiled).

    Input layout as `kdsr.inference.runners.torch_runner`: channels_last on the CPU and in low precision,
    contiguous NCHW for CUDA float32. "fp32": the model's own dtype. "bf16" / "fp16": encoder and SR body
    under autocast to that dtype, the residual stream / head / body conv / tail in the model's dtype.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    low = PRECISIONS[precision]

    def forward(lr: torch.Tensor) -> torch.Tensor:
        if low is not None or lr.device.type == "cpu":
            lr = lr.contiguous(memory_format=torch.channels_last)
        if low is None:
            return model(lr)
        with torch.autocast(lr.device.type, dtype=low):
            d, _ = model.encoder(lr)
        return model.sr_net(lr, d.to(lr.dtype), body_dtype=low)

    return forward


def dense_conv_calls(
    n_feats: int, size: tuple[int, int], precision: str, device: torch.device
) -> dict[str, Callable[[], torch.Tensor]]:
    """{"nchw", "channels_last"} -> a zero-argument C -> C 3x3 conv (bias, padding 1) on 1 x C x H x W."""
    dtype = PRECISIONS[precision] or torch.float32
    conv = nn.Conv2d(n_feats, n_feats, 3, padding=1).to(device=device, dtype=dtype).eval()
    x = torch.randn(1, n_feats, *size, device=device, dtype=dtype)
    conv_cl = nn.Conv2d(n_feats, n_feats, 3, padding=1).to(device=device, dtype=dtype).eval()
    conv_cl = conv_cl.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    return {"nchw": lambda: conv(x), "channels_last": lambda: conv_cl(x_cl)}


@dataclass
class Roofline:
    """Best-of-rounds times of the network and of its dense-conv yardstick, and what they imply."""

    macs: int  # network MACs per forward (spec §7 count)
    network_s: float  # best round
    conv_macs: int  # one C -> C 3x3 conv
    conv_s: dict[str, float]  # per layout: best round's time per conv
    rounds: int
    conv_repeat: int = CONV_REPEAT
    census: dict[str, float] = field(default_factory=dict)

    @property
    def network_macs_per_s(self) -> float:
        return self.macs / self.network_s

    @property
    def conv_macs_per_s(self) -> float:
        return self.conv_macs / min(self.conv_s.values())

    @property
    def ratio(self) -> float:
        """Network MAC/s over the best dense conv's MAC/s (1.0 = the network runs at dense-conv speed)."""
        return self.network_macs_per_s / self.conv_macs_per_s

    def summary(self) -> str:
        """One line: GMAC/s of both, the ratio and the timing rule."""
        best = min(self.conv_s, key=self.conv_s.get)
        return (
            f"network {self.network_macs_per_s / 1e9:.1f} GMAC/s ({self.network_s * 1e3:.1f} ms), dense 3x3 "
            f"conv {self.conv_macs_per_s / 1e9:.1f} GMAC/s ({best}), ratio {self.ratio:.2f} "
            f"(best of {self.rounds} interleaved rounds, conv timed {self.conv_repeat} at a time)"
        )


def time_network_vs_conv(
    network: Callable[[], object],
    convs: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device,
    conv_repeat: int = CONV_REPEAT,
    warmup: int = 1,
) -> tuple[float, dict[str, float]]:
    """(best network seconds, {layout: best seconds per conv}) over `rounds` interleaved rounds.

    Each round: one network call, then for each conv layout `conv_repeat` calls timed together. `warmup`
    untimed rounds first. Runs under torch.no_grad.
    """
    best_net = float("inf")
    best_conv = {name: float("inf") for name in convs}
    with torch.no_grad():
        for r in range(warmup + rounds):
            _sync(device)
            t0 = time.perf_counter()
            network()
            _sync(device)
            t_net = time.perf_counter() - t0
            t_conv = {}
            for name, conv in convs.items():
                t0 = time.perf_counter()
                for _ in range(conv_repeat):
                    conv()
                _sync(device)
                t_conv[name] = (time.perf_counter() - t0) / conv_repeat
            if r >= warmup:
                best_net = min(best_net, t_net)
                best_conv = {n: min(best_conv[n], t) for n, t in t_conv.items()}
    return best_net, best_conv


def roofline(
    model: nn.Module,
    lr_size: tuple[int, int],
    precision: str = "fp32",
    rounds: int = 7,
    batch: int = 1,
    seed: int = 0,
) -> Roofline:
    """Time a student (`model`, on its device) against its dense-conv yardstick, interleaved (module doc)."""
    param = next(model.parameters())
    device = param.device
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, *lr_size, generator=generator).to(device=device, dtype=param.dtype)
    forward = student_forward(model, precision)
    convs = dense_conv_calls(model.n_feats, lr_size, precision, device)
    net_s, conv_s = time_network_vs_conv(lambda: forward(lr), convs, rounds, device)
    conv_macs = model.n_feats * model.n_feats * 9 * lr_size[0] * lr_size[1]
    macs = count_macs(model, lr_size, batch)["total"]
    return Roofline(macs=macs, network_s=net_s, conv_macs=conv_macs * batch, conv_s=conv_s, rounds=rounds)


# -- where the time goes -----------------------------------------------------------------------------------
def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _is_compute(name: str, args) -> bool:
    if not name.startswith(COMPUTE_OPS):
        return False
    if "convolution" in name:  # a grouped (depthwise) conv is memory-bound
        groups = args[8] if len(args) > 8 else 1
        return groups == 1
    return True


class OpCensus(TorchDispatchMode):
    """Time and bytes per ATen op (synchronous timing: CUDA is synchronised around every op)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.ops: dict[str, dict[str, float]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket.__name__)
        qualified = f"{func.namespace}.{name}"
        _sync(self.device)
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        _sync(self.device)
        elapsed = time.perf_counter() - t0
        views = getattr(func, "is_view", False)
        nbytes = 0
        if not views:
            seen = set()
            for t in _tensors((args, kwargs, out)):
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape)
                if key not in seen:
                    seen.add(key)
                    nbytes += t.numel() * t.element_size()
        entry = self.ops.setdefault(qualified, {"s": 0.0, "bytes": 0, "calls": 0, "compute": 0})
        entry["s"] += elapsed
        entry["bytes"] += nbytes
        entry["calls"] += 1
        entry["compute"] = int(_is_compute(qualified, args))
        return out


def op_census(
    model: nn.Module, lr_size: tuple[int, int], precision: str = "fp32", batch: int = 1, repeats: int = 3
) -> dict[str, dict[str, float]]:
    """{aten op: {"s", "bytes", "calls", "compute"}} of one forward (best of `repeats` forwards per op)."""
    param = next(model.parameters())
    lr = torch.rand(batch, 3, *lr_size).to(device=param.device, dtype=param.dtype)
    forward = student_forward(model, precision)
    best: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        forward(lr)
        for _ in range(repeats):
            census = OpCensus(param.device)
            with census:
                forward(lr)
            for name, entry in census.ops.items():
                if name not in best or entry["s"] < best[name]["s"]:
                    best[name] = entry
    return best


def copy_bandwidth(nbytes: int, device: torch.device, repeats: int = 20) -> float:
    """Bytes per second (read + write) of `dst.copy_(src)` moving `nbytes` in total, best of `repeats`."""
    src = torch.rand(max(1, nbytes // 8), device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * src.element_size() / best


def memory_bound_share(census: dict[str, dict[str, float]], bandwidth: float) -> dict[str, float]:
    """Share of op time in memory-bound ops, their bytes, and their time over the copy-speed floor."""
    total = sum(e["s"] for e in census.values())
    memory = [e for e in census.values() if not e["compute"]]
    mem_s = sum(e["s"] for e in memory)
    mem_bytes = sum(e["bytes"] for e in memory)
    floor_s = mem_bytes / bandwidth
    return {
        "op_s": total,
        "memory_s": mem_s,
        "memory_share": mem_s / total if total else 0.0,
        "memory_bytes": mem_bytes,
        "floor_s": floor_s,
        "x_floor": mem_s / floor_s if floor_s else float("nan"),
        "bandwidth": bandwidth,
    }
