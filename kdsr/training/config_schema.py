"""The typed training config: one frozen pydantic v2 model per section (see kdsr.training.config).

Every section rejects unknown keys and non-finite floats; types and ranges are checked by the fields. The
allowed names come from the modules that own them: model variants (kdsr.models.kdsr_model), KD losses
(kdsr.training.losses), perceptual networks and VGG19 layer weights (kdsr.training.perceptual), classic
degradation kinds (kdsr.degradations.pipeline).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model, field_validator

from kdsr.degradations.pipeline import CLASSIC_KINDS
from kdsr.models.kdsr_model import VARIANTS
from kdsr.training.losses import KD_LOSSES
from kdsr.training.perceptual import PERCEPTUAL_NETWORKS, VGG19_LAYER_WEIGHTS

__all__ = [
    "RunConfig",
    "ModelConfig",
    "DegradationConfig",
    "DataConfig",
    "TrainConfig",
    "GanConfig",
    "LossConfig",
    "PerceptualConfig",
    "LoggingConfig",
    "Section",
]

STAGES = ("teacher", "student", "gan")
DEGRADATION_KINDS = (*CLASSIC_KINDS, "realworld")  # realworld: Real-ESRGAN second order (kdsr.data.realworld)
ENCODER_INITS = ("torch", "kaiming", "highpass")  # kdsr.models.encoder: PyTorch default, kaiming_init_, ...
SCHEDULES = ("step", "cosine")  # kdsr.training.schedule

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class Section(BaseModel):
    """A frozen config section: unknown keys and non-finite floats are errors. `section["key"]` reads a
    field too (for scripts and tests; library code reads attributes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __eq__(self, other: object) -> bool:  # a section equals the plain dict it dumps to
        if isinstance(other, dict):
            return self.to_dict() == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The section as a plain nested dict (what checkpoints and config.yaml hold)."""
        return self.model_dump()


class ModelConfig(Section):
    variant: Literal[tuple(VARIANTS)] = "M"  # type: ignore[valid-type]
    scale: Literal[2, 3, 4] = 4
    n_feats: NonNegativeInt | None = None  # None: the variant's value
    n_blocks: NonNegativeInt | None = None
    n_encoder_res: NonNegativeInt | None = None

    def size_overrides(self) -> dict[str, int]:
        """The non-null n_feats / n_blocks / n_encoder_res overrides."""
        sizes = {"n_feats": self.n_feats, "n_blocks": self.n_blocks, "n_encoder_res": self.n_encoder_res}
        return {k: v for k, v in sizes.items() if v is not None}

    def architecture(self) -> dict[str, int]:
        """The shape-defining sizes this config asks for: scale, n_feats, n_blocks, n_encoder_res."""
        return {"scale": self.scale, **VARIANTS[self.variant], **self.size_overrides()}


class DegradationConfig(Section):
    kind: Literal[DEGRADATION_KINDS] = "iso"  # type: ignore[valid-type]
    sig_min: float = 0.2
    sig_max: float = 4.0
    lambda_min: float = 0.2
    lambda_max: float = 4.0
    noise: NonNegativeFloat = 0.0  # max noise level in [0, 255] units; training draws U(0, 1) * noise
    per_sample: StrictBool = False  # False: one kernel per batch, as the reference code does


class DataConfig(Section):
    train_dir: str = "datasets/DF2K/HR"
    lr_patch: PositiveInt = 64
    batch_size: PositiveInt = 64  # global batch; split evenly across DDP ranks
    augment: StrictBool = True
    cache: Literal["ram", "disk", "none"] | StrictBool = Field(  # kdsr.data.cache
        "none", description="ram, disk or none (true/false also mean ram/none)"
    )
    cache_dir: str | None = None  # cache: disk: where the .npy files go; None: <train_dir>/.kdsr_cache
    workers: Literal["auto"] | NonNegativeInt = Field(  # DataLoader processes per rank
        "auto", description="auto or an int >= 0 (0: load in the training process)"
    )
    val_dir: str | None = None  # HR folder for validation (e.g. Set5); None: no validation
    val_lr_dir: str | None = None  # real-world validation: LR folder paired with val_dir by name
    val_kernels: str = "gaussian8"  # gaussian8 | aniso | realworld (val_dir as `kdsr degrade --realworld`)
    val_noise: float = 0.0
    val_max_images: StrictInt | None = None  # None: every image of val_dir
    crop_size: PositiveInt = 400  # realworld: GT crop (or reflect-101 pad) before degradation
    queue_size: PositiveInt = 180  # realworld: training-pair queue; a multiple of the per-rank batch
    val_sigma_dir: str | None = None  # HR folder (e.g. Set14) for the D read-out at each validation (σ, or
    # for degradation.kind realworld the RealWorldParams: kdsr.training.readout)
    val_sigma_crops: PositiveInt = 4  # crops per image of val_sigma_dir, each blurred with 8 sigmas


class GanConfig(Section):
    """Stage gan only (G and D share train.lr / train.betas; G's lr is constant, no schedule)."""

    v2: StrictBool = False  # V2: the teacher sees the USM-sharpened GT (every loss still uses the plain GT)
    l1_gt_usm: StrictBool = False  # the reference's V2 flags; either one set means v2 (spec §5c quirk)
    percep_gt_usm: StrictBool = False
    d_num_feat: PositiveInt = 64  # UNetDiscriminatorSN width

    @property
    def teacher_sees_usm(self) -> bool:
        """True when the teacher sees the USM-sharpened GT: v2, or the reference's l1_gt_usm /
        percep_gt_usm (which, in the reference, change only the teacher's GT; spec §5c)."""
        return self.v2 or self.l1_gt_usm or self.percep_gt_usm


class TrainConfig(Section):
    iters: PositiveInt = 485500
    lr: PositiveFloat = 1e-4
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = [
        0.9,
        0.999,
    ]
    eps: PositiveFloat = 1e-8
    weight_decay: float = 0.0
    schedule: Literal[SCHEDULES] = "step"  # type: ignore[valid-type]
    lr_decay_iters: PositiveInt = 121375  # step: lr * gamma ** (iteration // lr_decay_iters)
    gamma: float = 0.5
    lr_min: NonNegativeFloat = 0.0  # cosine: lr_min + (lr - lr_min) * (1 + cos(pi * i / iters)) / 2
    encoder_iters: NonNegativeInt = 0  # student only: first iterations train the encoder alone (KD loss)
    lr_encoder: PositiveFloat = 2e-4
    encoder_lr_decay_iters: PositiveInt = 58260
    gamma_encoder: float = 0.1
    kd_loss: Literal[KD_LOSSES] = "kl"  # type: ignore[valid-type]
    kd_weight: float = 1.0
    temperature: PositiveFloat = 0.15
    readout_weight: NonNegativeFloat = 0.0  # teacher: aux loss, linear head D' -> RealWorldParams (0: paper)
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.0  # 0: no EMA; e.g. 0.999
    lr_encoder_mult: PositiveFloat = 1.0  # the encoder's lr is this times the SR network's (both phases)
    encoder_init: Literal[ENCODER_INITS] = "torch"  # type: ignore[valid-type]
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast; fp32 master weights and loss
    compile: StrictBool = False  # torch.compile the forward module
    gan: GanConfig = Field(default_factory=GanConfig)


LayerWeights = create_model(
    "LayerWeights",
    __base__=Section,
    __doc__="vgg19 only: the pre-ReLU feature weights (kdsr.training.perceptual.VGG19_LAYER_WEIGHTS).",
    **{name: (NonNegativeFloat, weight) for name, weight in VGG19_LAYER_WEIGHTS.items()},
)


class PerceptualConfig(Section):
    network: Literal[PERCEPTUAL_NETWORKS] = "vgg19"  # type: ignore[valid-type]
    weights: str | None = None  # vgg19: torchvision's vgg19-dcbb9e9d.pth
    layer_weights: LayerWeights = Field(default_factory=LayerWeights)  # type: ignore[valid-type]


class LossConfig(Section):
    """Stage gan only; KD uses train.kd_weight / train.temperature."""

    l1_weight: NonNegativeFloat = 1.0
    perceptual_weight: NonNegativeFloat = 1.0
    gan_weight: NonNegativeFloat = 1.0  # KDSR's 1.0 (Real-ESRGAN uses 0.1)
    perceptual: PerceptualConfig = Field(default_factory=PerceptualConfig)


class LoggingConfig(Section):
    out_dir: str = "runs"
    print_every: PositiveInt = 100
    val_every: PositiveInt = 5000
    save_every: PositiveInt = 1000
    tensorboard: StrictBool = True


class RunConfig(Section):
    """A whole training run (see the module docstring)."""

    name: str = "kdsr_run"
    stage: Literal[STAGES] = "teacher"  # type: ignore[valid-type]
    seed: StrictInt = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fused_kernels: StrictBool = True
    teacher: str | None = None  # stages student and gan: path or shipped name of the stage-1 checkpoint
    init: str | None = None  # stage gan: the student checkpoint G starts from (strict; its EMA weights)
    model: ModelConfig = Field(default_factory=ModelConfig)
    degradation: DegradationConfig = Field(default_factory=DegradationConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("name", mode="before")
    @classmethod
    def _name_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str) or value.strip() == "":
            raise ValueError(
                f"name must be a non-empty string (the run folder), got {value!r}; "
                "in YAML, quote a number: name: '2024' (or use --name 2024)"
            )
        return value

    @field_validator("teacher", "init", mode="before")
    @classmethod
    def _checkpoint_name(cls, value: Any, info) -> Any:
        if value is not None and (not isinstance(value, str) or value == ""):
            raise ValueError(
                f"{info.field_name} must be a checkpoint path or shipped name, got {value!r}; "
                f"pass --{info.field_name} PATH"
            )
        return value
