"""The `cpu` backend's own guarantees, beyond the shared oracle tests in test_idr_ddc.py.

Bitwise-identical results for 1 and 2 threads and across repeated backward runs (grad_w is reduced over
shape-fixed row bands in a fixed order), every instruction-set variant (SSE2 / AVX2 / AVX-512) against the
float64 oracle, gradcheck in float64, and the first-use build / failure reporting of kdsr_kernels._build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kdsr_kernels import _build, ops, reference
from kdsr_kernels import _compiled as cpu_backend

REASON = ops.unavailable_reason("cpu", "cpu")
needs_cpu_ext = pytest.mark.skipif(REASON is not None, reason=f"cpu backend unavailable: {REASON}")
REPO = Path(__file__).resolve().parents[1]


def test_cpu_backend_builds_here():
    """On a machine with a C++ compiler (CI) the extension must be importable or buildable."""
    assert REASON is None, REASON


def _inputs(shape, k, dtype=torch.float32, channels_last=False):
    B, C, H, W = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(B, C, k, k, dtype=dtype) / k
    grad_out = torch.randn(shape, dtype=dtype).contiguous(memory_format=fmt)
    return x, w, grad_out


def _run(x, w, grad_out, slope):
    out = cpu_backend.forward(x, w, slope)
    grad_x, grad_w = cpu_backend.backward(grad_out, x, w, out, slope, True, True)
    return out, grad_x, grad_w


@needs_cpu_ext
def test_openmp_threads_follow_torch():
    ext, _ = _build.load_extension("cpu")
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert ext.openmp_max_threads() == n  # one OpenMP runtime shared with torch
    finally:
        torch.set_num_threads(before)
    assert ext.isa() in {"avx512", "avx2", "sse2", "baseline"}


@needs_cpu_ext
@pytest.mark.parametrize(
    "shape,k,dtype,channels_last",
    [
        ((4, 8, 64, 64), 3, torch.float32, False),  # one band per plane (training-like)
        ((1, 3, 120, 320), 5, torch.float32, False),  # several row bands per plane (inference-like)
        ((2, 2, 70, 300), 3, torch.bfloat16, False),
        ((2, 64, 64, 64), 3, torch.float32, True),  # NHWC: 8 bands per sample
        ((1, 40, 50, 70), 7, torch.bfloat16, True),  # NHWC, partial channel vector, several bands
    ],
)
def test_one_and_two_threads_bitwise_equal(shape, k, dtype, channels_last):
    x, w, grad_out = _inputs(shape, k, dtype, channels_last)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _run(x, w, grad_out, 0.1)
        torch.set_num_threads(2)
        double = _run(x, w, grad_out, 0.1)
    finally:
        torch.set_num_threads(before)
    for a, b, name in zip(single, double, ("out", "grad_x", "grad_w"), strict=True):
        assert torch.equal(a, b), f"{name} differs between 1 and 2 threads"


@needs_cpu_ext
@pytest.mark.parametrize("channels_last", [False, True])
def test_repeated_backward_bitwise_equal(channels_last):
    x, w, grad_out = _inputs((2, 4, 100, 330), 3, channels_last=channels_last)
    out = cpu_backend.forward(x, w, 0.2)
    first = cpu_backend.backward(grad_out, x, w, out, 0.2, True, True)
    for _ in range(3):
        again = cpu_backend.backward(grad_out, x, w, out, 0.2, True, True)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@needs_cpu_ext
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradients_only_where_needed(channels_last):
    x, w, grad_out = _inputs((1, 20, 9, 11), 3, channels_last=channels_last)
    out = cpu_backend.forward(x, w, None)
    gx_only = cpu_backend.backward(grad_out, x, w, out, None, True, False)
    gw_only = cpu_backend.backward(grad_out, x, w, out, None, False, True)
    both = cpu_backend.backward(grad_out, x, w, out, None, True, True)
    assert gx_only[1] is None and gw_only[0] is None
    assert torch.equal(gx_only[0], both[0]) and torch.equal(gw_only[1], both[1])


@needs_cpu_ext
def test_gradcheck_float64():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for slope in (None, 0.1):
        assert torch.autograd.gradcheck(
            lambda a, b, s=slope: ops.idr_ddc(a, b, negative_slope=s, backend="cpu"), (x, w)
        )


_ISA_SCRIPT = textwrap.dedent(
    """
    import torch
    from kdsr_kernels import _build, reference
    from kdsr_kernels import _compiled as cpu_backend
    ext, reason = _build.load_extension("cpu")
    assert ext is not None, reason
    print("ISA", ext.isa())
    torch.manual_seed(0)
    cases = [((2, 3, 17, 45), 3, 0.1), ((1, 2, 70, 333), 7, None), ((1, 1, 5, 2), 5, 0.3)]
    cases.append(((2, 37, 20, 21), 3, 0.1))
    for shape, k, slope in cases:
        B, C, H, W = shape
        x, g = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        w = torch.randn(B, C, k, k, dtype=torch.float64)
        y_ref = reference.forward(x, w, slope)
        gx_ref, gw_ref = reference.backward(g, x, w, y_ref, slope, True, True)
        for dtype, tol in [(torch.float32, 1e-5), (torch.float64, 1e-12)]:
            for fmt in (torch.contiguous_format, torch.channels_last):
                xd, gd = (t.to(dtype).contiguous(memory_format=fmt) for t in (x, g))
                y = cpu_backend.forward(xd, w.to(dtype), slope)
                gx, gw = cpu_backend.backward(gd, xd, w.to(dtype), y, slope, True, True)
                for got, want in [(y, y_ref), (gx, gx_ref), (gw, gw_ref)]:
                    err = ((got.double() - want).norm() / want.norm()).item()
                    assert err < tol, (shape, k, dtype, fmt, err)
    print("OK")
    """
)


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {
        flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()
    }


def _supports(isa: str, flags: set[str]) -> bool:
    """What csrc/idr_ddc_cpu.cpp requires for each variant (x86-64 always has SSE2)."""
    required = {
        "sse2": {"sse2"},
        "avx2": {"avx2", "fma"},
        "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
    }
    return required[isa] <= flags


@needs_cpu_ext
@pytest.mark.parametrize("isa", ["sse2", "avx2", "avx512"])
def test_every_instruction_set_matches_oracle(isa):
    """Each compiled variant (a process runs only the widest) against the float64 oracle, in a subprocess."""
    env = {**os.environ, "KDSR_CPU_ISA": isa, "OMP_NUM_THREADS": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
    ran = result.stdout.split("ISA ")[1].split()[0]
    flags = _cpu_flags()
    if not flags:
        pytest.skip("cannot read the CPU's feature flags (/proc/cpuinfo) to know which ISA must run")
    if _supports(isa, flags):
        assert ran == isa, f"KDSR_CPU_ISA={isa} on a CPU that supports it, but the kernels ran {ran}"
    else:
        order = ["sse2", "avx2", "avx512"]
        assert ran in order[: order.index(isa)], f"{isa} is not supported by this CPU, yet {ran} ran"


@needs_cpu_ext
def test_workspace_is_checked():
    ext, _ = _build.load_extension("cpu")
    x, w, grad_out = _inputs((1, 1, 8, 8), 3)
    bad = torch.empty(3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="workspace"):
        ext.backward(grad_out, x, w, None, None, torch.empty_like(x), torch.empty_like(w), bad)


def test_missing_module_and_failed_build_give_actionable_reason(monkeypatch):
    """A missing compiled module triggers one build; a failed build becomes the backend's reason."""

    def fail_build(*args, **kwargs):
        raise RuntimeError("Error building extension: g++: fatal error: no input files (simulated)")

    monkeypatch.setenv("KDSR_JIT", "force")
    monkeypatch.setattr(_build, "_cache", {})
    monkeypatch.setattr(_build, "_jit_build", fail_build)
    module, reason = _build.load_extension("cpu")
    assert module is None
    assert "simulated" in reason and "compiler" in reason

    monkeypatch.setenv("KDSR_JIT", "off")
    monkeypatch.setattr(_build, "_cache", {})
    installed, *rest = _build.EXTENSIONS["cpu"]
    monkeypatch.setitem(_build.EXTENSIONS, "cpu", ("kdsr_kernels._C_missing_simulated", *rest))
    module, reason = _build.load_extension("cpu")
    assert module is None and "KDSR_JIT=off" in reason and "pip install" in reason

    monkeypatch.setenv("KDSR_JIT", "sometimes")
    monkeypatch.setattr(_build, "_cache", {})
    with pytest.raises(ValueError, match="KDSR_JIT"):
        _build.load_extension("cpu")


_HOLD_LOCK = textwrap.dedent(
    """
    import fcntl, sys, time
    handle = open(sys.argv[1], "a+")
    fcntl.flock(handle, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="advisory build locks are POSIX-only")
def test_a_killed_builds_lock_file_does_not_block_the_next_build(monkeypatch, tmp_path):
    """torch's `lock` file, left by a build that was killed, is removed before torch's load() waits on it
    (it would wait forever); a build that another live process holds is waited for, then reported."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = _build.build_directory("kdsr_probe_ext")
    assert tmp_path in folder.parents and folder.name == "kdsr_probe_ext"
    folder.mkdir(parents=True)
    (folder / "lock").write_text("")  # what `kill -9` during torch's build leaves behind
    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs, lock_present=(Path(kwargs["build_directory"]) / "lock").exists())
        return "module"

    monkeypatch.setattr("torch.utils.cpp_extension.load", fake_load)
    assert _build._jit_build("cpu", "kdsr_probe_ext", ["a.cpp"], tmp_path) == "module"
    assert seen["build_directory"] == str(folder) and seen["lock_present"] is False

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(folder / "kdsr-build.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        (folder / "lock").write_text("")  # a live build's own lock file must be left alone
        with pytest.raises(TimeoutError, match="another process"):
            with _build._build_lock(folder, patience_s=1.0):
                pass
        assert (folder / "lock").exists()
    finally:
        holder.kill()
        holder.wait()
    with _build._build_lock(folder, patience_s=5.0):  # the kernel dropped the dead holder's lock
        assert not (folder / "lock").exists()


def test_named_cpu_backend_raises_the_build_message(monkeypatch):
    failure = (None, "building the cpu extension failed: boom (simulated)")
    monkeypatch.setattr(_build, "_cache", {"cpu": failure})
    monkeypatch.setattr(ops, "_reasons", {})
    monkeypatch.setattr(ops, "_resolved", {})
    x, w = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3)
    with pytest.raises(RuntimeError, match="boom"):
        ops.idr_ddc(x, w, backend="cpu")
    with pytest.warns(UserWarning, match="boom"):
        monkeypatch.setattr(ops, "_warned", set())
        y = ops.idr_ddc(x, w, backend="auto")
    assert torch.allclose(y, reference.forward(x, w, None), atol=1e-6)


_JIT_CHECK = textwrap.dedent(
    """
    import torch
    from kdsr_kernels import _build, reference
    module, reason = _build.load_extension("cpu")
    assert module is not None, reason
    assert module.__name__ == _build.EXTENSIONS["cpu"][1], module.__name__
    torch.manual_seed(0)
    x, w = torch.randn(1, 2, 9, 9), torch.randn(1, 2, 3, 3) / 3
    y = torch.full_like(x, float("nan"))
    module.forward(x, w, y, 0.1)
    want = reference.forward(x, w, 0.1)
    assert torch.allclose(y, want, atol=1e-5), (y - want).abs().max()
    print("jit ok")
    """
)


@pytest.mark.skipif(os.environ.get("KDSR_TEST_JIT") != "1", reason="KDSR_TEST_JIT=1 runs it (1-2 min build)")
def test_jit_build_from_sources(tmp_path):
    """KDSR_JIT=force compiles csrc/ on first use, from scratch (an empty TORCH_EXTENSIONS_DIR), past the
    `lock` file of an earlier build that was killed. In a fresh process: the module defines the kdsr op
    schemas, which a process that already loaded the installed _C has (a second definition aborts)."""
    env = {**os.environ, "KDSR_JIT": "force", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    find_folder = "from kdsr_kernels import _build as b; print(b.build_directory(b.EXTENSIONS['cpu'][1]))"
    folder = subprocess.run(
        [sys.executable, "-c", find_folder], env=env, capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    Path(folder).mkdir(parents=True)
    (Path(folder) / "lock").write_text("")
    result = subprocess.run(
        [sys.executable, "-c", _JIT_CHECK], env=env, capture_output=True, text=True, timeout=900, cwd=REPO
    )
    assert result.returncode == 0 and "jit ok" in result.stdout, result.stdout + result.stderr
    assert "left by a build that was killed" in result.stderr, result.stderr


@needs_cpu_ext
def test_installed_module_matches_sources_or_warns(monkeypatch, caplog):
    """A module built by setup.py carries the hash of its sources; a mismatch with csrc/ is reported."""
    ext, _ = _build.load_extension("cpu")
    if not ext.source_hash():
        pytest.skip("a first-use (JIT) build: torch rebuilds it whenever the sources change")
    with caplog.at_level("WARNING", logger="kdsr_kernels"):
        _build._warn_if_stale(ext)
    stale = [r for r in caplog.records if "compiled from other sources" in r.getMessage()]
    assert not stale, "the installed kdsr_kernels._C is stale: rerun pip install --no-build-isolation -e ."
    monkeypatch.setattr(_build, "source_hash", lambda src: "h-edited-sources")
    with caplog.at_level("WARNING", logger="kdsr_kernels"):
        _build._warn_if_stale(ext)
    assert any("compiled from other sources" in r.getMessage() for r in caplog.records)


@needs_cpu_ext
def test_compiled_op_is_registered_in_cpp_with_autograd():
    """Eager calls reach the C++ kernels through the dispatcher: CPU and Autograd kernels come from C++."""
    for key in ("CPU", "Autograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("kdsr::idr_ddc_compiled", key), key
    assert torch._C._dispatch_has_kernel_for_dispatch_key("kdsr::idr_ddc_compiled_backward", "CPU")


@needs_cpu_ext
def test_poison_flag_reaches_the_cpp_allocator():
    from kdsr_kernels import _alloc

    ext, _ = _build.load_extension("cpu")
    assert ext.poison_outputs() == _alloc.poison_enabled()


@needs_cpu_ext
@pytest.mark.parametrize("slope", [None, 0.2])
def test_opcheck_and_gradcheck_compiled_op(slope):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(2, 3, 3, 3, dtype=torch.float64) / 3).requires_grad_(True)
    torch.library.opcheck(torch.ops.kdsr.idr_ddc_compiled, (x, w, slope))
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.kdsr.idr_ddc_compiled(a, b, slope), (x, w))
    only_w = torch.autograd.grad(torch.ops.kdsr.idr_ddc_compiled(x.detach(), w, slope).sum(), w)[0]
    y_ref = reference.forward(x.detach(), w, slope)
    assert torch.allclose(only_w, torch.autograd.grad(y_ref.sum(), w)[0], atol=1e-10)
