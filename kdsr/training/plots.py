"""PNG of a run's loss and validation-PSNR curves, read from its CSV logs (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
from pathlib import Path


def _read_csv(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {
        key: [float(r[key]) if r[key] not in ("", None) else float("nan") for r in rows] for key in rows[0]
    }


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss (left) and validation PSNR (right) vs iteration for a run folder; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "curves.png"
    train = _read_csv(run_dir / "train_log.csv")
    val = _read_csv(run_dir / "val_log.csv")
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        ax_loss.plot(train["iteration"], train["loss"], label="total")
        ax_loss.plot(train["iteration"], train["l1"], label="L1", alpha=0.7)
        if any(v != 0 for v in train["kd"]):
            ax_loss.plot(train["iteration"], train["kd"], label="KD", alpha=0.7)
        ax_loss.set_yscale("log")
        ax_loss.legend()
    ax_loss.set(xlabel="iteration", ylabel="loss", title=f"{run_dir.name}: training loss")
    if val:
        ax_psnr.plot(val["iteration"], val["psnr"], marker="o")
        if any(v == v for v in val.get("sigma_r2", [])):  # not all NaN: the σ read-out was logged
            ax_r2 = ax_psnr.twinx()
            ax_r2.plot(val["iteration"], val["sigma_r2"], marker="s", color="tab:red", alpha=0.7)
            ax_r2.set_ylabel("σ read-out R² (red)")
    ax_psnr.set(xlabel="iteration", ylabel="PSNR (dB, Y)", title="validation PSNR")
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_comparison(run_dirs: dict[str, str | Path], out: str | Path, smooth: int = 20) -> Path:
    """Overlay several runs: smoothed training L1 (left) and validation PSNR (right); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(11, 4))
    for label, folder in run_dirs.items():
        train = _read_csv(Path(folder) / "train_log.csv")
        val = _read_csv(Path(folder) / "val_log.csv")
        if train:
            l1 = np.asarray(train["l1"])
            k = max(1, min(smooth, len(l1)))
            smoothed = np.convolve(l1, np.ones(k) / k, mode="valid")
            ax_loss.plot(train["iteration"][k - 1 :], smoothed, label=label)
        if val:
            ax_psnr.plot(val["iteration"], val["psnr"], marker="o", label=label)
    ax_loss.set(xlabel="iteration", ylabel="L1 (smoothed)", title="training L1")
    ax_psnr.set(xlabel="iteration", ylabel="PSNR (dB, Y)", title="validation PSNR")
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
