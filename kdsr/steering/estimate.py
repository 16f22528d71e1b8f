"""What a model thinks happened to an image: its degradation estimate in the units of its calibration.

est = kdsr.estimate_degradation(model, lr)        # lr (3, H, W) or (1, 3, H, W) float in [0, 1]
print(est)                                        # blur σ ≈ 2.1 ± 0.15 (training range 0.2–4.0)
est.blur_sigma, est["blur_sigma"].heldout_error, est.in_range
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .calibration import Calibration, load_calibration
from .steer import pooled_features, runner_of

ESTIMATE_TILE = 512  # images larger than this are encoded in tiles (same D up to float order, bounded memory)


@dataclass(frozen=True)
class ParameterEstimate:
    """One degradation parameter read from D: value, the calibration's held-out mean absolute error near it,
    and the range the model was calibrated (trained) over."""

    name: str
    label: str
    value: float
    heldout_error: float
    low: float
    high: float

    @property
    def in_range(self) -> bool:
        """False when the estimate falls outside the calibrated range (by more than its held-out error)."""
        return self.low - self.heldout_error <= self.value <= self.high + self.heldout_error

    def __str__(self) -> str:
        text = (
            f"{self.label} ≈ {self.value:.2f} ± {self.heldout_error:.2f} "
            f"(training range {self.low:g}–{self.high:g})"
        )
        return text if self.in_range else text + " OUTSIDE the training range"


@dataclass(frozen=True)
class DegradationEstimate:
    """The estimate of every calibrated parameter (e.g. blur σ) for one image."""

    parameters: tuple[ParameterEstimate, ...]

    def __getitem__(self, name: str) -> ParameterEstimate:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(f"no {name!r} in this estimate (has {[p.name for p in self.parameters]})")

    @property
    def blur_sigma(self) -> float:
        """The estimated blur σ (HR pixels)."""
        return self["blur_sigma"].value

    @property
    def in_range(self) -> bool:
        return all(p.in_range for p in self.parameters)

    def as_dict(self) -> dict:
        """JSON-ready: {name: {value, heldout_error, low, high, in_range, label}}."""
        return {p.name: {**asdict(p), "in_range": p.in_range} for p in self.parameters}

    def __str__(self) -> str:
        return "; ".join(str(p) for p in self.parameters)


def read_estimate(calibration: Calibration, d: torch.Tensor) -> DegradationEstimate:
    """Read the calibration's parameters from one D (1, C)."""
    values = calibration.read(d)[0]
    return DegradationEstimate(
        tuple(
            ParameterEstimate(
                p.name,
                p.label,
                float(values[i]),
                calibration.heldout_error_at(p.name, float(values[i])),
                p.low,
                p.high,
            )
            for i, p in enumerate(calibration.parameters)
        )
    )


@torch.no_grad()
def estimate_degradation(
    model, image: torch.Tensor, calibration: Calibration | None = None, tile: int | None = ESTIMATE_TILE
) -> DegradationEstimate:
    """The degradation `model` (a KDSRStudent) estimates for `image`, in calibration units.

    Args:
        model: a student loaded with `kdsr.load` (its calibration is found beside the weights) or any
            student when `calibration` is given.
        image: (3, H, W) or (1, 3, H, W) float in [0, 1] (one image).
        calibration: a Calibration (default: `load_calibration(model)`).
        tile: encode in tiles of this many LR pixels (exact whole-image D; bounds memory).
    Raises CalibrationError when the model has no (matching) calibration.
    """
    calibration = calibration or load_calibration(model)
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(
            f"estimate_degradation takes one image (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}"
        )
    pooled = pooled_features(runner_of(model), image, tile)
    d = model.encoder.head(pooled.to(model.sr_net.head.weight.dtype).to(model.sr_net.head.weight.device))[0]
    return read_estimate(calibration, d)
