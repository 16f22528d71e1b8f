"""Deployment: ONNX and torch.export of KDSR students, and an onnxruntime runner that tiles like kdsr.upscale.

from kdsr.deploy import export_onnx, export_program, OnnxStudent
export_onnx(student, "kdsr_s.onnx")          # writes kdsr_s.onnx (SR) + kdsr_s.encoder.onnx
sr = OnnxStudent("kdsr_s.onnx").upscale(lr, tile=256)

onnx and onnxruntime (the [export] extra) are imported only inside the functions that use them.
"""

from .onnx_export import export_onnx
from .ort_runner import OnnxStudent
from .torch_export import export_program, load_program

__all__ = ["OnnxStudent", "export_onnx", "export_program", "load_program"]
