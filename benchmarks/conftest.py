"""Benchmark-wide conditions, identical for every backend and every benchmark file in this directory.

* CPU threads: KDSR_BENCH_THREADS (default: all cores), set here once with torch.set_num_threads.
* Allocator: glibc serves tensors over 32 MB (and, before its threshold adapts, over 128 KB) with fresh
  mmap() pages, so every allocation page-faults (kernel-design.md §5c: that made x.clone() 6x and the
  reference 3-4x slower). Unless KDSR_BENCH_MALLOC=default, the mmap and trim thresholds are raised with
  mallopt() at start-up, so freed buffers are reused by every implementation alike.
* Quick by default: `pytest benchmarks/ --benchmark-only` runs the QUICK subset (8 of 46; docs/cli.md has
  what was measured); `--full` (or KDSR_BENCH_FULL=1) runs all 46: more than 330 s and 7.3 GB peak RSS
  (issue 26's run, 27 of 46 done at 330 s). Naming a file or a test runs what is named, unfiltered.
* Summary: the IDR-DDC benchmarks (test_bench_idr_ddc.py) print a Markdown table at the end of the session:
  median ms, GB/s, the floor (a memcpy of as many bytes, timed in the same run), distance to it, speed-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import bandwidth` from the benchmark files

THREADS = int(os.environ.get("KDSR_BENCH_THREADS", str(os.cpu_count() or 1)))
torch.set_num_threads(THREADS)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _raise_malloc_thresholds() -> str:
    if os.environ.get("KDSR_BENCH_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return "default"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        ok = False
    raised = "mmap/trim thresholds raised (buffers reused, no page faults)"
    return raised if ok else "default (mallopt failed)"


MALLOC = _raise_malloc_thresholds()


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The quick default: one of each kind, small shapes (dispatch overhead, the inference IDR-DDC forward,
# the tiny student's upscale, the batched real-world degradations).
QUICK = (
    "test_bench_dispatch.py::",
    "test_bench_idr_ddc.py::test_bench_idr_ddc[infer-fwd-",
    "test_bench_inference.py::test_bench_inference_paths[tiny-student",
    "test_bench_realworld.py::test_bench_realworld_jpeg[batched]",
    "test_bench_realworld.py::test_bench_realworld_poisson[batched]",
)


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="kdsr benchmarks: run all of them (default for the benchmarks/ folder: the quick subset)",
    )


def _full(config) -> bool:
    if config.getoption("--full") or os.environ.get("KDSR_BENCH_FULL") == "1":
        return True
    return any(not Path(arg.split("::")[0]).is_dir() for arg in config.args)  # a file or test was named


def pytest_collection_modifyitems(config, items):
    if _full(config):
        return
    keep = [item for item in items if any(q in item.nodeid for q in QUICK)]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config):
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    lines = [
        f"kdsr benchmarks: torch {torch.__version__}, CPU {cpu_model()} ({os.cpu_count()} logical cores), "
        f"threads {torch.get_num_threads()}, GPU {gpu}",
        f"kdsr benchmarks: malloc {MALLOC}",
        "kdsr benchmarks: " + ("full run" if _full(config) else "quick subset (--full runs all)"),
    ]
    if os.environ.get("KDSR_POISON_OUTPUTS") == "1":
        lines.append("kdsr benchmarks: WARNING KDSR_POISON_OUTPUTS=1 (NaN-filled outputs) slows backends")
    try:
        load = os.getloadavg()[0]
        lines.append(f"kdsr benchmarks: load average {load:.2f} at start (timings are only clean when ~0)")
    except OSError:
        pass
    return lines


def pytest_terminal_summary(terminalreporter):
    from bandwidth import RESULTS

    table = RESULTS.markdown()
    if table:
        terminalreporter.section("IDR-DDC: time vs memcpy floor (Markdown)")
        terminalreporter.write_line(table)
        try:
            terminalreporter.write_line(f"load average at the end: {os.getloadavg()[0]:.2f}")
        except OSError:
            pass
