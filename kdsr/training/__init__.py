"""KDSR training: configs, KD losses, atomic checkpoints, the two-stage trainer, DDP and evaluation.

from kdsr.training import load_config, Trainer
config = load_config("tiny_iso_x4_teacher", ["train.iters=100"])
Trainer(config).run()
"""

from kdsr.training.config import ConfigError, load_config
from kdsr.training.losses import kd_loss

__all__ = ["ConfigError", "Trainer", "TrainingDiverged", "evaluate_model", "kd_loss", "load_config"]


def __getattr__(name: str):
    if name in ("Trainer", "TrainingDiverged", "TrainResult"):
        from kdsr.training import trainer

        return getattr(trainer, name)
    if name == "evaluate_model":
        from kdsr.training.evaluate import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'kdsr.training' has no attribute {name!r}")
