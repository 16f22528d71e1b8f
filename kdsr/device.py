"""The one place a device name ("auto", "cpu", "cuda", "cuda:N") becomes a torch.device.

Every command (`--device`) and the training config (`device:`) go through `pick_device`, so the names
accepted and the error messages are the same everywhere.
"""

from __future__ import annotations

import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device name that is malformed or not usable on this machine; the message says what to use."""


def pick_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """Map a device name to a torch.device.

    Args:
        name: "auto" (or None): CUDA when available, else the CPU; "cpu"; "cuda" (this process's GPU:
            cuda:`local_rank`, as torchrun assigns); "cuda:N".
        local_rank: the GPU index "cuda"/"auto" mean under DDP (torchrun's LOCAL_RANK); 0 otherwise.

    Raises:
        DeviceError: the name is not one of the above, or names a GPU this machine does not have.
    """
    text = "auto" if name is None else str(name).strip()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"device {name!r} is not a device name; use {DEVICE_NAMES}") from exc
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise DeviceError(f"device {name!r} is not supported; use {DEVICE_NAMES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available here; use cpu")
    index = local_rank if device.index is None else device.index
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise DeviceError(f"device cuda:{index} does not exist: this machine has {count} GPU(s)")
    return torch.device("cuda", index)


# -- allocator ---------------------------------------------------------------------------------------------
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_DEFAULT_THRESHOLD = 128 * 1024  # glibc's initial mmap and trim thresholds
MALLOC_ENV = "KDSR_MALLOC"
_malloc_state: str | None = None


def _address_space_capped() -> bool:
    """True when this process has a finite RLIMIT_AS (`ulimit -v`)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return soft != resource.RLIM_INFINITY


def _libc():
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def reuse_freed_memory(threshold: int = 1 << 30) -> str:
    """Make glibc keep freed tensor buffers for reuse instead of unmapping them (Linux; idempotent).

    glibc serves allocations over its mmap threshold (128 KB, adapting up to 32 MB) with fresh mmap() pages
    and unmaps them on free, so every large activation of every tile page-faults again (issue 24: 157 s of
    system time in a 12 MP upscale). Raising the mmap and trim thresholds to `threshold` bytes lets freed
    buffers be reused: the same numbers, fewer page faults; memory freed stays mapped to the process (peak
    RSS is unchanged, RSS after the peak does not shrink; `retained_free_bytes` counts it). Not under a finite
    RLIMIT_AS, where the address space is the limit and freed memory must go back: a call that finds one
    restores glibc's defaults and trims the heap. KDSR_MALLOC=default skips it.

    Returns what is in force: "raised", "default" (skipped: KDSR_MALLOC, an address-space limit, or not
    glibc/Linux) or "failed".
    """
    global _malloc_state
    import os
    import sys

    if _malloc_state == "raised" and _address_space_capped():
        try:
            libc = _libc()
            libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
            libc.malloc_trim(0)
        except (OSError, AttributeError):
            pass
        _malloc_state = "default"
    if _malloc_state is not None:
        return _malloc_state
    if (
        os.environ.get(MALLOC_ENV, "") == "default"
        or not sys.platform.startswith("linux")
        or _address_space_capped()
    ):
        _malloc_state = "default"
        return _malloc_state
    try:
        libc = _libc()
        ok = (
            libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1
        )
    except (OSError, AttributeError):
        ok = False
    _malloc_state = "raised" if ok else "failed"
    return _malloc_state


def retained_free_bytes() -> int:
    """Bytes glibc holds freed but mapped in this process (mallinfo2: free chunks of every arena) while
    `reuse_freed_memory` is in force, else 0 (also where unknown). They stay in the resident set after a large
    image, yet the next allocations reuse them first, so the memory planner counts them as available."""
    import sys

    if _malloc_state != "raised" or not sys.platform.startswith("linux"):
        return 0
    try:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [  # noqa: RUF012 - the ctypes layout of glibc's struct mallinfo2
                (name, ctypes.c_size_t)
                for name in (
                    "arena",
                    "ordblks",
                    "smblks",
                    "hblks",
                    "hblkhd",
                    "usmblks",
                    "fsmblks",
                    "uordblks",
                    "fordblks",
                    "keepcost",
                )
            ]

        libc = _libc()
        libc.mallinfo2.restype = MallInfo2
        return int(libc.mallinfo2().fordblks)
    except (OSError, AttributeError):
        return 0


# -- native low precision ----------------------------------------------------------------------------------
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo "flags"); empty where unreadable."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_native_bf16(device: torch.device | str = "cpu", cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when `device` computes bfloat16 natively, detected at run time, never assumed.

    CPU: the kernel reports AVX-512 BF16 or AMX-BF16 (`cpu_flags`) and oneDNN agrees it has a bf16 path
    (torch.ops.mkldnn._is_mkldnn_bf16_supported); an AVX2-only CPU emulates bf16 and gets False. CUDA:
    compute capability >= 8.0 (torch.cuda.is_bf16_supported).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or not (cpu_flags(cpuinfo) & set(NATIVE_BF16_FLAGS)):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def auto_precision(device: torch.device | str = "cpu", cpuinfo: str = "/proc/cpuinfo") -> str:
    """What `--precision auto` should run on `device`: "bf16" on a CPU with native bf16 (measured faster
    there: benchmarks/test_bench_roofline.py), "fp16" on CUDA, else "fp32"."""
    device = torch.device(device)
    if device.type == "cuda":
        return "fp16"
    return "bf16" if has_native_bf16(device, cpuinfo) else "fp32"
