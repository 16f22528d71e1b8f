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

# The read-outs live in kdsr.training.readout; these names stay importable from here.
from kdsr.training.readout import (  # noqa: F401
    READOUT_SIGMAS,
    SigmaReadout,
    degrade_with_sigmas,
    encode_all,
    sigma_r2,
)

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
