"""Deployment: ONNX and torch.export of KDSR students, and an onnxruntime runner that tiles like kdsr.upscale.

from kdsr.deploy import export_onnx, export_program, OnnxStudent
export_onnx(student, "kdsr_s.onnx")          # writes kdsr_s.onnx (SR) + kdsr_s.encoder.onnx
sr = OnnxStudent("kdsr_s.onnx").upscale(lr, tile=256)
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_onnx": "kdsr.deploy.onnx_export",
    "export_program": "kdsr.deploy.torch_export",
    "load_program": "kdsr.deploy.torch_export",
    "OnnxStudent": "kdsr.deploy.ort_runner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kdsr.deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
