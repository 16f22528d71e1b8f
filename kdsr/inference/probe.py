"""What the machine tells us: free memory, and a model's measured peak bytes (and speed) per LR pixel.

    free = available_bytes(device)                     # fed to kdsr.inference.memory.default_budget
    mem = measure_memory(runner, device)               # a MemoryModel, once per model / precision / device
    speed = measure_speed(runner)                      # seconds per LR pixel of encoder and SR (ETA weights)

What is free: on CPU the smallest of /proc/meminfo MemAvailable, the cgroup v2 limit minus usage, and the
RLIMIT_AS headroom (limit minus this process's virtual size), plus what the allocator holds freed for reuse
(kdsr.device.retained_free_bytes); on CUDA torch.cuda.mem_get_info's free bytes.

How much a model needs: a probe forward on a PROBE x PROBE window with memory tracking -- torch's profiler
(allocator-level allocation/free events, so it sees the im2col buffers of CPU convolutions that a tensor-level
count misses) on CPU, torch.cuda.max_memory_allocated on CUDA, the resident-set high-water mark for
onnxruntime (its arena allocator is invisible to torch) -- divided by the window's pixels and multiplied by a
safety factor for allocator overhead and page rounding (CPU_SAFETY / CUDA_SAFETY / RSS_SAFETY; a test checks
the result bounds a real run's resident-set growth). bf16 on a CPU without native bf16 gets
EMULATED_BF16_SAFETY: oneDNN's emulation keeps conversion buffers outside torch's allocator.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..device import retained_free_bytes
from .memory import MemoryModel

PROBE = 64
# The first call's resident-set growth with the reuse allocator (kdsr.device.reuse_freed_memory) reached 1.63x
# the profiler's peak (fp32 encoder, 192x192 window, AVX2 EPYC): fragmentation of the first pass.
CPU_SAFETY = 1.8
# bf16 where oneDNN emulates it (no AVX-512 BF16 / AMX; `--precision auto` never picks it there): the first
# 192x192 encoder call grew the RSS by 2.9x the profiler's peak (same machine), buffers torch does not see.
EMULATED_BF16_SAFETY = 3.5
CUDA_SAFETY = 1.15
RSS_SAFETY = 2.0


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_headroom() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def _status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _address_space_headroom() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = _status_bytes("VmSize")
    return None if used is None else max(soft - used, 0)


def available_bytes(device: torch.device) -> int | None:
    """Bytes this process can still allocate on `device` (None when unknown). See the module docstring."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    known = [_meminfo_available(), _cgroup_headroom(), _address_space_headroom()]
    known = [n for n in known if n is not None]
    return min(known) + retained_free_bytes() if known else None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ side prints two lines per session)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profiled_peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by torch's CPU allocator while `fn()` runs (live at the start count as 0)."""
    from torch.autograd.profiler import profile

    with _quiet_stderr(), profile(profile_memory=True, use_kineto=True) as prof:
        fn()
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def _rss_peak(fn: Callable[[], object]) -> int | None:
    """Growth of this process's resident-set high-water mark during `fn()` (Linux; None elsewhere)."""
    base = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    fn()
    peak = _status_bytes("VmHWM")
    return None if base is None or peak is None else max(peak - base, 0)


def measure_peak(fn: Callable[[], object], how: str, device: torch.device) -> int | None:
    """Peak bytes `fn()` allocates: how = "torch" (profiler on CPU, CUDA allocator stats) or "rss"."""
    if how == "rss":
        return _rss_peak(fn)
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    try:
        return _profiled_peak(fn)
    except RuntimeError:  # a torch build without the profiler: the caller falls back to a large default
        return None


def safety_factor(device: torch.device, how: str = "torch", precision: str = "fp32") -> float:
    """Multiplier applied to a measured peak (allocator overhead, fragmentation, page rounding; onnxruntime's
    arena grows in powers of two, so a window may take up to twice its linear share: RSS_SAFETY; bf16 that
    oneDNN emulates on a CPU without native bf16: EMULATED_BF16_SAFETY)."""
    if how == "rss":
        return RSS_SAFETY
    if device.type == "cuda":
        return CUDA_SAFETY
    if precision == "bf16":
        from kdsr.device import has_native_bf16

        return CPU_SAFETY if has_native_bf16(device) else EMULATED_BF16_SAFETY
    return CPU_SAFETY


def measure_memory(runner, device: torch.device, how: str = "torch") -> MemoryModel:
    """Probe a `TileRunner` on a PROBE-sized window and measure its peak (first calls included: one-off
    caches count, which errs on the safe side; an onnxruntime arena would hide a second call).

    how: "torch" (profiler on CPU / allocator stats on CUDA; a PyTorch model) or "rss" (onnxruntime).
    A probe whose measurement is unavailable gives a deliberately large 64 KiB per pixel.
    """
    n = PROBE
    with torch.no_grad():
        x = runner.to_input(torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0)))
        d = runner.head(runner.features(x).double().mean(dim=(2, 3)))

        def enc() -> None:
            runner.features(x)

        def sr() -> None:
            runner.sr(x, d)

        peaks = [measure_peak(fn, how, device) for fn in (enc, sr)]
    factor = safety_factor(device, how, runner.precision)
    enc_px, sr_px = (65536.0 if p is None else factor * p / (n * n) for p in peaks)
    return MemoryModel(enc_px, sr_px)


def measure_speed(
    runner, clock: Callable[[], float] = time.perf_counter, repeats: int = 2
) -> tuple[float, float]:
    """(encoder, SR) seconds per LR pixel of a `TileRunner`, each the fastest of `repeats` calls on a
    PROBE x PROBE window after one warm-up call: the relative cost of the two stages of an upscale, which
    weights its progress and ETA (the absolute speed is learnt while it runs)."""
    n = PROBE
    with torch.no_grad():
        x = runner.to_input(torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0)))
        d = runner.head(runner.features(x).double().mean(dim=(2, 3)))
        times = []
        for fn in (lambda: runner.features(x), lambda: runner.sr(x, d)):
            fn()
            best = math.inf
            for _ in range(repeats):
                t0 = clock()
                fn()
                best = min(best, clock() - t0)
            times.append(max(best, 1e-12) / (n * n))
    return times[0], times[1]
