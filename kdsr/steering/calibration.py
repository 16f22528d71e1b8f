"""The calibration file: what a model's degradation vector D means, in units of the degradation.

A calibration is measured once per model (`kdsr calibrate`, kdsr.steering.calibrate) and stored beside the
weights as `<model>.calibration.safetensors`. It holds, for a grid of degradation settings (rows):

    settings  (S, P) float64  the P parameter values of each setting (e.g. P = 1: blur σ)
    d_mean    (S, C) float64  the mean D of crops degraded with that setting
    pooled    (S, 4C) float64 the mean pooled encoder features (what D is computed from; steering uses them)
    coef      (P, C) float64  the ridge readout: parameter ≈ D @ coef[p] + intercept[p]
    intercept (P,)   float64
    heldout_mae (P, S) float64  the readout's held-out mean absolute error per setting (GroupKFold by image)

and JSON metadata: the parameter names / units / ranges, the overall held-out errors, the settings it was
made with (config), where it came from (provenance) and a fingerprint of the model's weights, so a
calibration is never applied to another model. Safetensors: reading it runs no code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdsr.atomic import atomic_write_bytes

FORMAT = "kdsr-calibration"
FORMAT_VERSION = 1
SUFFIX = ".calibration.safetensors"
TENSORS = ("settings", "d_mean", "pooled", "coef", "intercept", "heldout_mae")


class CalibrationError(ValueError):
    """A calibration that is missing, malformed, or made for another model (CLI: exit code 2)."""


@dataclass(frozen=True)
class Parameter:
    """One calibrated degradation parameter: its name ("blur_sigma"), label ("blur σ"), unit, the range the
    calibration covered, and the readout's held-out errors over all settings (same units)."""

    name: str
    label: str
    low: float
    high: float
    heldout_mae: float
    heldout_median_ae: float
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Calibration:
    """A loaded calibration (see the module docstring for the tensors; all float64 CPU)."""

    parameters: list[Parameter]
    settings: torch.Tensor
    d_mean: torch.Tensor
    pooled: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor
    heldout_mae: torch.Tensor
    fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def index(self, name: str) -> int:
        """Column of parameter `name` in `settings`; CalibrationError listing the calibrated ones."""
        names = [p.name for p in self.parameters]
        if name not in names:
            raise CalibrationError(f"this calibration has no {name!r} parameter (it has {', '.join(names)})")
        return names.index(name)

    def parameter(self, name: str) -> Parameter:
        return self.parameters[self.index(name)]

    def read(self, d: torch.Tensor) -> torch.Tensor:
        """The linear readout of D (B, C) -> (B, P) parameter estimates, float64."""
        return d.detach().double().cpu() @ self.coef.T + self.intercept

    def curve(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (K,), row indices (K,)) of the settings along parameter `name`, the other parameters at
        their lowest calibrated value (e.g. blur σ at noise 0), sorted by value."""
        col = self.index(name)
        mask = torch.ones(len(self.settings), dtype=torch.bool)
        for other in range(self.settings.shape[1]):
            if other != col:
                mask &= self.settings[:, other] == self.settings[:, other].min()
        rows = torch.nonzero(mask).flatten()
        values, order = self.settings[rows, col].sort()
        return values, rows[order]

    def interpolate(self, name: str, value: float, table: str = "pooled") -> torch.Tensor:
        """`table` ("pooled" or "d_mean") at parameter `name` = value, linearly interpolated between the two
        nearest calibrated settings -> (1, F) float64. CalibrationError outside the calibrated range."""
        values, rows = self.curve(name)
        lo, hi = float(values[0]), float(values[-1])
        if not (lo - 1e-9 <= value <= hi + 1e-9):
            p = self.parameter(name)
            raise CalibrationError(
                f"{p.label} {value:g} is outside the calibrated range {lo:g}-{hi:g}; pick a value in it"
            )
        data = getattr(self, table)[rows]
        k = int(torch.searchsorted(values, torch.tensor(value, dtype=values.dtype)).clamp(1, len(values) - 1))
        t = (value - float(values[k - 1])) / float(values[k] - values[k - 1])
        t = min(max(t, 0.0), 1.0)
        return ((1 - t) * data[k - 1] + t * data[k]).unsqueeze(0)

    def heldout_error_at(self, name: str, value: float) -> float:
        """The readout's held-out mean absolute error near parameter `name` = value (nearest setting)."""
        values, rows = self.curve(name)
        k = int((values - value).abs().argmin())
        return float(self.heldout_mae[self.index(name), rows[k]])

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as a safetensors file, atomically (kdsr.atomic). Returns the path."""
        from safetensors.torch import save

        tensors = {name: getattr(self, name).double().contiguous() for name in TENSORS}
        header = {
            "format": FORMAT,
            "version": str(FORMAT_VERSION),
            "parameters": json.dumps([p.as_dict() for p in self.parameters]),
            "fingerprint": self.fingerprint,
            "config": json.dumps(self.config),
            "provenance": json.dumps(self.provenance),
        }
        return atomic_write_bytes(Path(path), save(tensors, metadata=header))


def read_calibration(path: str | os.PathLike) -> Calibration:
    """Load a calibration file (safetensors + JSON; no code runs). CalibrationError when malformed."""
    from kdsr.safe_load import read_safetensors

    path = Path(path)
    try:
        header, tensors = read_safetensors(path)
    except ValueError as exc:
        raise CalibrationError(f"not a readable calibration file: {exc}") from None
    if header.get("format") != FORMAT:
        raise CalibrationError(f"{path} is not a kdsr calibration (format={header.get('format')!r})")
    try:
        if int(header["version"]) > FORMAT_VERSION:
            raise CalibrationError(f"{path} has calibration version {header['version']}; upgrade kdsr")
        parameters = [Parameter(**p) for p in json.loads(header["parameters"])]
        cal = Calibration(
            parameters,
            *(tensors[name].double() for name in TENSORS),
            fingerprint=header["fingerprint"],
            config=json.loads(header.get("config", "{}")),
            provenance=json.loads(header.get("provenance", "{}")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise CalibrationError(f"{path} has malformed calibration metadata ({exc})") from None
    S, P = cal.settings.shape
    if len(parameters) != P or cal.coef.shape[0] != P or cal.d_mean.shape[0] != S or cal.pooled.shape[0] != S:
        raise CalibrationError(f"{path}: calibration tensors have inconsistent shapes")
    return cal


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (hex) of the model's weights: every state_dict tensor as float32 CPU bytes, in key order,
    with its name and shape. Identical weights give the same fingerprint on any device."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model) -> str:
    """`weights_fingerprint` of a PyTorch model, or the one an exported ONNX model recorded at export."""
    if isinstance(model, nn.Module):
        return weights_fingerprint(model)
    recorded = getattr(model, "weights_fingerprint", None)
    if not recorded:
        raise CalibrationError(
            "this exported model records no weights fingerprint; export it again with this kdsr to steer it"
        )
    return recorded


def calibration_path_for(model_path: str | os.PathLike) -> Path:
    """Where the calibration of a model file lives: `<dir>/<stem>.calibration.safetensors`."""
    path = Path(model_path)
    stem = path.name.split(".")[0] if path.suffix else path.name
    return path.with_name(stem + SUFFIX)


def load_calibration(model: nn.Module, path: str | os.PathLike | None = None) -> Calibration:
    """The calibration of `model`: `path`, or the file beside the weights `kdsr.load` read it from.

    Checks that it was made for these weights (fingerprint). CalibrationError (one line) when there is none,
    it is malformed, or it belongs to another model. The result is cached on the model.
    """
    cached = getattr(model, "_kdsr_calibration", None)
    if path is None and cached is not None:
        return cached
    if path is None:
        source = getattr(model, "source_path", None)
        if source is None:
            raise CalibrationError(
                "this model has no calibration (it was not loaded from a file); make one with "
                "`kdsr calibrate --checkpoint MODEL --hr-dir HR_IMAGES -o MODEL.calibration.safetensors`"
            )
        path = calibration_path_for(source)
        if not path.is_file():
            raise CalibrationError(
                f"model {source} has no calibration ({path.name} beside it); make one with "
                f"`kdsr calibrate --checkpoint {source} --hr-dir HR_IMAGES -o {path}`"
            )
    cal = read_calibration(path)
    mine = model_fingerprint(model)
    if cal.fingerprint != mine:
        raise CalibrationError(
            f"calibration {path} was made for another model (weights fingerprint "
            f"{cal.fingerprint[:12]}, this model {mine[:12]}); calibrate this model"
        )
    model._kdsr_calibration = cal
    return cal


def heldout_errors(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(mean, median) absolute error."""
    err = np.abs(np.asarray(predicted) - np.asarray(truth))
    return float(err.mean()), float(np.median(err))
