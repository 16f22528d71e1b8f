"""Run an exported student (see onnx_export.py) with onnxruntime, tiled exactly as `kdsr.upscale`.

    student = OnnxStudent("kdsr_s.onnx")              # finds kdsr_s.encoder.onnx beside it
    sr = student.upscale(lr, tile=256)                # (B, 3, H, W) float in [0, 1] -> (B, 3, sH, sW)

No model code runs: the two graphs go through onnxruntime's CPU execution provider; the tiling, blending
and the float64 pooled average are `kdsr.inference.tiling`'s own (torch tensors only carry the pixels).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..inference.tiling import Progress, TileRunner, upscale
from .onnx_export import FORMAT


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeError("onnxruntime is not installed; pip install 'kdsr[export]'") from exc
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable / invalid files
        raise ValueError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


class OnnxStudent:
    """An exported KDSR student on onnxruntime (CPU EP). `threads`: intra-op threads (default: ORT's)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"ONNX model {path} does not exist; create it with `kdsr export --format onnx`")
        self.sr_session = _session(path, threads)
        meta = self.sr_session.get_modelmeta().custom_metadata_map
        if meta.get("kdsr.format") != FORMAT or meta.get("kdsr.role") != "sr":
            raise ValueError(
                f"{path} is not a kdsr SR graph (kdsr.format={meta.get('kdsr.format')!r}); pass the file "
                "`kdsr export --format onnx -o FILE` wrote as FILE (not its .encoder.onnx)"
            )
        self.source_path, self.weights_fingerprint = path, meta.get("kdsr.weights_fingerprint")  # steering
        self.scale = int(meta["kdsr.scale"])
        self.encoder_radius = int(meta["kdsr.encoder_radius"])
        enc_file = path.with_name(meta["kdsr.encoder_file"])
        if not enc_file.is_file():
            raise ValueError(f"{path} needs its encoder graph {enc_file} beside it; export again or copy it")
        self.encoder_session = _session(enc_file, threads)

    def features(self, patch: torch.Tensor) -> torch.Tensor:
        """patch (B, 3, h, w) float32 CPU -> encoder features (B, 4C, h, w) float32."""
        (out,) = self.encoder_session.run(["features"], {"patch": np.ascontiguousarray(patch.numpy())})
        return torch.from_numpy(out)

    def sr(self, lr: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """lr (B, 3, h, w), pooled features (B, 4C) -> sr (B, 3, sh, sw) float32, not clamped."""
        feeds = {
            "lr": np.ascontiguousarray(lr.numpy()),
            "pooled": np.ascontiguousarray(pooled.float().numpy()),
        }
        return torch.from_numpy(self.sr_session.run(["sr"], feeds)[0])

    def runner(self) -> TileRunner:
        """The TileRunner `kdsr.upscale` drives (head = identity: the SR graph applies it)."""
        return TileRunner(
            self.features,
            lambda pooled: pooled.float(),
            self.sr,
            self.encoder_radius,
            self.scale,
            lambda x: x.detach().to("cpu", torch.float32).contiguous(),
        )

    def upscale(
        self,
        image: torch.Tensor,
        tile: int | None = None,
        tile_pad: int = 10,
        *,
        tile_batch: int = 1,
        progress: Progress | None = None,
        degradation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`kdsr.upscale` through onnxruntime: image (B, 3, H, W) or (3, H, W) float in [0, 1] ->
        (B, 3, scale*H, scale*W) clamped to [0, 1], on the image's device and dtype. `degradation`: pooled
        features (1, 4C) all tiles share instead of the image's own (kdsr.steering.resolve_degradation)."""
        return upscale(
            self.runner(),
            image,
            tile,
            tile_pad,
            tile_batch=tile_batch,
            degradation=degradation,
            progress=progress,
        )
