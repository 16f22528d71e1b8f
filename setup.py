"""Build script for kdsr: the optional compiled IDR-DDC extensions.

    pip install --no-build-isolation -e .     # or: pip install --no-build-isolation .

builds `kdsr_kernels._C` (CPU kernels, csrc/idr_ddc_cpu*.cpp) with ninja through torch.utils.cpp_extension,
and `kdsr_kernels._C_cuda` (csrc/idr_ddc_cuda.cpp + *.cu) too when torch has CUDA and nvcc is found.
The install never fails because of them: without torch at build time (build isolation), without a compiler, or
when compiling fails, the package installs without the module and `kdsr_kernels` compiles it on first use
(kdsr_kernels/_build.py). The C++/CUDA sources are copied into the package for that.

Environment: KDSR_BUILD_EXT=0 skips compiling; KDSR_BUILD_CUDA=0/1 forces the CUDA extension off/on
(default: on when torch.version.cuda and a CUDA toolkit are present).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _flags():
    """Compiler flags, shared with the run-time (JIT) build in kdsr_kernels/_build.py."""
    spec = importlib.util.spec_from_file_location("_kdsr_build", ROOT / "kdsr_kernels" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _note(message: str) -> None:
    print(f"kdsr setup: {message}", flush=True)


class BuildPyWithSources(build_py):
    """Also copies csrc/ into the built package as kdsr_kernels/csrc, for the first-use (JIT) build."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install imports from the checkout, which has csrc/ already
        target = Path(self.build_lib) / "kdsr_kernels" / "csrc"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(CSRC.iterdir()):
            if path.suffix in (".h", ".cuh", ".cpp", ".cu"):
                shutil.copy2(path, target / path.name)


def _extensions_and_commands():
    commands = {"build_py": BuildPyWithSources}
    if os.environ.get("KDSR_BUILD_EXT", "1") == "0":
        _note("KDSR_BUILD_EXT=0: not compiling the extensions (they are built on first use)")
        return [], commands
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as exc:  # noqa: BLE001 - e.g. build isolation without torch
        _note(f"torch is not importable here ({exc}); skipping the compiled extensions (built on first use)")
        return [], commands
    build = _flags()
    include_dirs = [str(CSRC)]
    macros = [("KDSR_SOURCE_HASH", build.source_hash(CSRC))]  # lets kdsr_kernels spot a stale build
    extensions = [
        CppExtension(
            "kdsr_kernels._C",
            [f"csrc/{name}" for name in build.EXTENSIONS["cpu"][2]],
            include_dirs=include_dirs,
            define_macros=macros,
            extra_compile_args=build.CXX_FLAGS,
            extra_link_args=build.LINK_FLAGS,
        )
    ]
    want_cuda = os.environ.get("KDSR_BUILD_CUDA", "")
    if want_cuda == "1" or (want_cuda == "" and torch.version.cuda is not None and CUDA_HOME is not None):
        extensions.append(
            CUDAExtension(
                "kdsr_kernels._C_cuda",
                [f"csrc/{name}" for name in build.EXTENSIONS["cuda"][2]],
                include_dirs=include_dirs,
                define_macros=macros,
                extra_compile_args={"cxx": ["-O3"], "nvcc": build.NVCC_FLAGS},
            )
        )

    class BuildExtensionAllowErrors(BuildExtension):
        """torch's BuildExtension (ninja), but a failing extension is reported and left out, not fatal."""

        def build_extensions(self):
            self._failed = set()
            try:
                super().build_extensions()
            except Exception as exc:  # noqa: BLE001 - compiler detection / setup failed for all of them
                _note(f"cannot build the compiled extensions ({exc}); they will be built on first use")
                self._failed = {ext.name for ext in self.extensions}
            # what is left out is neither copied into the source tree nor listed as an output
            self.extensions = [ext for ext in self.extensions if ext.name not in self._failed]

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - keep installing without this one
                _note(f"building {ext.name} failed ({exc}); kdsr_kernels will compile it on first use")
                self._failed.add(ext.name)
                stale = Path(self.get_ext_fullpath(ext.name))
                if stale.exists():  # an older build's module must not be packaged in its place
                    stale.unlink()

    commands["build_ext"] = BuildExtensionAllowErrors.with_options(use_ninja=True)
    return extensions, commands


ext_modules, cmdclass = _extensions_and_commands()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
