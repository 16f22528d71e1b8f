"""With no KDSR_CPU_ISA, the CPU extension runs the widest instruction set the CPU has (csrc/idr_ddc_cpu.cpp).

The expected ISA comes from the CPU's flags in /proc/cpuinfo (the same AVX-512 / AVX2 feature sets the
extension checks), the ISA in use from the extension's own query, in a fresh process with KDSR_CPU_ISA
removed from the environment (the choice is made once per process).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from backend_cases import expected_backends

REPO = Path(__file__).resolve().parents[1]
WIDEST_FIRST = (
    ("avx512", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
    ("avx2", {"avx2", "fma"}),
    ("sse2", {"sse2"}),
)
QUERY = (
    "from kdsr_kernels import _build\n"
    "ext, reason = _build.load_extension('cpu')\n"
    "print('ISA', ext.isa() if ext is not None else 'unavailable: ' + str(reason))\n"
)


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    return {
        f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()
    }


@pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"} or not Path("/proc/cpuinfo").exists(),
    reason="the ISA choice is x86-64 only, and the CPU flags are read from /proc/cpuinfo",
)
@pytest.mark.skipif("cpu" not in expected_backends("cpu"), reason="no C++ compiler: no cpu extension")
def test_default_isa_is_the_widest_the_cpu_supports():
    flags = _cpu_flags()
    want = next(name for name, needs in WIDEST_FIRST if needs <= flags)
    env = {k: v for k, v in os.environ.items() if k != "KDSR_CPU_ISA"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", QUERY], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    got = result.stdout.split("ISA ", 1)[1].strip()
    assert got == want, f"no KDSR_CPU_ISA set, the CPU has {want}, but the kernels run {got}"
