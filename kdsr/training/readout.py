"""Linear read-outs of the degradation representation D: can a ridge regression recover what was done?

Two probe sets, both built once (seeded) from HR folders the model never trained on (e.g. Set5 + Set14):

* ``SigmaReadout``: crops blurred with each isotropic σ (the classic setting); score: R² of σ.
* ``RealWorldReadout``: crops degraded by ``RealWorldDegradation`` a few times each; scores: R² of the
  recorded ``RealWorldParams`` (``REALWORLD_TARGETS``: final JPEG quality, the noise level of each stage,
  the blur width of each stage).

Every R² is cross-validated with folds grouped by source image (no image in both fit and test), so it
measures what D says about the degradation, not about the picture. A model whose D does not vary across
inputs (a collapsed encoder) gets ``ReadoutResult.constant`` and no R² at all: an R² of about 0 from
standardised noise would look like a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kdsr.degradations.realworld_targets import REALWORLD_TARGETS, realworld_targets

if TYPE_CHECKING:
    from kdsr.training.config_schema import RunConfig

__all__ = [
    "READOUT_COLUMNS",
    "build_validation_readout",
    "readout_line",
    "READOUT_SIGMAS",
    "REALWORLD_TARGETS",
    "RealWorldReadout",
    "ReadoutResult",
    "SigmaReadout",
    "d_spread",
    "degrade_with_sigmas",
    "encode_all",
    "realworld_targets",
    "ridge_r2",
    "sigma_r2",
]

READOUT_SIGMAS = tuple(float(s) for s in np.round(np.linspace(0.2, 4.0, 8), 3))

TARGET_LABELS = {
    "jpeg": "final JPEG quality",
    "noise1": "stage-1 noise level",
    "noise2": "stage-2 noise level",
    "blur1": "stage-1 blur width",
    "blur2": "stage-2 blur width",
}
# D counts as constant below this spread (mean per-feature std across inputs / mean |D|). The collapsed
# shipped real-world encoders measured 0.07 % and 0.15 %, the working classic one 4 %.
MIN_SPREAD = 2e-3


def ridge_r2(
    features: np.ndarray, target: np.ndarray, groups: np.ndarray | None = None, folds: int = 5
) -> float:
    """Cross-validated R² of a ridge regression (standardised features, α by inner CV): target <- features.

    features (N, F) float, target (N,) float. ``groups`` (N,) names the source image of each row: folds are
    then GroupKFold by image; without it, shuffled KFold. 1: linearly readable; 0: no better than the mean.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if groups is None:
        splits = KFold(n_splits=folds, shuffle=True, random_state=0)
        return float(cross_val_score(model, features, target, cv=splits, scoring="r2").mean())
    splits = GroupKFold(n_splits=min(folds, len(np.unique(groups))))
    return float(cross_val_score(model, features, target, groups=groups, cv=splits, scoring="r2").mean())


sigma_r2 = ridge_r2  # the classic name: R² of the blur σ


def d_spread(features: np.ndarray) -> float:
    """How much D varies across inputs: mean over features of the std across rows, over mean |D| (N, F)."""
    scale = float(np.abs(features).mean())
    if scale == 0.0:
        return 0.0
    return float(features.std(axis=0).mean() / scale)


@dataclass
class ReadoutResult:
    """R² per target (None for every target when D is constant) and the spread of D."""

    spread: float
    r2: dict[str, float | None]

    @property
    def constant(self) -> bool:
        return self.spread < MIN_SPREAD

    def columns(self) -> dict[str, float | str]:
        """val_log.csv cells: d_spread, and r2_<target> ("" when D is constant)."""
        out: dict[str, float | str] = {"d_spread": self.spread}
        out.update({f"r2_{k}": ("" if v is None else v) for k, v in self.r2.items()})
        return out

    def summary(self) -> str:
        """One line, e.g. "R² jpeg 0.71, noise2 0.64 (D spread 12.0 %)" or the collapsed-encoder notice."""
        if self.constant:
            return f"D is constant (collapsed encoder): spread {100 * self.spread:.3f} %, nothing to read out"
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.r2.items())
        return f"R² {parts} (D spread {100 * self.spread:.1f} %)"


def score(features: np.ndarray, targets: dict[str, np.ndarray], groups: np.ndarray) -> ReadoutResult:
    """ReadoutResult of features (N, F) for each target (N,), folds grouped by ``groups``."""
    spread = d_spread(features)
    if spread < MIN_SPREAD:
        return ReadoutResult(spread, {k: None for k in targets})
    return ReadoutResult(spread, {k: ridge_r2(features, v, groups) for k, v in targets.items()})


@torch.no_grad()
def encode_all(
    model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, feature: str = "d", batch: int = 64
) -> np.ndarray:
    """D (N, C) or D' (N, 4C) of ``model`` for every LR crop (teachers also get the HR), float64 numpy.

    Leaves the model in eval mode (callers restore train mode).
    """
    model.eval()
    out = []
    for start in range(0, lr.shape[0], batch):
        lr_b, hr_b = lr[start : start + batch], hr[start : start + batch]
        if type(model).__name__ == "KDSRTeacher":
            d, d_prime = model.encode(lr_b, hr_b)
        else:
            d, d_prime = model.encode(lr_b)
        out.append((d if feature == "d" else d_prime).double().cpu())
    return torch.cat(out).numpy()


def _encode(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, feature: str) -> np.ndarray:
    device = next(model.parameters()).device
    was_training = model.training
    try:
        return encode_all(model, lr.to(device), hr.to(device), feature)
    finally:
        model.train(was_training)


def _crops(hr_dirs: Sequence[str | Path], scale: int, lr_patch: int, per_image: int, seed: int):
    """Seeded HR crops (N, 3, s·p, s·p) float32 of every image in ``hr_dirs`` and their image index (N,)."""
    import kdsr

    crops, ids, offset = [], [], 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            for hr_dir in hr_dirs:
                dataset = kdsr.data.HRImageDataset(hr_dir, scale, lr_patch, augment=False)
                if len(dataset.files) == 0:
                    raise ValueError(f"no images in {str(hr_dir)!r}")
                for index in range(len(dataset.files)):
                    for _ in range(per_image):
                        crops.append(dataset[index])
                        ids.append(offset + index)
                offset += len(dataset.files)
        finally:
            np.random.set_state(state)
    return torch.stack(crops).float(), np.asarray(ids)


def _dirs(hr_dir: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [hr_dir] if isinstance(hr_dir, (str, Path)) else list(hr_dir)


class SigmaReadout:
    """The classic probe set: crops of every image of ``hr_dir`` (one folder or several) blurred with each σ.

    ``r2(model)`` is the GroupKFold-by-image R² of σ from D; ``scores(model)`` the val_log.csv cells.
    lr (N,3,p,p), hr (N,3,sp,sp) float32; N = images x crops x len(sigmas).
    """

    def __init__(
        self,
        hr_dir: str | Path | Sequence[str | Path],
        scale: int = 4,
        sigmas: Sequence[float] = READOUT_SIGMAS,
        crops_per_image: int = 4,
        lr_patch: int = 32,
        seed: int = 0,
    ):
        hr, image_ids = _crops(_dirs(hr_dir), scale, lr_patch, crops_per_image, seed)
        self.lr, self.hr, self.sigmas = degrade_with_sigmas(hr, scale, sigmas)
        self.groups = np.tile(image_ids, len(sigmas))
        self.sigmas_used = tuple(sigmas)

    def r2(self, model: nn.Module, feature: str = "d") -> float:
        """GroupKFold-by-image R² of σ read linearly from the model's D (or D')."""
        return ridge_r2(_encode(model, self.lr, self.hr, feature), self.sigmas, self.groups)

    def scores(self, model: nn.Module) -> dict[str, float]:
        """{"sigma_r2": R²} (the validation cells)."""
        return {"sigma_r2": self.r2(model)}


def degrade_with_sigmas(
    hr: torch.Tensor, scale: int, sigmas: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Degrade every crop with every iso sigma: (lr (n·k,3,p,p), hr (n·k,3,sp,sp), sigma label (n·k,))."""
    import kdsr

    lrs, hrs, labels = [], [], []
    for sigma in sigmas:
        kernel = kdsr.degradations.isotropic_gaussian_kernel(sigma)
        lrs.append(kdsr.degradations.degrade(hr, kernel, scale))
        hrs.append(hr)
        labels.append(np.full(hr.shape[0], sigma))
    return torch.cat(lrs), torch.cat(hrs), np.concatenate(labels)


class RealWorldReadout:
    """The real-world probe set: seeded HR crops of ``hr_dir`` (one folder or several), each degraded by
    ``draws`` independent ``RealWorldDegradation`` draws, with the drawn parameters recorded.

    ``result(model)`` is a ReadoutResult (R² per REALWORLD_TARGETS, folds grouped by image);
    ``scores(model)`` its val_log.csv cells. lr (N,3,p,p), hr (N,3,sp,sp) float32, targets (N, 5) float64;
    N = images x crops_per_image x draws.
    """

    def __init__(
        self,
        hr_dir: str | Path | Sequence[str | Path],
        scale: int = 4,
        crops_per_image: int = 4,
        draws: int = 3,
        lr_patch: int = 32,
        seed: int = 0,
    ):
        from kdsr.degradations.realworld import RealWorldDegradation

        hr, image_ids = _crops(_dirs(hr_dir), scale, lr_patch, crops_per_image, seed)
        deg = RealWorldDegradation(scale=scale)
        gen = torch.Generator().manual_seed(seed)
        lrs, targets = [], []
        for _ in range(draws):
            lr, params = deg(hr, generator=gen, return_params=True)
            lrs.append(lr)
            targets.append(realworld_targets(params, deg))
        self.lr = torch.cat(lrs).float()
        self.hr = hr.repeat(draws, 1, 1, 1)
        self.targets = np.concatenate(targets)
        self.groups = np.tile(image_ids, draws)

    def result(self, model: nn.Module, feature: str = "d") -> ReadoutResult:
        """ReadoutResult of the model's D (or D') on the probe set."""
        feats = _encode(model, self.lr, self.hr, feature)
        named = {k: self.targets[:, i] for i, k in enumerate(REALWORLD_TARGETS)}
        return score(feats, named, self.groups)

    def scores(self, model: nn.Module) -> dict[str, float | str]:
        """The validation cells: d_spread and r2_<target> (see ReadoutResult.columns)."""
        return self.result(model).columns()


READOUT_COLUMNS = ("sigma_r2", "d_spread", *(f"r2_{k}" for k in REALWORLD_TARGETS))


def build_validation_readout(config: RunConfig) -> SigmaReadout | RealWorldReadout | None:
    """The read-out a training run logs at each validation: none without data.val_sigma_dir; the real-world
    one for degradation.kind realworld, else the σ read-out over the training σ range."""
    data, deg = config.data, config.degradation
    if data.val_sigma_dir is None:
        return None
    scale = config.model.scale
    if deg.kind == "realworld":
        return RealWorldReadout(data.val_sigma_dir, scale, crops_per_image=data.val_sigma_crops)
    sigmas = tuple(np.round(np.linspace(deg.sig_min, deg.sig_max, 8), 3))
    return SigmaReadout(data.val_sigma_dir, scale, sigmas=sigmas, crops_per_image=data.val_sigma_crops)


def readout_line(stats: dict) -> str:
    """The read-out part of a validation line from its cells (σ-R², or the real-world R² / a collapsed D)."""
    if "sigma_r2" in stats:
        return f"σ-R² {stats['sigma_r2']:.3f}"
    spread = float(stats["d_spread"])
    if stats.get(f"r2_{REALWORLD_TARGETS[0]}") == "":
        return f"D is constant (collapsed encoder): spread {100 * spread:.3f} %"
    parts = ", ".join(f"{k} {stats[f'r2_{k}']:.2f}" for k in REALWORLD_TARGETS)
    return f"read-out R² {parts} (D spread {100 * spread:.1f} %)"
