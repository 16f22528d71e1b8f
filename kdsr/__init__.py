"""kdsr: KDSR blind super-resolution (ICLR 2023) on fused IDR-DDC kernels.

import kdsr
model = kdsr.KDSRStudent()            # KDSR_S-M, x4, fused kernels
model = kdsr.load("iso-x4-student")  # shipped weights, or a checkpoint path
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it, imported on first use: `import kdsr` (and so every `kdsr.<module>`
# import, the CLI's included) does not pay for torch and the kernels. The one lazy import in the package;
# subpackages import their names eagerly.
_LAZY = {
    "KDSRStudent": "kdsr.models",
    "KDSRTeacher": "kdsr.models",
    "load": "kdsr.models",
    "upscale": "kdsr.inference",
    "degradations": "kdsr.degradations",
    "metrics": "kdsr.metrics",
    "data": "kdsr.data",
    "estimate_degradation": "kdsr.steering",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kdsr' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"kdsr.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
