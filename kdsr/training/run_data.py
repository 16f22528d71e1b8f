"""The data of a training run: the per-iteration batch source and the validation sets, from the config.

A folder without usable images or an unwritable disk cache is one ConfigError line.
"""

from __future__ import annotations

from typing import Any

from kdsr.data.cache import cache_mode
from kdsr.data.dataset import HRImageDataset
from kdsr.data.loader import ClassicBatches, RealWorldSource
from kdsr.data.realworld import RealWorldBatches
from kdsr.degradations.pipeline import ClassicDegradation
from kdsr.training.config import ConfigError, RunConfig

__all__ = ["build_batch_source", "load_val_pairs", "build_sigma_readout"]


def _data_error(exc: Exception) -> str:
    """One line for a data.train_dir problem (no images, none usable, an unwritable disk cache)."""
    if isinstance(exc, PermissionError):
        return f"data.cache: disk: {exc}; set data.cache_dir to a writable folder, or data.cache=ram / none"
    return f"data.train_dir: {exc}; point it at a folder of HR images (--set data.train_dir=/path/to/HR)"


def _cache_args(config: RunConfig, progress: bool) -> dict[str, Any]:
    return {"cache": cache_mode(config.data.cache), "cache_dir": config.data.cache_dir, "progress": progress}


def build_batch_source(
    config: RunConfig, local_batch: int, rank: int, progress: bool
) -> tuple[ClassicBatches | RealWorldSource, RealWorldBatches | None]:
    """(the batch source of this rank for kdsr.data.loader.TrainLoader, the real-world batch builder or
    None). Classic: HR crops (data.*) degraded by ClassicDegradation (degradation.*); realworld: GT crops
    through the Real-ESRGAN degradation and the pair queue. `progress` shows the cache fill."""
    data, deg, scale, seed, iters = (
        config.data,
        config.degradation,
        config.model.scale,
        config.seed,
        config.train.iters,
    )
    try:
        if deg.kind == "realworld":
            realworld = RealWorldBatches(
                data.train_dir,
                scale,
                gt_size=scale * data.lr_patch,
                batch=local_batch,
                crop_size=data.crop_size,
                queue_size=data.queue_size,
                **_cache_args(config, progress),
            )
            return RealWorldSource(realworld, seed, rank, iters), realworld
        dataset = HRImageDataset(
            data.train_dir, scale, data.lr_patch, augment=data.augment, **_cache_args(config, progress)
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(_data_error(exc)) from None
    degradation = ClassicDegradation(
        scale=scale,
        kind=deg.kind,
        sigma=(deg.sig_min, deg.sig_max),
        lambdas=(deg.lambda_min, deg.lambda_max),
        noise=(0.0, deg.noise),
        per_sample=deg.per_sample,
    )
    return ClassicBatches(dataset, degradation, local_batch, seed, rank, iters), None


def load_val_pairs(config: RunConfig) -> list:
    """The validation pairs of data.val_dir (kdsr.training.realworld_val.validation_pairs)."""
    from kdsr.training.realworld_val import validation_pairs

    return validation_pairs(config)


def build_sigma_readout(config: RunConfig):
    """The read-out logged at each validation, or None (kdsr.training.readout.build_validation_readout)."""
    from kdsr.training.readout import build_validation_readout

    return build_validation_readout(config)
