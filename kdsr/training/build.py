"""Model building for a training run, and the checks that a --teacher / --init checkpoint fits the config.

`build_models(config, device)` gives (trainable model, frozen teacher or None) for the config's stage;
`load_checkpoint_model` is the one place that resolves a checkpoint (a file or a shipped name), loads it,
and checks its class and its architecture against `config.model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdsr.models.kdsr_model import KDSRStudent, KDSRTeacher, shipped_names
from kdsr.models.kdsr_model import load as load_model
from kdsr.safe_load import CheckpointError
from kdsr.training.config import ConfigError, RunConfig

__all__ = ["architecture_of", "build_models", "build_gan_perceptual", "load_checkpoint_model"]


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """Shape-defining hyper-parameters of a KDSR model, read from its config dict."""
    config = dict(getattr(model, "config", {}) or {})
    return {k: config.get(k) for k in ("scale", "n_feats", "n_blocks", "n_encoder_res")}


@dataclass(frozen=True)
class _Role:
    """What a checkpoint flag must hold, and the hints its errors give."""

    flag: str
    cls: type[nn.Module]
    not_found: str
    wrong_class: str
    retrain: str


TEACHER = _Role(
    "--teacher",
    KDSRTeacher,
    "pass --teacher runs/<teacher run>/last.pt",
    "pass the stage-1 (teacher) checkpoint",
    "train the teacher with the same model settings",
)
INIT = _Role(
    "--init",
    KDSRStudent,
    "pass the student checkpoint runs/<student>/best.pt",
    "the GAN stage starts from the stage-2 (student) checkpoint, "
    "e.g. --init runs/realworld_x4_student/best.pt",
    "use the student trained with the same model settings",
)


def load_checkpoint_model(
    role: _Role, name_or_path: str, config: RunConfig, trust_checkpoint: bool = False
) -> nn.Module:
    """Load a --teacher / --init checkpoint (a file or a shipped name) on the CPU (a training checkpoint
    gives its EMA weights) and check that it holds `role.cls` with the architecture of `config.model`.

    Raises ConfigError (missing, wrong class, another variant) or kdsr.safe_load.CheckpointError (the file
    cannot be read, or the safe loader refuses it; `trust_checkpoint` unpickles it fully).
    """
    if not Path(name_or_path).is_file() and name_or_path not in shipped_names():
        raise ConfigError(f"{role.flag} {name_or_path!r} not found; {role.not_found}")
    try:
        model = load_model(
            name_or_path, "cpu", fused_kernels=config.fused_kernels, trust_pickle=trust_checkpoint
        )
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{role.flag} {name_or_path!r}: {exc}") from None
    if not isinstance(model, role.cls):
        raise ConfigError(
            f"{role.flag} {name_or_path!r} holds a {type(model).__name__}, not a {role.cls.__name__}; "
            f"{role.wrong_class}"
        )
    expected, found = config.model.architecture(), architecture_of(model)
    if found != expected:
        raise ConfigError(
            f"{role.flag} {name_or_path!r} is another variant: it has {found}, the config asks for "
            f"{expected} (model.variant={config.model.variant!r}); {role.retrain}"
        )
    return model


def build_models(
    config: RunConfig, device: torch.device, trust_checkpoint: bool = False
) -> tuple[nn.Module, nn.Module | None]:
    """Create (trainable model, frozen teacher or None) for the config's stage, on `device`.

    Stage teacher: a fresh KDSRTeacher. Stage student: the teacher is loaded from `config.teacher`,
    checked against the configured variant, frozen; the student copies the teacher's SR network and gets
    a fresh encoder (seeded by config seed), as the reference's strict=False load does. Stage gan: the
    teacher as for the student stage, and G loaded strictly from `config.init`.
    """
    fused, mcfg = config.fused_kernels, config.model
    torch.manual_seed(config.seed)
    if config.stage == "teacher":
        model = KDSRTeacher(
            variant=mcfg.variant, scale=mcfg.scale, fused_kernels=fused, **mcfg.size_overrides()
        )
        _init_encoder(model, config)
        return model.to(device), None
    teacher = load_checkpoint_model(TEACHER, config.teacher, config, trust_checkpoint)
    teacher.requires_grad_(False).eval()
    if config.stage == "gan":
        generator = load_checkpoint_model(INIT, config.init, config, trust_checkpoint)
        return generator.to(device), teacher.to(device)
    torch.manual_seed(config.seed)
    student = KDSRStudent.from_teacher(teacher)
    student.set_fused_kernels(fused)
    _init_encoder(student, config)
    return student.to(device), teacher.to(device)


def _init_encoder(model: nn.Module, config: RunConfig) -> None:
    """Apply train.encoder_init to a fresh encoder: "torch" keeps PyTorch's default; "kaiming" / "highpass"
    re-draw it (kdsr.models.encoder.kaiming_init_ / highpass_init_)."""
    init = config.train.encoder_init
    if init != "torch":
        from kdsr.models.encoder import highpass_init_, kaiming_init_

        torch.manual_seed(config.seed + 1)
        (kaiming_init_ if init == "kaiming" else highpass_init_)(model.encoder)


def build_gan_perceptual(config: RunConfig) -> nn.Module:
    """The perceptual loss of stage gan from loss.perceptual; any problem (a missing VGG19 file, the
    [gan] extra not installed, weights given for the wrong network) becomes one ConfigError line."""
    from kdsr.metrics.stlpips_net import STLPIPSUnavailable
    from kdsr.training.perceptual import PerceptualLoss, build_perceptual

    percep = config.loss.perceptual
    try:
        module = build_perceptual(percep.network, percep.weights)
    except (OSError, ValueError, STLPIPSUnavailable) as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(module, PerceptualLoss):
        module.layer_weights = {k: float(v) for k, v in percep.layer_weights.to_dict().items()}
    return module
