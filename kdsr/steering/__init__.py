"""See and steer the degradation a KDSR model estimates (issue 22).

cal = kdsr.steering.load_calibration(model)              # <model>.calibration.safetensors beside weights
est = kdsr.estimate_degradation(model, lr)               # blur σ ≈ 2.1 ± 0.15 (training range 0.2–4.0)
d = kdsr.steering.resolve_degradation(model, lr, blur_sigma=2.0)   # or strength=0.7
sr = kdsr.upscale(model, lr, degradation=d)
"""

from .calibration import (
    Calibration,
    CalibrationError,
    load_calibration,
    read_calibration,
    weights_fingerprint,
)
from .estimate import DegradationEstimate, ParameterEstimate, estimate_degradation
from .steer import resolve_degradation

__all__ = [
    "Calibration",
    "CalibrationError",
    "DegradationEstimate",
    "ParameterEstimate",
    "estimate_degradation",
    "load_calibration",
    "read_calibration",
    "resolve_degradation",
    "weights_fingerprint",
]
