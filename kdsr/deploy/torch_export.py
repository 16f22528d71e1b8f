"""torch.export of a KDSR student: one ExportedProgram lr -> sr with dynamic batch, height and width.

IDR-DDC stays the registered custom op `torch.ops.kdsr.idr_ddc` (no graph break, no decomposition), so the
program runs the fused kernels. Saved and loaded with `torch.export.save/load` (a .pt2 archive).
"""

from __future__ import annotations

import copy
import os

import torch

from ..atomic import atomic_write
from ..models.kdsr_model import KDSRStudent
from ..safe_load import load_exported_program
from .graphs import check_student


def export_program(model: KDSRStudent, path: str | os.PathLike | None = None) -> torch.export.ExportedProgram:
    """torch.export a float32 CPU eval copy of `model` (fused kernels on) with dynamic B, H, W >= 4;
    saved to `path` (atomically) when given. Returns the ExportedProgram (call `.module()(lr)`)."""
    student = copy.deepcopy(check_student(model)).float().cpu().eval()
    student.set_fused_kernels(True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=4, max=1 << 14)
    width = torch.export.Dim("width", min=4, max=1 << 14)
    example = torch.rand(2, 3, 16, 16)
    program = torch.export.export(student, (example,), dynamic_shapes=({0: batch, 2: height, 3: width},))
    if path is not None:
        atomic_write(path, lambda handle: torch.export.save(program, handle))
    return program


def load_program(path: str | os.PathLike, trust_pickle: bool = False) -> torch.export.ExportedProgram:
    """An ExportedProgram saved by `export_program` (imports kdsr_kernels so the custom op is registered).

    Read through `kdsr.safe_load.load_exported_program`: every pickle inside the archive must load with
    weights_only=True unless `trust_pickle=True`."""
    import kdsr_kernels  # noqa: F401 - registers torch.ops.kdsr.idr_ddc

    return load_exported_program(path, trust_pickle=trust_pickle)
