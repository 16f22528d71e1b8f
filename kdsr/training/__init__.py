"""KDSR training: configs, KD losses, atomic checkpoints, the two-stage trainer, DDP and evaluation.

from kdsr.training import load_config, Trainer
config = load_config("tiny_iso_x4_teacher", ["train.iters=100"])
Trainer(config).run()
"""

from kdsr.training.config import ConfigError, load_config
from kdsr.training.evaluate import evaluate_model
from kdsr.training.losses import kd_loss
from kdsr.training.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = [
    "ConfigError",
    "Trainer",
    "TrainResult",
    "TrainingDiverged",
    "evaluate_model",
    "kd_loss",
    "load_config",
]
