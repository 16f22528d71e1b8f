"""t-SNE of the implicit degradation representation D (the paper's Fig. 6) for one or more models.

HR crops are degraded with each isotropic sigma (Gaussian8 for x4 by default); every model encodes the
same LR crops (teachers also see the HR) and its D vectors are embedded in 2-D with scikit-learn's TSNE.
A model that has learned to tell degradations apart shows one cluster per sigma.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

GAUSSIAN8_X4 = (1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2)


def sample_hr_crops(hr_dir: str | Path, scale: int, lr_patch: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` random HR crops (count, 3, s*p, s*p) float32 in [0,1], without augmentation, seeded."""
    import kdsr

    dataset = kdsr.data.HRImageDataset(hr_dir, scale, lr_patch, augment=False)
    if len(dataset) == 0:
        raise ValueError(f"no images in {str(hr_dir)!r}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            crops = [
                dataset[i % len(dataset)] for i in torch.randperm(max(count, len(dataset)))[:count].tolist()
            ]
        finally:
            np.random.set_state(state)
    return torch.stack(crops).float()


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


def sigma_r2(
    features: np.ndarray, sigmas: np.ndarray, groups: np.ndarray | None = None, folds: int = 5
) -> float:
    """Cross-validated R² of a ridge regression predicting the blur σ from the vectors (N, F) float.

    `groups` (N,) names the source image of each row: with it the folds are GroupKFold by image, so no
    image is in both the fit and the test set (the honest read-out); without it, shuffled KFold.
    1 means σ is linearly readable from the representation, 0 means no better than the mean σ.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if groups is None:
        splits = KFold(n_splits=folds, shuffle=True, random_state=0)
        return float(cross_val_score(model, features, sigmas, cv=splits, scoring="r2").mean())
    n_groups = len(np.unique(groups))
    splits = GroupKFold(n_splits=min(folds, n_groups))
    return float(cross_val_score(model, features, sigmas, groups=groups, cv=splits, scoring="r2").mean())


READOUT_SIGMAS = tuple(float(s) for s in np.round(np.linspace(0.2, 4.0, 8), 3))


class SigmaReadout:
    """A fixed probe set for the σ read-out: crops of every image of `hr_dir` blurred with each σ.

    Built once (seeded); `r2(model)` encodes the probes and returns the GroupKFold-by-image R² of σ
    from D. lr (N,3,p,p), hr (N,3,sp,sp) float32; N = images x crops x len(sigmas).
    """

    def __init__(
        self,
        hr_dir: str | Path,
        scale: int = 4,
        sigmas: Sequence[float] = READOUT_SIGMAS,
        crops_per_image: int = 4,
        lr_patch: int = 32,
        seed: int = 0,
    ):
        import kdsr

        dataset = kdsr.data.HRImageDataset(hr_dir, scale, lr_patch, augment=False)
        n_images = len(dataset.files)
        if n_images == 0:
            raise ValueError(f"no images in {str(hr_dir)!r}")
        crops, image_ids = [], []
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            state = np.random.get_state()
            np.random.seed(seed)
            try:
                for index in range(n_images):
                    for _ in range(crops_per_image):
                        crops.append(dataset[index])
                        image_ids.append(index)
            finally:
                np.random.set_state(state)
        hr = torch.stack(crops).float()
        self.lr, self.hr, self.sigmas = degrade_with_sigmas(hr, scale, sigmas)
        self.groups = np.tile(np.asarray(image_ids), len(sigmas))
        self.sigmas_used = tuple(sigmas)

    def r2(self, model: nn.Module, feature: str = "d") -> float:
        """GroupKFold-by-image R² of σ read linearly from the model's D (or D')."""
        device = next(model.parameters()).device
        was_training = model.training
        feats = encode_all(model, self.lr.to(device), self.hr.to(device), feature)
        model.train(was_training)
        return sigma_r2(feats, self.sigmas, self.groups)


@torch.no_grad()
def encode_all(
    model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, feature: str = "d", batch: int = 64
) -> np.ndarray:
    """D (N, C) or D' (N, 4C) of `model` for every LR crop, as float64 numpy."""
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


def plot_tsne(
    models: dict[str, nn.Module],
    hr_dir: str | Path,
    out: str | Path,
    scale: int = 4,
    sigmas: Sequence[float] = GAUSSIAN8_X4,
    crops: int = 40,
    lr_patch: int = 32,
    feature: str = "d",
    seed: int = 0,
) -> Path:
    """Draw one t-SNE panel per model (points coloured by blur sigma) into a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    hr = sample_hr_crops(hr_dir, scale, lr_patch, crops, seed)
    lr, hr_rep, labels = degrade_with_sigmas(hr, scale, sigmas)
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.2 * len(models) + 1, 4.6), squeeze=False, layout="constrained"
    )
    name = "D" if feature == "d" else "D'"
    order = np.random.default_rng(seed).permutation(labels.shape[0])  # no sigma drawn on top of the others
    scatter = None
    for ax, (label, model) in zip(axes[0], models.items(), strict=True):
        device = next(model.parameters()).device
        feats = encode_all(model, lr.to(device), hr_rep.to(device), feature)
        perplexity = min(30.0, (feats.shape[0] - 1) / 3)
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)
        scatter = ax.scatter(emb[order, 0], emb[order, 1], c=labels[order], s=9, cmap="viridis")
        ax.set_title(f"{label}\nσ from {name}: R² = {sigma_r2(feats, labels):.2f}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=axes[0].tolist(), label="blur σ", shrink=0.8)
    fig.suptitle(
        f"t-SNE of {name}: {crops} crops of {Path(hr_dir).name} x {len(sigmas)} blur sigmas (x{scale})"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
