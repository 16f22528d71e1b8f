"""ONNX export of a KDSR student as two graphs with dynamic batch, height and width (opset 18).

    export_onnx(student, "kdsr_s.onnx")   # -> kdsr_s.onnx (SR network) + kdsr_s.encoder.onnx (encoder)

kdsr_s.onnx:          lr (B, 3, H, W) float32, pooled (B, 4C) float32 -> sr (B, 3, sH, sW) (not clamped)
kdsr_s.encoder.onnx:  patch (B, 3, h, w) float32 -> features (B, 4C, h, w)
`pooled` is the spatial mean of the whole image's `features`; `kdsr.deploy.OnnxStudent` computes it tile by
tile exactly as `kdsr.upscale` does. The SR graph's metadata (kdsr.scale, kdsr.encoder_radius,
kdsr.encoder_file, kdsr.config) is all the runner needs.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes
from ..models.kdsr_model import KDSRStudent
from ..steering.calibration import weights_fingerprint
from .graphs import export_graphs

OPSET = 18
FORMAT = "kdsr-onnx-v1"


def encoder_path(path: str | os.PathLike) -> Path:
    """The encoder graph that goes with the SR graph at `path`: <stem>.encoder.onnx beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.encoder.onnx")


def _export(module: torch.nn.Module, args: tuple, names: list[str], axes: dict, path: Path, meta: dict):
    """Export `module` to an in-memory ONNX graph, add `meta`, check it and write it to `path` atomically."""
    import onnx

    graph = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # dynamo=False: the TorchScript exporter; same result as dynamo=True here, 20x faster.
        torch.onnx.export(
            module,
            args,
            graph,
            input_names=names[: len(args)],
            output_names=names[len(args) :],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(graph.getvalue())
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(path, proto.SerializeToString())


def export_onnx(model: KDSRStudent, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the student's SR graph to `path` and its encoder graph to `encoder_path(path)`.

    Both are float32, CPU, with dynamic batch / height / width, checked with `onnx.checker`. Returns the two
    paths. Raises ValueError for a teacher (it needs HR) or another model.
    """
    encoder, sr = export_graphs(model)
    path = Path(path)
    enc_file = encoder_path(path)
    n_pool = 4 * model.n_feats
    example = torch.rand(1, 3, 16, 16)
    pooled = torch.rand(1, n_pool)
    meta = {
        "kdsr.format": FORMAT,
        "kdsr.scale": model.scale,
        "kdsr.encoder_radius": model.encoder.receptive_radius,
        "kdsr.encoder_file": enc_file.name,
        "kdsr.config": json.dumps(model.config),
        "kdsr.weights_fingerprint": weights_fingerprint(model),  # kdsr.steering checks calibrations with it
    }
    batch_hw = {0: "B", 2: "H", 3: "W"}
    _export(
        encoder,
        (example,),
        ["patch", "features"],
        {"patch": batch_hw, "features": batch_hw},
        enc_file,
        {"kdsr.format": FORMAT, "kdsr.role": "encoder"},
    )
    _export(
        sr,
        (example, pooled),
        ["lr", "pooled", "sr"],
        {"lr": batch_hw, "pooled": {0: "B"}, "sr": {0: "B", 2: "sH", 3: "sW"}},
        path,
        {**meta, "kdsr.role": "sr"},
    )
    return path, enc_file
