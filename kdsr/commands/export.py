"""`kdsr export`: write a KDSR student as ONNX (two graphs, for onnxruntime) or as a torch.export archive.

kdsr export --checkpoint iso-x4-student --format onnx -o kdsr_s.onnx     # + kdsr_s.encoder.onnx
kdsr export --checkpoint student.pt --format torch-export -o kdsr_s.pt2
Exit code: 0 written, 2 bad arguments / checkpoint (e.g. a teacher) / missing onnx package.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kdsr.commands._common import add_runtime_flags, apply_threads, fail

FORMATS = ("onnx", "torch-export")


def add_parser(subparsers) -> None:
    """Register `kdsr export` and its flags."""
    p = subparsers.add_parser(
        "export",
        help="export a KDSR student to ONNX or torch.export for deployment",
        description="Export a KDSR student. onnx: two float32 graphs with dynamic batch/height/width, "
        "FILE (the SR network, taking the pooled encoder features) and FILE's <stem>.encoder.onnx (the "
        "encoder's per-pixel features), so `kdsr upscale --onnx FILE` tiles with one whole-image "
        "degradation estimate exactly as the PyTorch path. torch-export: a .pt2 archive of the whole "
        "student (lr -> sr) with the fused IDR-DDC custom op, dynamic batch/height/width. Teachers cannot "
        "be exported (they need the HR image). Exit code: 0 written, 2 bad arguments / checkpoint.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH_OR_NAME",
        help="student model file (model.save / a training checkpoint) or a shipped weights name "
        "(e.g. iso-x4-student)",
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or torch-export")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write (.onnx / .pt2)")
    add_runtime_flags(p, device=False, progress=False)  # exports trace on the CPU; no progress bar
    p.set_defaults(func=run)


def run(args) -> int:
    """Export; returns 0, or 2 with one message on a bad checkpoint / output / missing package."""
    import kdsr

    apply_threads(args)
    out = Path(args.output)
    try:
        if not out.parent.is_dir():
            raise ValueError(f"output folder {out.parent} does not exist")
        model = kdsr.load(args.checkpoint, map_location="cpu")
        from kdsr.deploy.graphs import check_student

        check_student(model)
        if args.format == "onnx":
            try:
                import onnx  # noqa: F401
            except ImportError as exc:
                raise RuntimeError("ONNX export needs the onnx package: pip install 'kdsr[export]'") from exc
            from kdsr.deploy.onnx_export import export_onnx

            written = export_onnx(model, out)
        else:
            from kdsr.deploy.torch_export import export_program

            export_program(model, out)
            written = (out,)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        return fail("export", str(exc))
    print(f"kdsr export: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0
