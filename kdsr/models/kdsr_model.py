"""KDSR teacher and student models, the variants registry, and single-file save / load.

s = KDSRStudent()                          # KDSR_S-M, x4, fused IDR-DDC kernels
t = KDSRTeacher(variant="L", scale=4)
sr = s(lr); d, d_prime = s.encode(lr)      # lr (B, 3, H, W) float in [0, 1]
sr = t(lr, hr); d, d_prime = t.encode(lr, hr)
s.save("s.safetensors"); s = load("s.safetensors")   # weights + config (JSON metadata); no code runs
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import kdsr_kernels.ops
from kdsr.atomic import atomic_write, atomic_write_bytes
from kdsr.safe_load import UnsafePickleError, torch_load

from .checks import MIN_LR_SIZE, check_image
from .encoder import KDIDE
from .sr_network import PYTORCH, SUPPORTED_SCALES, SRNetwork

FORMAT = "kdsr-model"
FORMAT_VERSION = 1
SIZE_KEYS = ("n_feats", "n_blocks", "n_encoder_res")

# Sizes per variant. M / L / GAN are the published ones (spec kdsr.md §2, §4); tiny / small are ours, for CPU
# training recipes (a few hundred thousand parameters, trainable on 2 cores).
VARIANTS: dict[str, dict[str, int]] = {
    "M": {"n_feats": 64, "n_blocks": 53, "n_encoder_res": 9},
    "L": {"n_feats": 128, "n_blocks": 28, "n_encoder_res": 5},
    "GAN": {"n_feats": 128, "n_blocks": 42, "n_encoder_res": 6},
    "tiny": {"n_feats": 32, "n_blocks": 4, "n_encoder_res": 2},
    "small": {"n_feats": 48, "n_blocks": 8, "n_encoder_res": 3},
}
# Student parameter counts (millions) the paper reports, including the frozen MeanShift parameters.
PAPER_PARAMS_M = {"M": 5.80, "L": 14.19, "GAN": 18.85}

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SAFETENSORS_SUFFIX = ".safetensors"


def canonical_variant(variant: str) -> str:
    """Variant name as registered ("m" -> "M", "gan" -> "GAN"); raises ValueError listing the names."""
    if isinstance(variant, str):
        for name in VARIANTS:
            if name.lower() == variant.lower():
                return name
    raise ValueError(f"unknown KDSR variant {variant!r}; choose one of {list(VARIANTS)}")


def _mode_for(fused_kernels: bool | str) -> str:
    """IDR-DDC mode for a fused_kernels argument: True -> "auto", False -> "pytorch", or a backend name."""
    if isinstance(fused_kernels, bool):
        return "auto" if fused_kernels else PYTORCH
    valid = ("auto", PYTORCH, *kdsr_kernels.ops.BACKENDS)
    if isinstance(fused_kernels, str) and fused_kernels in valid:
        return fused_kernels
    raise ValueError(f"fused_kernels must be True, False or one of {list(valid)}, got {fused_kernels!r}")


class _KDSRModel(nn.Module):
    """Shared parts of teacher and student: `encoder` (KD-IDE), `sr_net` (G), config, kernel switch, save."""

    # Set to False to skip the per-call input checks (they cost one device sync for the NaN test).
    validate_inputs: bool = True

    def __init__(
        self, variant: str = "M", scale: int = 4, fused_kernels: bool | str = True, **overrides: int
    ):
        super().__init__()
        variant = canonical_variant(variant)
        unknown = set(overrides) - set(SIZE_KEYS)
        if unknown:
            raise TypeError(f"unknown size overrides {sorted(unknown)}; allowed: {list(SIZE_KEYS)}")
        if isinstance(scale, bool) or scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {scale!r}")
        sizes = {**VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None}}
        for key, value in sizes.items():
            minimum = 0 if key == "n_encoder_res" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{key} must be an int >= {minimum}, got {value!r}")
        self.variant = variant
        self.scale = scale
        self.n_feats = sizes["n_feats"]
        self.n_blocks = sizes["n_blocks"]
        self.n_encoder_res = sizes["n_encoder_res"]
        mode = _mode_for(fused_kernels)
        self.encoder = KDIDE(self.encoder_in_channels(scale), self.n_feats, self.n_encoder_res)
        self.sr_net = SRNetwork(self.n_feats, self.n_blocks, scale, mode)
        self._mode = mode

    @staticmethod
    def encoder_in_channels(scale: int) -> int:
        raise NotImplementedError

    # -- configuration --------------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the architecture (what `save` stores)."""
        return {
            "variant": self.variant,
            "scale": self.scale,
            "n_feats": self.n_feats,
            "n_blocks": self.n_blocks,
            "n_encoder_res": self.n_encoder_res,
        }

    @property
    def fused_kernels(self) -> bool:
        """True when IDR-DDC runs through kdsr_kernels, False for the plain PyTorch grouped conv."""
        return self._mode != PYTORCH

    @property
    def idr_ddc_mode(self) -> str:
        """ "pytorch" (grouped conv) or the kdsr_kernels backend asked for ("auto", "triton", ...)."""
        return self._mode

    def set_fused_kernels(self, flag: bool | str = True) -> _KDSRModel:
        """True: IDR-DDC + LeakyReLU via `kdsr_kernels.idr_ddc` (backend "auto"); False: grouped F.conv2d +
        F.leaky_relu. A backend name ("reference", "triton", "cpu", "cuda") forces that kernel backend.
        Weights and state-dict keys do not change. Returns self."""
        self._mode = _mode_for(flag)
        self.sr_net.set_mode(self._mode)
        return self

    def _reference_param(self) -> torch.Tensor:
        return self.sr_net.head.weight

    def _check_lr(self, lr: torch.Tensor) -> None:
        if self.validate_inputs:
            check_image(lr, "lr", like=self._reference_param())

    def _in_layout(self, x: torch.Tensor) -> torch.Tensor:
        """x in the memory format of the model's weights (channels_last after `load`), so every layer runs
        in one layout; a no-op when they already match."""
        if self._reference_param().is_contiguous(memory_format=torch.channels_last):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # -- persistence ----------------------------------------------------------------------------------------
    def checkpoint(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """The dict `save` writes: format, version, class, config, CPU state_dict (and metadata if given)."""
        blob: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "class": type(self).__name__,
            "config": self.config,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }
        if metadata is not None:
            blob["metadata"] = dict(metadata)
        return blob

    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
        """Write config + weights to ONE file, atomically (kdsr.atomic: temp + fsync + rename, umask mode).

        `path` ending in ".safetensors" (recommended): the weights as safetensors tensors, format / version /
        class / config (and `metadata`) as JSON strings in its metadata header. Any other suffix: a torch
        file holding the `checkpoint()` dict (readable with torch.load(weights_only=True)).
        `metadata`: optional small dict (str/number/list values). Returns the path.
        """
        path = Path(path)
        blob = self.checkpoint(metadata)
        if path.suffix == SAFETENSORS_SUFFIX:
            atomic_write_bytes(path, _safetensors_bytes(blob))
        else:
            atomic_write(path, lambda handle: torch.save(blob, handle))
        return path


def _safetensors_bytes(blob: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    header = {
        "format": blob["format"],
        "version": str(blob["version"]),
        "class": blob["class"],
        "config": json.dumps(blob["config"]),
    }
    if "metadata" in blob:
        header["metadata"] = json.dumps(blob["metadata"])
    tensors = {k: v.contiguous() for k, v in blob["state_dict"].items()}
    return save(tensors, metadata=header)


class KDSRStudent(_KDSRModel):
    """KDSR_S: KD-IDE_S on the LR image (3 channels) + the SR network.

    Args:
        variant: "M" (C=64, 53 blocks, 9 encoder res-blocks; 5.80M params), "L" (128, 28, 5; 14.19M),
            "GAN" (128, 42, 6; 18.85M), or the small CPU variants "tiny" (32, 4, 2) and "small" (48, 8, 3).
        scale: 2, 3 or 4.
        fused_kernels: True runs IDR-DDC + LeakyReLU through `kdsr_kernels.idr_ddc` (backend "auto");
            False through the grouped-convolution formulation in plain PyTorch. A backend name forces it.
        **overrides: n_feats / n_blocks / n_encoder_res replacing the variant's sizes.

    `student(lr)` -> sr: lr (B, 3, H, W) float in [0, 1], H, W >= 4 -> (B, 3, scale*H, scale*W), not clamped.
    Same in train and eval mode.
    """

    @staticmethod
    def encoder_in_channels(scale: int) -> int:
        return 3

    def encode(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lr (B, 3, H, W) -> (D (B, C), D' (B, 4C)): the degradation representation, the distilled vector."""
        self._check_lr(lr)
        return self.encoder(self._in_layout(lr))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """lr (B, 3, H, W) float in [0, 1] -> sr (B, 3, scale*H, scale*W), contiguous NCHW."""
        lr = self._in_layout(lr)
        d, _ = self.encode(lr)
        return self.sr_net(lr, d).contiguous()

    @classmethod
    def from_teacher(cls, teacher: KDSRTeacher, fused_kernels: bool | str | None = None) -> KDSRStudent:
        """A student with the teacher's sizes, an exact copy of its SR network and a freshly initialised
        encoder (as the reference code's strict=False load does, spec §5a). Same device and dtype as the
        teacher; same IDR-DDC mode unless `fused_kernels` is given."""
        if not isinstance(teacher, KDSRTeacher):
            raise TypeError(f"from_teacher expects a KDSRTeacher, got {type(teacher).__name__}")
        sizes = {k: teacher.config[k] for k in SIZE_KEYS}
        mode = teacher.idr_ddc_mode if fused_kernels is None else fused_kernels
        student = cls(teacher.variant, teacher.scale, mode, **sizes)
        ref = teacher._reference_param()
        student.to(device=ref.device, dtype=ref.dtype)
        student.sr_net.load_state_dict(teacher.sr_net.state_dict())
        return student


class KDSRTeacher(_KDSRModel):
    """KDSR_T: KD-IDE_T on LR ⊕ PixelUnshuffle_s(HR) (3 + 3*s^2 channels, 51 at x4) + the SR network.

    Same arguments as `KDSRStudent`. `teacher(lr, hr)` -> sr with lr (B, 3, H, W), hr (B, 3, s*H, s*W).
    """

    @staticmethod
    def encoder_in_channels(scale: int) -> int:
        return 3 + 3 * scale * scale

    def teacher_input(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, 3, sH, sW) -> cat([lr, pixel_unshuffle(hr, s)], dim=1), (B, 3 + 3s^2, H, W)."""
        self._check_lr(lr)
        if self.validate_inputs:
            check_image(hr, "hr", min_size=MIN_LR_SIZE * self.scale, like=self._reference_param())
        s = self.scale
        expected = (lr.shape[0], 3, lr.shape[2] * s, lr.shape[3] * s)
        if tuple(hr.shape) != expected:
            raise ValueError(
                f"hr must be the x{s} image of lr: expected shape {expected} for lr {tuple(lr.shape)}, "
                f"got {tuple(hr.shape)}; crop HR to a multiple of {s} and make LR from it"
            )
        return torch.cat([lr, F.pixel_unshuffle(hr, s)], dim=1)

    def encode(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lr (B, 3, H, W), hr (B, 3, sH, sW) -> (D (B, C), D' (B, 4C))."""
        return self.encoder(self._in_layout(self.teacher_input(lr, hr)))

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """lr (B, 3, H, W), hr (B, 3, sH, sW), floats in [0, 1] -> sr (B, 3, sH, sW), contiguous NCHW."""
        d, _ = self.encode(lr, hr)
        return self.sr_net(self._in_layout(lr), d).contiguous()


MODEL_CLASSES = {"KDSRStudent": KDSRStudent, "KDSRTeacher": KDSRTeacher}


def shipped_names() -> list[str]:
    """Names of the weight files shipped in kdsr/weights/ (loadable with `load(name)`)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    files = (
        p
        for p in WEIGHTS_DIR.glob("*" + SAFETENSORS_SUFFIX)
        if not p.name.endswith(".calibration.safetensors")
    )
    return sorted(p.name[: -len(SAFETENSORS_SUFFIX)] for p in files)


def _resolve_path(path_or_name: str | os.PathLike) -> Path:
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.exists():
        raise IsADirectoryError(f"kdsr.load: {str(path)!r} is not a file")
    name = path.name[: -len(SAFETENSORS_SUFFIX)] if path.name.endswith(SAFETENSORS_SUFFIX) else path.name
    if str(path_or_name) in (name, name + SAFETENSORS_SUFFIX):  # a bare name: look in the shipped weights
        candidate = WEIGHTS_DIR / (name + SAFETENSORS_SUFFIX)
        if candidate.is_file():
            return candidate
    names = shipped_names()
    listing = ", ".join(names) if names else "none in this install"
    raise FileNotFoundError(
        f"kdsr.load: {str(path_or_name)!r} is neither an existing file nor a shipped model name; "
        f"shipped models: {listing}"
    )


def _is_safetensors(path: Path) -> bool:
    """Torch files start with a zip ("PK") or pickle (0x80) magic; safetensors with a u64 length + '{'."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return False
    return path.suffix == SAFETENSORS_SUFFIX or head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, Any]:
    """A safetensors model file -> the checkpoint() dict (weights on CPU); ValueError if malformed."""
    from kdsr.safe_load import read_safetensors

    try:
        header, state = read_safetensors(path)
    except ValueError as exc:
        raise ValueError(f"kdsr.load: {exc}") from None
    if header.get("format") != FORMAT:
        raise ValueError(
            f"kdsr.load: {str(path)!r} is a safetensors file without kdsr metadata (format={FORMAT!r}); "
            "save models with model.save('model.safetensors')"
        )
    try:
        blob = {
            "format": FORMAT,
            "version": int(header.get("version", "")),
            "class": header.get("class"),
            "config": json.loads(header["config"]),
            "state_dict": state,
        }
        if "metadata" in header:
            blob["metadata"] = json.loads(header["metadata"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"kdsr.load: {str(path)!r} has malformed kdsr metadata ({exc})") from None
    return blob


def _read(path: Path, trust_pickle: bool = False) -> Any:
    if _is_safetensors(path):
        return _read_safetensors(path)
    try:
        return torch_load(path, "cpu", trust_pickle=trust_pickle, who="kdsr.load")
    except UnsafePickleError:
        raise
    except ValueError as exc:
        raise ValueError(f"kdsr.load: {exc}") from None


def _model_blob(obj: Any, where: str, ema: bool = True) -> dict[str, Any]:
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj
    ema_blob = obj.get("ema_model") if isinstance(obj, dict) else None
    if ema and isinstance(ema_blob, dict) and ema_blob.get("format") == FORMAT:
        return ema_blob  # a training checkpoint with EMA: its averaged weights are the model (as params_ema)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and obj["model"].get("format") == FORMAT:
        return obj["model"]
    raise ValueError(
        f"kdsr.load: {where} is not a kdsr model file (expected a dict with format={FORMAT!r}, or a training "
        "checkpoint holding one under 'model'); save models with model.save(path)"
    )


def load(
    path_or_name: str | os.PathLike | dict,
    map_location: str | torch.device | None = None,
    fused_kernels: bool | str | None = None,
    trust_pickle: bool = False,
    ema: bool = True,
) -> KDSRStudent | KDSRTeacher:
    """Load a model written by `model.save` (or a training checkpoint holding one under "model").

    No code from the file runs: safetensors files are read as tensors + JSON; torch files with
    torch.load(weights_only=True). A pickle needing any other Python global raises
    `kdsr.safe_load.UnsafePickleError` (a ValueError naming the global).

    Args:
        path_or_name: a file path (.safetensors or a torch .pt); a shipped model name
            (kdsr/weights/<name>.safetensors, e.g. "tiny-iso-x4-student"); or an already loaded
            checkpoint dict.
        map_location: device to put the model on (default CPU); files saved on CUDA load on CPU and back.
        fused_kernels: as in the constructors; None means True.
        trust_pickle: fully unpickle a torch file the safe loader refuses (prints that it does; runs any code
            in the file). Only for files you trust.
        ema: for a training checkpoint trained with `train.ema_decay > 0`, return the EMA weights (what
            `best.pt` is chosen by and what later stages start from, as Real-ESRGAN's `params_ema`); False
            returns the raw optimised weights. Ignored for model files.

    Returns the KDSRStudent / KDSRTeacher in eval mode, its weights in channels_last (the layout the
    network runs fastest in: inputs are converted on entry, outputs returned NCHW-contiguous).
    """
    if isinstance(path_or_name, dict):
        blob = _model_blob(path_or_name, "the given dict", ema)
    else:
        path = _resolve_path(path_or_name)
        blob = _model_blob(_read(path, trust_pickle), str(path), ema)
    version = blob.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"kdsr.load: model file version {version!r} is not one this kdsr reads "
            f"(<= {FORMAT_VERSION}); upgrade kdsr"
        )
    cls_name = blob.get("class")
    if cls_name not in MODEL_CLASSES:
        raise ValueError(
            f"kdsr.load: unknown model class {cls_name!r}; expected one of {list(MODEL_CLASSES)}"
        )
    config = dict(blob["config"])
    sizes = {k: config[k] for k in SIZE_KEYS}
    model = MODEL_CLASSES[cls_name](
        config["variant"], config["scale"], True if fused_kernels is None else fused_kernels, **sizes
    )
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ValueError(
            f"kdsr.load: the weights do not fit a {cls_name} with config {config}: {exc}"
        ) from exc
    if map_location is not None:
        model.to(map_location)
    model.source_path = None if isinstance(path_or_name, dict) else path  # kdsr.steering finds calibrations
    return model.eval()
