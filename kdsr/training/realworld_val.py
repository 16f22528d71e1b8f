"""Validation pairs of a training run, and the real-world rules for them.

A real-world run (degradation.kind realworld) validates on a paired real-world set, never on Gaussian8:
* ``data.val_lr_dir`` set: the LR images of that folder paired by name with the HR images of data.val_dir
  (e.g. the output of ``kdsr degrade --realworld``, or NTIRE20/AIM19-style folders);
* ``data.val_kernels: realworld``: data.val_dir degraded at run start with ``RealWorldDegradation``, seed 0,
  exactly as ``kdsr degrade --realworld --seed 0`` writes it (deterministic, per image).
best.pt of the teacher and student stages follows the PSNR on that set; the GAN stage keeps last.pt only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdsr.training.config_schema import RunConfig

__all__ = ["REALWORLD_VAL", "realworld_validation_problem", "validation_pairs"]

REALWORLD_VAL = "realworld"  # data.val_kernels value: degrade data.val_dir with the real-world pipeline


def realworld_validation_problem(config: RunConfig) -> str | None:
    """One line saying what is wrong with the config's validation set, or None when it is fine.

    Checks: data.val_lr_dir is a folder and needs data.val_dir; a real-world run with a val_dir validates on
    a real-world set (val_lr_dir or val_kernels: realworld), not on classic kernels.
    """
    data = config.data
    lr_dir = data.val_lr_dir
    if lr_dir is not None:
        if not isinstance(lr_dir, str) or not Path(lr_dir).is_dir():
            return f"data.val_lr_dir {lr_dir!r} is not a folder; point it at the LR images of data.val_dir"
        if data.val_dir is None:
            return "data.val_lr_dir needs data.val_dir (the HR images its LR images are paired with)"
        return None
    if config.degradation.kind == "realworld" and data.val_dir is not None:
        if data.val_kernels != REALWORLD_VAL:
            return (
                "a real-world run validates on a real-world set, not "
                f"data.val_kernels={data.val_kernels!r}: set data.val_kernels=realworld (data.val_dir "
                "degraded as `kdsr degrade --realworld --seed 0`) or data.val_lr_dir=<LR folder of val_dir>"
            )
    return None


def validation_pairs(config: RunConfig) -> list:
    """The (name, lr, hr, params) validation pairs of a config (empty without data.val_dir), limited to
    data.val_max_images images: a paired folder, the seed-0 real-world set, or the classic kernels."""
    from kdsr.data.benchmark import benchmark_pairs
    from kdsr.data.realworld_benchmark import paired_folder_pairs, realworld_pairs
    from kdsr.training.evaluate import limit_images

    data, scale = config.data, config.model.scale
    if data.val_dir is None:
        return []
    if data.val_lr_dir is not None:
        pairs = paired_folder_pairs(data.val_lr_dir, data.val_dir, scale)
    elif data.val_kernels == REALWORLD_VAL:
        pairs = realworld_pairs(data.val_dir, scale, seed=0)
    else:
        pairs = benchmark_pairs(data.val_dir, scale, kernels=data.val_kernels, noise=data.val_noise)
    return limit_images(pairs, data.val_max_images)
