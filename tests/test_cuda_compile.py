"""CUDA sources compile -- and compute the right thing -- here even without a GPU: how CI catches CUDA errors.

The kernels (csrc/*.cu) include no torch header, so nvcc compiles them alone to sm_90 object files; ptxas must
report no register spills. The torch-facing binding (csrc/idr_ddc_cuda.cpp) is syntax-checked with the host
compiler when torch ships its c10/cuda headers. Then the same .cu sources are compiled with g++ against
tests/cuda_emulator.h, which runs every CTA on CPU threads (__syncthreads = barrier, warp shuffles through
memory), and the launchers are checked against the float64 reference: all dtypes and k, single- and
multi-tile planes, vector and scalar load paths, NaN-poisoned outputs, NCHW and channels_last (NHWC) layouts.
Skipped when nvcc is absent.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from test_idr_ddc import assert_rounded_once, oracle
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

from kdsr_kernels import reference

CSRC = Path(__file__).resolve().parents[1] / "csrc"
CU_FILES = sorted(CSRC.glob("*.cu"))


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").is_file():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDA_HOME or put nvcc on PATH)")


def test_kernels_need_no_torch_headers():
    assert CU_FILES, "no .cu sources found"
    for path in [*CU_FILES, *CSRC.glob("*.cuh"), CSRC / "idr_ddc.h"]:
        text = path.read_text()
        includes_torch = re.search(r"#include\s*[<\"](torch|ATen|c10)/", text)
        assert not includes_torch, f"{path.name} includes a torch header"


@needs_nvcc
def test_cu_sources_compile_for_sm90_without_spills(tmp_path):
    def compile_one(source: Path) -> subprocess.CompletedProcess:
        # the flags torch's CUDAExtension / load() pass (no implicit half conversions, C++20)
        cmd = [NVCC, "-std=c++20", "-O3", "-arch=sm_90", *COMMON_NVCC_FLAGS, "-Xptxas", "-v", "-I", str(CSRC)]
        cmd += ["-c", str(source)]
        return subprocess.run(
            [*cmd, "-o", str(tmp_path / (source.stem + ".o"))], capture_output=True, text=True, timeout=600
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, CU_FILES))
    for source, result in zip(CU_FILES, results, strict=True):
        log = result.stdout + result.stderr
        assert result.returncode == 0, f"nvcc failed on {source.name}:\n{log[-6000:]}"
        assert (tmp_path / (source.stem + ".o")).stat().st_size > 0
        spills = [ln for ln in log.splitlines() if re.search(r"[1-9]\d* bytes spill (stores|loads)", ln)]
        assert not spills, f"{source.name}: register spills\n" + "\n".join(spills)
        entries = re.findall(r"Compiling entry function '(\w+)'", log)
        assert entries, f"{source.name}: no kernels compiled"


def _cuda_include_dir(tmp_path: Path) -> str | None:
    """The toolkit's include directory, as nvcc itself reports it (nvcc may be a wrapper script)."""
    probe = tmp_path / "probe.cu"
    probe.write_text("")
    dry = subprocess.run([NVCC, "--dryrun", "-c", str(probe)], capture_output=True, text=True, timeout=60)
    for match in re.finditer(r'INCLUDES="-I([^"]+)"', dry.stdout + dry.stderr):
        if (Path(match.group(1)) / "cuda_runtime.h").is_file():
            return match.group(1)
    return None


@needs_nvcc
def test_cuda_binding_compiles(tmp_path):
    """Syntax check of the torch-facing binding (the real build happens on a CUDA machine)."""
    includes = include_paths()
    if not any((Path(p) / "c10" / "cuda" / "CUDAGuard.h").is_file() for p in includes):
        pytest.skip("this torch build ships no c10/cuda headers")
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no host C++ compiler")
    stub = tmp_path / "stub"
    if not any((Path(p) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").is_file() for p in includes):
        # CPU builds of torch lack this generated header; its macros only matter when linking
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cuda_include = _cuda_include_dir(tmp_path)
    if cuda_include is None:
        pytest.skip("cannot locate cuda_runtime.h")
    flags = ["-std=c++20", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=_C_cuda", f"-I{CSRC}"]
    for path in [str(stub), *includes, str(cuda_include), sysconfig.get_paths()["include"]]:
        flags += ["-isystem", path]
    result = subprocess.run(
        [compiler, *flags, str(CSRC / "idr_ddc_cuda.cpp")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-6000:]


class _Params(ctypes.Structure):
    """ctypes mirror of IdrDdcParams (csrc/idr_ddc.h)."""

    _fields_ = [
        *[(name, ctypes.c_void_p) for name in ("x", "weight", "grad_out", "out", "y", "grad_x", "grad_w")],
        ("workspace", ctypes.c_void_p),
        ("planes", ctypes.c_int64),
        ("H", ctypes.c_int64),
        ("W", ctypes.c_int64),
        ("K", ctypes.c_int32),
        ("bands", ctypes.c_int32),
        ("band_rows", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("has_act", ctypes.c_int32),
        ("negative_slope", ctypes.c_double),
        ("C", ctypes.c_int64),
        ("channels_last", ctypes.c_int32),
    ]


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory):
    """The CUDA launchers compiled for the CPU emulator (tests/cuda_emulator.h), as a ctypes library."""
    compiler = shutil.which("g++")
    if NVCC is None or compiler is None:
        pytest.skip("needs nvcc (for the CUDA headers) and g++")
    tmp = tmp_path_factory.mktemp("cuda_emulator")
    cuda_include = _cuda_include_dir(tmp)
    if cuda_include is None:
        pytest.skip("cannot locate cuda_runtime.h")
    library = tmp / "libidr_ddc_emulated.so"
    emulator = Path(__file__).resolve().parent / "cuda_emulator.h"
    cmd = [compiler, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-include", str(emulator)]
    cmd += ["-I", str(CSRC), "-I", cuda_include, "-x", "c++", *map(str, CU_FILES), "-o", str(library)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, "emulated build failed:\n" + result.stderr[-6000:]
    lib = ctypes.CDLL(str(library))
    lib.idr_ddc_cuda_tiles.restype = ctypes.c_int64
    lib.idr_ddc_cuda_tiles.argtypes = [
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int32,
        ctypes.c_int32,
        ctypes.c_int32,
    ]
    return lib


def _emulated_run(lib, x, w, grad_out, slope, need_grad_x=True, need_grad_w=True, channels_last=False):
    """forward then fused backward through the real launchers; outputs start as NaN. A gradient that is not
    needed gets a null pointer, and the workspace is passed only when the sizing rule asks for one.
    channels_last: x, grad_out and the outputs are NHWC in memory and the weight goes in repacked to
    (B, k, k, C), as the binding (csrc/idr_ddc_op.h) does it."""
    codes = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
    B, C, H, W = x.shape
    k = w.shape[-1]
    nan = float("nan")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, grad_out = x.contiguous(memory_format=fmt), grad_out.contiguous(memory_format=fmt)
    w_arg = w.permute(0, 2, 3, 1).contiguous() if channels_last else w.contiguous()
    y = torch.full_like(x, nan, memory_format=fmt)
    grad_x, grad_w = torch.full_like(x, nan, memory_format=fmt), torch.full_like(w, nan)
    tiles = lib.idr_ddc_cuda_tiles(H, W, k, codes[x.dtype], int(channels_last))
    rows = _workspace_rows_rule(tiles)
    workspace = torch.full((B * C, rows, k * k), nan, dtype=torch.float64) if need_grad_w and rows else None
    common = dict(planes=B * C, H=H, W=W, K=k, dtype=codes[x.dtype], has_act=int(slope is not None))
    common.update(negative_slope=slope or 0.0, C=C, channels_last=int(channels_last))
    fwd = _Params(x=x.data_ptr(), weight=w_arg.data_ptr(), y=y.data_ptr(), **common)
    assert lib.idr_ddc_cuda_forward(ctypes.byref(fwd), None) == 0
    bwd = _Params(
        x=x.data_ptr(),
        weight=w_arg.data_ptr(),
        grad_out=grad_out.data_ptr(),
        out=y.data_ptr(),
        grad_x=grad_x.data_ptr() if need_grad_x else None,
        grad_w=grad_w.data_ptr() if need_grad_w else None,
        workspace=None if workspace is None else workspace.data_ptr(),
        **common,
    )
    assert lib.idr_ddc_cuda_backward(ctypes.byref(bwd), None) == 0
    return (y, grad_x, grad_w), tiles


def _workspace_rows_rule(tiles: int) -> int:
    """Rows of the (B*C, rows, k*k) grad_w workspace for a plane of `tiles` tiles, as the C++ binding
    (csrc/idr_ddc_cuda.cpp) allocates it: none for one tile (grad_w stored directly), one row per tile
    otherwise. The binding itself only runs on a GPU, where its TORCH_CHECK rejects a wrong workspace."""
    return tiles if tiles > 1 else 0


def _assert_matches_oracle(got, x, w, grad_out, slope, tol, tiles):
    y64 = reference.forward(x.double(), w.double(), slope)
    expected = (y64, *reference.backward(grad_out.double(), x.double(), w.double(), y64, slope, True, True))
    for name, value, want in zip(("y", "grad_x", "grad_w"), got, expected, strict=True):
        if value is None:
            continue
        err = ((value.double() - want).norm() / want.norm().clamp_min(1e-30)).item()
        assert err < tol, f"{name}: relative error {err:.2e} (tiles per plane: {tiles})"


EMULATED_CASES = [
    # (dtype, (B, C, H, W), k, slope): 17x45 is one tile with scalar loads (45 % 4 != 0); 70x136 is 6 (fp32,
    # k<7) or 9 tiles (k=7 / float64: 32-row tiles) with 16-byte loads and the tile-reduction kernel.
    ("float32", (2, 3, 17, 45), 3, 0.1),
    ("float32", (1, 2, 70, 136), 3, 0.1),
    ("float32", (1, 2, 70, 136), 7, None),
    ("float32", (1, 1, 5, 2), 5, 0.2),
    ("float32", (2, 3, 17, 45), 3, 0.0),  # ReLU: the `>` vs `>=` edge at zero
    ("float32", (1, 1, 3, 70), 1, None),
    ("float64", (1, 2, 70, 136), 5, 0.1),
    ("float64", (2, 1, 9, 11), 7, None),
    ("bfloat16", (1, 2, 70, 136), 3, 0.1),
    ("bfloat16", (2, 3, 17, 45), 7, 0.1),
    ("float16", (1, 2, 70, 136), 5, None),
    ("float16", (2, 3, 17, 45), 1, 0.1),
]
# channels_last: 40 channels = a full and a partial 32-lane block; 23x30 = 690 pixels = 2 runs (workspace +
# reduction); 9x11 = one run (grad_w stored directly)
EMULATED_NHWC_CASES = [
    ("float32", (2, 40, 9, 11), 3, 0.1),
    ("float32", (1, 5, 23, 30), 3, 0.0),
    ("float32", (1, 3, 23, 30), 7, None),
    ("float64", (2, 7, 9, 11), 5, 0.1),
    ("float64", (1, 33, 4, 3), 1, None),
    ("bfloat16", (1, 40, 23, 30), 3, 0.1),
    ("float16", (2, 9, 9, 11), 5, 0.1),
]
ALL_EMULATED = [(*case, False) for case in EMULATED_CASES] + [(*case, True) for case in EMULATED_NHWC_CASES]


@pytest.mark.parametrize(
    "dtype_name,shape,k,slope,channels_last", ALL_EMULATED, ids=lambda v: "nhwc" if v is True else None
)
def test_emulated_cuda_kernels_match_oracle(emulated_kernels, dtype_name, shape, k, slope, channels_last):
    dtype = getattr(torch, dtype_name)
    tol = {"float32": 1e-5, "float64": 1e-12}.get(dtype_name)
    B, C, H, W = shape
    x, grad_out = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    w = (torch.randn(B, C, k, k) / k).to(dtype)
    got, tiles = _emulated_run(emulated_kernels, x, w, grad_out, slope, channels_last=channels_last)
    if channels_last:
        for name, value in zip(("y", "grad_x"), got[:2], strict=True):
            assert value.is_contiguous(memory_format=torch.channels_last), name
    if dtype in (torch.float16, torch.bfloat16):  # fp32 accumulation, rounded once to nearest
        expected = oracle(x, w, slope, grad_out)
        bounds = oracle(x.abs(), w.abs(), None, grad_out.abs())
        for name, value, want, bound, n in zip(
            ("y", "grad_x", "grad_w"), got, expected, bounds, (k * k, k * k, H * W), strict=True
        ):
            assert_rounded_once(value, want, bound, n, f"{name} ({tiles} tiles)")
        return
    _assert_matches_oracle(got, x, w, grad_out, slope, tol, tiles)


@pytest.mark.parametrize(
    "shape,k", [((2, 3, 17, 45), 3), ((1, 2, 70, 136), 5)], ids=["one-tile", "multi-tile"]
)
@pytest.mark.parametrize("need", ["x", "w", "x+w"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_emulated_cuda_backward_for_each_needed_gradient(emulated_kernels, shape, k, need, channels_last):
    """grad_x only, grad_w only (no workspace for one tile), both; what is not asked for stays unwritten."""
    B, C, H, W = shape
    x, grad_out = torch.randn(shape), torch.randn(shape)
    w = torch.randn(B, C, k, k) / k
    need_x, need_w = "x" in need, "w" in need
    (y, grad_x, grad_w), tiles = _emulated_run(
        emulated_kernels, x, w, grad_out, 0.1, need_x, need_w, channels_last
    )
    if not channels_last:  # (NHWC: 512-pixel runs, both shapes are several)
        assert (tiles > 1) == (shape[2] == 70), tiles
    got = (y, grad_x if need_x else None, grad_w if need_w else None)
    _assert_matches_oracle(got, x, w, grad_out, 0.1, 1e-5, tiles)
    if not need_x:
        assert grad_x.isnan().all(), "grad_x was written although it was not asked for"
    if not need_w:
        assert grad_w.isnan().all(), "grad_w was written although it was not asked for"


def test_emulated_cuda_kernels_misaligned_and_repeatable(emulated_kernels):
    """A pointer off 16-byte alignment takes the scalar path on a multi-tile plane, gradients included; two
    runs are bitwise identical."""
    shape = (1, 2, 70, 136)
    x = torch.randn(2 * 70 * 136 + 1)[1:].view(shape)  # 4-byte offset: no 16-byte loads
    w, grad_out = torch.randn(1, 2, 3, 3) / 3, torch.randn(shape)
    first, tiles = _emulated_run(emulated_kernels, x, w, grad_out, 0.1)
    second, _ = _emulated_run(emulated_kernels, x, w, grad_out, 0.1)
    assert tiles > 1
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    _assert_matches_oracle(first, x, w, grad_out, 0.1, 1e-5, tiles)
