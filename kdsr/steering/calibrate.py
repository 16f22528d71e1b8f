"""Measure a calibration: degrade HR crops over a grid of settings, encode them, fit the readout.

    cal = calibrate(model, "B100/", sigmas=np.arange(0.2, 4.01, 0.2))
    cal.save("iso-x4-student.calibration.safetensors")

Classic models: isotropic Gaussian blur σ, optionally × noise levels (8-bit units). Each HR crop is blurred
(reflect pad), MATLAB-bicubic downscaled, noised and quantised to 8 bits exactly as in training
(kdsr.degradations.degrade). The ridge readout (D -> each parameter) is fitted on every crop; its held-out
error comes from GroupKFold over source images, so no image is in both the fit and the test fold.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

import kdsr

from .calibration import Calibration, Parameter, heldout_errors, weights_fingerprint

LABELS = {"blur_sigma": "blur σ", "noise": "noise level"}
UNITS = {"blur_sigma": "HR px", "noise": "8-bit levels"}


def sample_crops(
    hr_dir: str | os.PathLike, size: int, per_image: int, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """`per_image` random size x size crops of every image in `hr_dir` (smaller images skipped), float32
    (N, 3, size, size) in [0, 1], and the source image index of each (N,). Seeded, no augmentation."""
    from kdsr.data.io import list_images, read_image

    rng = np.random.default_rng(seed)
    crops, groups = [], []
    files = list_images(hr_dir)
    for index, path in enumerate(files):
        img = read_image(path)
        _, H, W = img.shape
        if H < size or W < size:
            continue
        for _ in range(per_image):
            top, left = int(rng.integers(0, H - size + 1)), int(rng.integers(0, W - size + 1))
            crops.append(img[:, top : top + size, left : left + size])
            groups.append(index)
    if not crops:
        raise ValueError(f"no image in {hr_dir} is at least {size}x{size} pixels")
    return torch.stack(crops).float(), np.asarray(groups)


def degrade_setting(
    hr: torch.Tensor, scale: int, sigma: float, noise: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """HR crops (N, 3, sP, sP) -> LR (N, 3, P, P) blurred with iso σ, bicubic ↓scale, noise, 8-bit."""
    kernel = kdsr.degradations.isotropic_gaussian_kernel(sigma)
    generator = torch.Generator().manual_seed(seed)
    return kdsr.degradations.degrade(hr, kernel, scale, noise, generator)


@torch.no_grad()
def encode_pooled(model, lr: torch.Tensor, hr: torch.Tensor | None = None, batch: int = 32) -> torch.Tensor:
    """Pooled encoder features (N, 4C) float64 of LR crops (teachers also get the HR crops)."""
    out = []
    param = next(model.parameters())
    for a in range(0, lr.shape[0], batch):
        x = lr[a : a + batch].to(param.device, param.dtype)
        if type(model).__name__ == "KDSRTeacher":
            x = model.teacher_input(x, hr[a : a + batch].to(param.device, param.dtype))
        out.append(model.encoder.features(x).mean(dim=(2, 3)).double().cpu())
    return torch.cat(out)


@torch.no_grad()
def head(model, pooled: torch.Tensor) -> torch.Tensor:
    """D (N, C) float64 from pooled features (N, 4C) through the encoder's MLP head."""
    param = next(model.parameters())
    return model.encoder.head(pooled.to(param.device, param.dtype))[0].double().cpu()


def fit_readout(d: np.ndarray, targets: np.ndarray, groups: np.ndarray, folds: int = 5):
    """Ridge (standardised D, alpha by RidgeCV) from D (N, C) to each target column (N, P).

    Returns (coef (P, C), intercept (P,), held-out predictions (N, P) from GroupKFold by image)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))

    splits = GroupKFold(n_splits=min(folds, len(np.unique(groups))))
    coefs, intercepts, heldout = [], [], []
    for p in range(targets.shape[1]):
        fitted = model().fit(d, targets[:, p])
        scaler, ridge = fitted[0], fitted[1]
        coef = ridge.coef_ / scaler.scale_  # fold the standardisation into one linear map
        coefs.append(coef)
        intercepts.append(ridge.intercept_ - float(coef @ scaler.mean_))
        heldout.append(cross_val_predict(model(), d, targets[:, p], groups=groups, cv=splits))
    return np.stack(coefs), np.asarray(intercepts), np.stack(heldout, axis=1)


def calibrate(
    model,
    hr_dir: str | os.PathLike,
    sigmas: Sequence[float],
    noises: Sequence[float] = (0.0,),
    crops_per_image: int = 2,
    lr_patch: int = 48,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    provenance: dict | None = None,
) -> Calibration:
    """Calibrate a classic KDSR model (student or teacher) on HR images over blur σ (× noise levels).

    Args:
        model: KDSRStudent / KDSRTeacher (eval; any device).
        hr_dir: folder of HR images (the model's training set, e.g. B100).
        sigmas: blur σ grid (HR pixels), e.g. the training range 0.2..4.0 in steps of 0.2.
        noises: noise levels (8-bit units); more than one adds a "noise" parameter.
        crops_per_image, lr_patch, seed: crops of scale·lr_patch HR pixels, seeded.
        progress: callback(done, total) per setting.
    Returns the Calibration (not saved).
    """
    scale = model.scale
    hr, groups = sample_crops(hr_dir, scale * lr_patch, crops_per_image, seed)
    names = ["blur_sigma"] + (["noise"] if len(noises) > 1 else [])
    grid = [(float(s), float(n)) for n in noises for s in sigmas]
    settings, d_mean, pooled_mean, all_d, all_targets, all_groups = [], [], [], [], [], []
    for k, (sigma, noise) in enumerate(grid):
        lr = degrade_setting(hr, scale, sigma, noise, seed + k)
        pooled = encode_pooled(model, lr, hr)
        d = head(model, pooled)
        values = [sigma, noise][: len(names)]
        settings.append(values)
        d_mean.append(d.mean(0))
        pooled_mean.append(pooled.mean(0))
        all_d.append(d.numpy())
        all_targets.append(np.tile(values, (len(d), 1)))
        all_groups.append(groups)
        if progress is not None:
            progress(k + 1, len(grid))
    d_np, targets, group_ids = np.concatenate(all_d), np.concatenate(all_targets), np.concatenate(all_groups)
    coef, intercept, predicted = fit_readout(d_np, targets, group_ids)
    setting_of_row = np.repeat(np.arange(len(grid)), len(groups))
    per_setting = np.abs(predicted - targets)
    heldout_mae = np.stack(
        [[per_setting[setting_of_row == s, p].mean() for s in range(len(grid))] for p in range(len(names))]
    )
    parameters = []
    for p, name in enumerate(names):
        mae, median = heldout_errors(targets[:, p], predicted[:, p])
        column = np.asarray(settings)[:, p]
        parameters.append(
            Parameter(name, LABELS[name], float(column.min()), float(column.max()), mae, median, UNITS[name])
        )
    config = {
        "kind": "classic-iso",
        "scale": scale,
        "sigmas": [float(s) for s in sigmas],
        "noises": [float(n) for n in noises],
        "crops_per_image": crops_per_image,
        "lr_patch": lr_patch,
        "seed": seed,
        "n_crops": int(len(groups)),
        "n_images": int(len(np.unique(groups))),
        "readout": "ridge on standardised D (RidgeCV), held-out error by GroupKFold(5) over images",
        "model_class": type(model).__name__,
        "model_config": model.config,
    }
    info = {
        "hr_dir": Path(hr_dir).name,
        "kdsr_version": kdsr.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(provenance or {}),
    }
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    return Calibration(
        parameters,
        as_t(settings),
        torch.stack(d_mean),
        torch.stack(pooled_mean),
        as_t(coef),
        as_t(intercept),
        as_t(heldout_mae),
        weights_fingerprint(model),
        config,
        info,
    )
