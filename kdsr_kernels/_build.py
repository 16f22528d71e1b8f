"""Find the compiled IDR-DDC extensions, or build them on first use.

`pip install` builds `kdsr_kernels._C` (CPU) and, when torch has CUDA, `kdsr_kernels._C_cuda` (setup.py).
When a module is absent (an install without a compiler, build isolation without torch, a source checkout)
it is compiled once with `torch.utils.cpp_extension.load` from the C++ sources shipped in the package (or
`csrc/` of a checkout) into torch's extension cache (`build_directory`), announced by one log line. A build
killed half-way does not block later ones (`_build_lock`). When that fails too,
`load_extension` returns the compiler's message, which becomes the backend's `unavailable_reason`.

Environment: KDSR_JIT=off|auto|force (default auto)
  auto    use the installed module; compile from the sources only when it is missing
  force   ignore an installed module and build from the sources (for kernel development)
  off     never compile at run time; a missing module makes the backend unavailable
The compiler's output is shown when the `kdsr_kernels` logger is at DEBUG level.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

log = logging.getLogger("kdsr_kernels")

# target -> (installed module, JIT module name, source files)
EXTENSIONS = {
    "cpu": (
        "kdsr_kernels._C",
        "kdsr_kernels_idr_ddc_cpu",
        ("idr_ddc_cpu.cpp", "idr_ddc_cpu_kernels.cpp"),
    ),
    "cuda": (
        "kdsr_kernels._C_cuda",
        "kdsr_kernels_idr_ddc_cuda",
        ("idr_ddc_cuda.cpp", "idr_ddc_fwd.cu", "idr_ddc_bwd.cu"),
    ),
}

# Compiler flags shared with setup.py. No -march=native: the CPU kernels pick AVX2 / AVX-512 at run time.
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=fast"]
LINK_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-lineinfo"]

SOURCE_SUFFIXES = (".h", ".cuh", ".cpp", ".cu")
_MESSAGE_TAIL = 3000  # characters of compiler output kept in an unavailable_reason

_lock = threading.Lock()
_cache: dict[str, tuple[ModuleType | None, str | None]] = {}


def source_dir() -> Path | None:
    """Directory of the C++/CUDA sources: the copy inside the installed package, else the checkout's csrc/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parent / "csrc"):
        if (candidate / "idr_ddc.h").is_file():
            return candidate
    return None


def load_extension(target: str) -> tuple[ModuleType | None, str | None]:
    """(module, None) when the `target` ("cpu" | "cuda") extension is usable, else (None, why + what to do).

    Tries the installed module, then a one-time JIT build. Cached per process; thread-safe.
    """
    with _lock:
        if target not in _cache:
            _cache[target] = _find_or_build(target)
        return _cache[target]


JIT_MODES = ("off", "auto", "force")


def jit_mode() -> str:
    """KDSR_JIT from the environment: "off", "auto" (default) or "force"; ValueError naming the choices."""
    mode = os.environ.get("KDSR_JIT", "auto").strip().lower() or "auto"
    if mode not in JIT_MODES:
        raise ValueError(f"KDSR_JIT={mode!r} is not one of {'|'.join(JIT_MODES)}; unset it or pick one")
    return mode


def _find_or_build(target: str) -> tuple[ModuleType | None, str | None]:
    import torch  # noqa: F401 - the extension links against libtorch, which must be loaded first

    installed, jit_name, sources = EXTENSIONS[target]
    mode = jit_mode()
    import_error = "KDSR_JIT=force"
    if mode != "force":
        try:
            module = importlib.import_module(installed)
            _warn_if_stale(module)
            return module, None
        except ImportError as exc:
            import_error = f"{type(exc).__name__}: {exc}"
    if mode == "off":
        return None, (
            f"the compiled module {installed} cannot be imported ({import_error}) and KDSR_JIT=off forbids "
            "building it now; reinstall with `pip install --no-build-isolation -e .` where a C++ compiler "
            "is present"
        )
    src = source_dir()
    if src is None:
        return None, (
            f"the compiled module {installed} cannot be imported ({import_error}) and the C++ sources to "
            "build it are not shipped with this install; reinstall kdsr from a source checkout"
        )
    log.warning(
        "kdsr_kernels: %s is not built (%s); compiling the %s extension now with "
        "torch.utils.cpp_extension.load (once; cached in torch's extension directory, takes a minute or two)",
        installed,
        import_error,
        target,
    )
    try:
        return _jit_build(target, jit_name, [str(src / name) for name in sources], src), None
    except Exception as exc:  # noqa: BLE001 - any build failure becomes the reason, with the compiler's text
        message = str(exc).strip()
        if len(message) > _MESSAGE_TAIL:
            message = "..." + message[-_MESSAGE_TAIL:]
        return None, (
            f"building the {target} extension with torch.utils.cpp_extension.load failed "
            f"({type(exc).__name__}): {message}\n"
            "Install a C++ compiler (g++) and ninja"
            + (" and a CUDA toolkit matching torch.version.cuda (nvcc)" if target == "cuda" else "")
            + ", then retry; `pip install --no-build-isolation -e .` builds it ahead of time"
        )


def source_hash(src: Path) -> str:
    """Hash of the C++/CUDA sources in `src` (compiled into the modules as KDSR_SOURCE_HASH)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in src.iterdir() if p.suffix in SOURCE_SUFFIXES):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "h" + digest.hexdigest()[:16]


def _warn_if_stale(module: ModuleType) -> None:
    """Say so when the sources next to the package differ from those the installed module was built from."""
    src = source_dir()
    built_from = getattr(module, "source_hash", lambda: "")()
    if src is not None and built_from and built_from != source_hash(src):
        log.warning(
            "kdsr_kernels: %s was compiled from other sources than %s; rerun "
            "`pip install --no-build-isolation -e .` (or set KDSR_JIT=force) to use the current kernels",
            module.__name__,
            src,
        )


def build_directory(name: str) -> Path:
    """Where the first-use build of extension `name` lives: $TORCH_EXTENSIONS_DIR (else torch's default root),
    then one folder per Python and torch version, then `name`."""
    import sys

    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    version = "".join(c if c.isalnum() or c in "._-" else "_" for c in torch.__version__)
    return Path(root) / f"kdsr_py{sys.version_info.major}{sys.version_info.minor}_torch{version}" / name


@contextmanager
def _build_lock(folder: Path, patience_s: float):
    """Hold an advisory lock on `folder` for one build; the kernel drops it when its holder dies.

    torch's own `lock` file stays behind when a build is killed, and every later build then waits on it
    forever. Whoever holds this lock is the only kdsr build of `folder`, so a `lock` file found then is such a
    leftover and is removed. TimeoutError after `patience_s` seconds of another live build holding it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "kdsr-build.lock", "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; torch's lock file is all there is
            yield
            return
        deadline = time.monotonic() + patience_s
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has been building {folder} for over {patience_s:.0f} s; "
                        "wait for it to finish, or stop it and retry"
                    ) from None
                if not announced:
                    log.warning("kdsr_kernels: another process is building %s; waiting for it", folder)
                    announced = True
                time.sleep(0.5)
        try:
            stale = folder / "lock"
            if stale.exists():
                log.warning("kdsr_kernels: removing %s, left by a build that was killed", stale)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


BUILD_PATIENCE_S = 1800.0  # how long to wait for another process's build of the same extension


def _jit_build(target: str, name: str, sources: list[str], include_dir: Path) -> ModuleType:
    from torch.utils.cpp_extension import load

    folder = build_directory(name)
    kwargs = {
        "name": name,
        "sources": sources,
        "extra_include_paths": [str(include_dir)],
        "extra_cflags": CXX_FLAGS,
        "extra_ldflags": LINK_FLAGS,
        "build_directory": str(folder),
        "verbose": log.isEnabledFor(logging.DEBUG),
    }
    if target == "cuda":
        kwargs["extra_cuda_cflags"] = NVCC_FLAGS
    with _build_lock(folder, BUILD_PATIENCE_S):
        return load(**kwargs)
