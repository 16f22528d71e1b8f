"""Memory budgets for tiled upscaling: what is free, how much a model needs per LR pixel, size strings.

    budget = default_budget(device)                   # bytes `kdsr upscale` may use per image
    need = peak_bytes_per_pixel(runner_fns, device)   # measured once per model / precision / device
    parse_size("2GiB") == 2 * 1024**3

What is free: on CPU the smallest of /proc/meminfo MemAvailable, the cgroup v2 limit minus usage, and the
RLIMIT_AS headroom (limit minus this process's virtual size); on CUDA torch.cuda.mem_get_info's free bytes.
The default budget is DEFAULT_FRACTION of that; on CPU also at most DEFAULT_WORK_CAP beyond the image's own
arrays (decoded input, LR tensor, output array: `fixed`), since larger tiles gain little (at tile 512 the
overlap costs 8%) -- so a 12 MP photo stays within a laptop's memory next to other programs.

How much a model needs: a probe forward on a PROBE x PROBE window with memory tracking -- torch's profiler
(allocator-level allocation/free events, so it sees the im2col buffers of CPU convolutions that a tensor-level
count misses) on CPU, torch.cuda.max_memory_allocated on CUDA, the resident-set high-water mark for
onnxruntime (its arena allocator is invisible to torch) -- divided by the window's pixels and multiplied by a
safety factor for allocator overhead and page rounding (CPU_SAFETY / CUDA_SAFETY / RSS_SAFETY; the test checks
the result bounds a real run's resident-set growth).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

DEFAULT_FRACTION = {"cpu": 0.5, "cuda": 0.8}
DEFAULT_WORK_CAP = 1024**3  # CPU only
PROBE = 64
CPU_SAFETY = 1.25
CUDA_SAFETY = 1.15
RSS_SAFETY = 2.0

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


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
    return min(known) if known else None


def default_budget(device: torch.device, fixed: int = 0) -> int:
    """The default --max-memory: DEFAULT_FRACTION of `available_bytes`; on CPU at most `fixed` (the caller's
    own arrays) + DEFAULT_WORK_CAP."""
    free = available_bytes(device)
    if device.type != "cuda":
        cap = fixed + DEFAULT_WORK_CAP
        return cap if free is None else min(int(DEFAULT_FRACTION["cpu"] * free), cap)
    return int(DEFAULT_FRACTION["cuda"] * free)


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


def safety_factor(device: torch.device, how: str = "torch") -> float:
    """Multiplier applied to a measured peak (allocator overhead, fragmentation, page rounding; onnxruntime's
    arena grows in powers of two, so a window may take up to twice its linear share: RSS_SAFETY)."""
    if how == "rss":
        return RSS_SAFETY
    return CUDA_SAFETY if device.type == "cuda" else CPU_SAFETY
