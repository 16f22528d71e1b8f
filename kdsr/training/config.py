"""Training configuration: YAML file + `--set a.b=v` overrides, checked before any work starts.

A config is a nested dict with exactly the keys of `DEFAULTS`; anything else is an error. Values are
parsed with YAML rules (`--set train.lr=2e-4` gives a float, `--set data.val_dir=null` gives None).
Shipped configs live in kdsr/configs/<name>.yaml and can be named without the folder or suffix.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kdsr.training.losses import KD_LOSSES

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Epoch length of the reference code (EDSR-style repeat over DF2K, batch 64): 3450 * 18 / 64 patches.
REFERENCE_ITERS_PER_EPOCH = 971

DEFAULTS: dict[str, Any] = {
    "name": "kdsr_run",
    "stage": "teacher",  # teacher (L1) | student (L1 + KD from a frozen teacher) | gan (KDSR_S-GAN, §5c)
    "seed": 1,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "fused_kernels": True,
    "teacher": None,  # stage 2: path or shipped name of the stage-1 checkpoint
    "init": None,  # stage gan: the student checkpoint G starts from (strict; its EMA weights)
    "model": {
        "variant": "M",  # M | L | GAN | tiny | small
        "scale": 4,
        "n_feats": None,  # None: the variant's value
        "n_blocks": None,
        "n_encoder_res": None,
    },
    "degradation": {
        "kind": "iso",  # iso | aniso | realworld (Real-ESRGAN second-order, kdsr.degradations.realworld)
        "sig_min": 0.2,
        "sig_max": 4.0,
        "lambda_min": 0.2,
        "lambda_max": 4.0,
        "noise": 0.0,  # max noise level in [0, 255] units; training draws U(0, 1) * noise
        "per_sample": False,  # False: one kernel per batch, as the reference code does
    },
    "data": {
        "train_dir": "datasets/DF2K/HR",
        "lr_patch": 64,
        "batch_size": 64,  # global batch; split evenly across DDP ranks
        "augment": True,
        "cache": "none",  # ram | disk | none (decoded-image cache, kdsr.data.cache); true/false = ram/none
        "cache_dir": None,  # cache: disk: where the .npy files go; None: <train_dir>/.kdsr_cache
        "workers": "auto",  # DataLoader worker processes per rank; auto: kdsr.data.loader.auto_workers
        "val_dir": None,  # HR folder for validation (e.g. Set5); None: no validation
        "val_kernels": "gaussian8",
        "val_noise": 0.0,
        "val_max_images": None,  # None: every image of val_dir
        "crop_size": 400,  # realworld: GT crop (or reflect-101 pad) before degradation
        "queue_size": 180,  # realworld: training-pair queue; a multiple of the per-rank batch
        "val_sigma_dir": None,  # HR folder (e.g. Set14) for the σ read-out R² logged at each validation
        "val_sigma_crops": 4,  # crops per image of val_sigma_dir, each blurred with 8 sigmas in sig range
    },
    "train": {
        "iters": 485500,
        "lr": 1e-4,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.0,
        "lr_decay_iters": 121375,  # step schedule: lr * gamma ** (iteration // lr_decay_iters)
        "gamma": 0.5,
        "encoder_iters": 0,  # student only: first iterations train the encoder alone with the KD loss
        "lr_encoder": 2e-4,
        "encoder_lr_decay_iters": 58260,
        "gamma_encoder": 0.1,
        "kd_loss": "kl",  # kl | kl_std | l1 | l2 | none
        "kd_weight": 1.0,
        "temperature": 0.15,
        "ema_decay": 0.0,  # 0: no EMA; e.g. 0.999 keeps an exponential moving average of the weights
        "lr_encoder_mult": 1.0,  # the encoder's learning rate is this times the SR network's (both phases)
        "encoder_init": "torch",  # fresh encoders: torch (the default, as the reference) | kaiming | highpass
        "precision": "fp32",  # fp32 | bf16 (CPU/CUDA autocast to bfloat16; fp32 master weights and loss)
        "compile": False,  # torch.compile the forward module
        "gan": {  # stage gan only (G and D share train.lr / train.betas; G's lr is constant, no schedule)
            "v2": False,  # V2: the teacher sees the USM-sharpened GT (every loss still uses the plain GT)
            "l1_gt_usm": False,  # the reference's V2 flags; either one set means v2 (spec §5c quirk)
            "percep_gt_usm": False,
            "d_num_feat": 64,  # UNetDiscriminatorSN width
        },
    },
    "loss": {  # stage gan only; KD uses train.kd_weight / train.temperature
        "l1_weight": 1.0,
        "perceptual_weight": 1.0,
        "gan_weight": 1.0,  # KDSR's 1.0 (Real-ESRGAN uses 0.1)
        "perceptual": {
            "network": "vgg19",  # vgg19 (the paper's, needs weights) | stlpips-vgg16 (offline, [gan] extra)
            "weights": None,  # vgg19: torchvision's vgg19-dcbb9e9d.pth
            # vgg19 only: pre-ReLU feature weights (the paper's)
            "layer_weights": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0},
        },
    },
    "logging": {
        "out_dir": "runs",
        "print_every": 100,
        "val_every": 5000,
        "save_every": 1000,
        "tensorboard": True,
    },
}

STAGES = ("teacher", "student", "gan")
PERCEPTUAL_NETWORKS = ("vgg19", "stlpips-vgg16")
VARIANTS = ("M", "L", "GAN", "tiny", "small")

DEGRADATION_KINDS = ("iso", "aniso", "realworld")


class ConfigError(ValueError):
    """A training config that cannot run; the message says which key and what to do."""


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Return the YAML file for a path or a shipped config name (e.g. "iso_x4_M_teacher").

    Raises ConfigError listing the shipped names when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / f"{name_or_path}.yaml", CONFIG_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(shipped_config_names())
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a shipped config name ({shipped})")


def shipped_config_names() -> list[str]:
    """Names of the YAML configs shipped in kdsr/configs (without the .yaml suffix)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _merge_known(base: dict[str, Any], update: Mapping[str, Any], where: str) -> None:
    """Recursively copy `update` into `base`, rejecting keys that `base` does not have."""
    for key, value in update.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in base:
            choices = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {choices}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {dotted!r} must be a mapping of sub-keys, got {value!r}")
            _merge_known(base[key], value, dotted)
        else:
            base[key] = _coerce_like(base[key], value, dotted)


def _coerce_like(default: Any, value: Any, dotted: str) -> Any:
    """Read `value` as a float where the default is a float (PyYAML loads `1e-4` as a string)."""
    if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (str, int)):
        try:
            return float(value)
        except ValueError as exc:
            raise ConfigError(f"config key {dotted!r} must be a number, got {value!r}") from exc
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (["a", "b"], parsed value); the value is read with YAML rules."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. train.iters=2000)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `config` with each `a.b=v` override applied; unknown keys raise ConfigError."""
    result = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        _merge_known(result, nested, "")
    return result


def apply_values(config: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `config` with typed values set by dotted key (`{"logging.out_dir": "runs"}`).

    Unlike `apply_overrides`, the values are used as given (never parsed as YAML): what the command
    line's typed flags (--teacher, --name, ...) set. Unknown keys raise ConfigError.
    """
    result = copy.deepcopy(config)
    for key, value in values.items():
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _merge_known(result, nested, "")
    return result


def load_config(
    name_or_path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a full config: DEFAULTS (or `base`), the YAML file, the `--set` overrides (YAML-parsed
    strings), then `values` (typed, by dotted key; see apply_values); then validate.

    `base` is used on resume: the config stored in the checkpoint. Raises ConfigError on any problem.
    """
    config = copy.deepcopy(DEFAULTS)
    if base is not None:  # a checkpoint's config; keys added since it was written keep their defaults
        _merge_known(config, base, "")
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _merge_known(config, loaded, "")
    config = apply_overrides(config, overrides)
    config = apply_values(config, values or {})
    validate_config(config)
    return config


def _walk(config: Mapping[str, Any], where: str = ""):
    for key, value in config.items():
        dotted = f"{where}.{key}" if where else key
        if isinstance(value, Mapping):
            yield from _walk(value, dotted)
        else:
            yield dotted, value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate_config(config: Mapping[str, Any], check_paths: bool = True) -> None:
    """Check types, ranges and folders of a full config; raise ConfigError naming the first bad key."""
    try:
        _validate(config, check_paths)
    except (TypeError, KeyError) as exc:
        raise ConfigError(
            f"config has a value of the wrong type ({exc}); compare with the shipped configs"
        ) from exc


def _validate(config: Mapping[str, Any], check_paths: bool) -> None:
    _merge_known(copy.deepcopy(DEFAULTS), config, "")  # no unknown keys anywhere
    for dotted, value in _walk(config):
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"config key {dotted!r} is {item}; it must be a finite number")
    _require(config["stage"] in STAGES, f"stage must be one of {STAGES}, got {config['stage']!r}")
    _require(
        isinstance(config["name"], str) and config["name"].strip() != "",
        f"name must be a non-empty string (the run folder), got {config['name']!r}; "
        "in --set, quote a number: --set name='\"2024\"' (or use --name 2024)",
    )
    for key in ("teacher", "init"):
        _require(
            config[key] is None or (isinstance(config[key], str) and config[key] != ""),
            f"{key} must be a checkpoint path or shipped name, got {config[key]!r}; pass --{key} PATH",
        )
    _require(
        config["teacher"] is None or config["stage"] != "teacher",
        "--teacher (config key teacher) only applies to stages student and gan; a teacher run trains "
        "the teacher: drop --teacher, or pick a student config",
    )
    model, deg, data, train, log = (config[k] for k in ("model", "degradation", "data", "train", "logging"))
    _require(
        model["variant"] in VARIANTS, f"model.variant must be one of {VARIANTS}, got {model['variant']!r}"
    )
    _require(model["scale"] in (2, 3, 4), f"model.scale must be 2, 3 or 4, got {model['scale']!r}")
    for key in ("n_feats", "n_blocks", "n_encoder_res"):
        v = model[key]
        _require(v is None or (isinstance(v, int) and v >= 0), f"model.{key} must be null or an int >= 0")
    _require(deg["kind"] in DEGRADATION_KINDS, f"degradation.kind must be one of {DEGRADATION_KINDS}")
    _require(0 < deg["sig_min"] <= deg["sig_max"], "degradation needs 0 < sig_min <= sig_max")
    _require(0 < deg["lambda_min"] <= deg["lambda_max"], "degradation needs 0 < lambda_min <= lambda_max")
    _require(deg["noise"] >= 0, "degradation.noise must be >= 0")
    for key in ("lr_patch", "batch_size", "crop_size", "queue_size"):
        _require(isinstance(data[key], int) and data[key] > 0, f"data.{key} must be a positive int")
    for key in ("iters", "lr_decay_iters", "encoder_lr_decay_iters"):
        _require(isinstance(train[key], int) and train[key] > 0, f"train.{key} must be a positive int")
    _require(
        isinstance(train["encoder_iters"], int) and 0 <= train["encoder_iters"] < train["iters"],
        "train.encoder_iters must be an int in [0, train.iters)",
    )
    for key in ("lr", "lr_encoder", "eps", "temperature"):
        _require(train[key] > 0, f"train.{key} must be > 0, got {train[key]!r}")
    _require(
        len(train["betas"]) == 2 and all(0 <= b < 1 for b in train["betas"]),
        "train.betas: two values in [0,1)",
    )
    _require(train["kd_loss"] in KD_LOSSES, f"train.kd_loss must be one of {KD_LOSSES}")
    _require(0 <= train["ema_decay"] < 1, "train.ema_decay must be in [0, 1) (0 turns EMA off)")
    _require(train["lr_encoder_mult"] > 0, "train.lr_encoder_mult must be > 0 (1 = the SR network's lr)")
    _require(train["precision"] in ("fp32", "bf16"), "train.precision must be fp32 or bf16")
    _require(isinstance(train["compile"], bool), "train.compile must be true or false")
    _require(
        isinstance(data["cache"], bool) or data["cache"] in ("ram", "disk", "none"),
        f"data.cache must be ram, disk or none (true/false also mean ram/none), got {data['cache']!r}",
    )
    _require(
        data["cache_dir"] is None or isinstance(data["cache_dir"], str),
        "data.cache_dir must be a folder path or null (null: <train_dir>/.kdsr_cache)",
    )
    workers = data["workers"]
    _require(
        workers == "auto" or (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0),
        f"data.workers must be auto or an int >= 0 (0: load in the training process), got {workers!r}",
    )
    _require(
        isinstance(data["val_sigma_crops"], int) and data["val_sigma_crops"] > 0,
        "data.val_sigma_crops must be a positive int",
    )
    for key in ("print_every", "val_every", "save_every"):
        _require(isinstance(log[key], int) and log[key] > 0, f"logging.{key} must be a positive int")
    if config["stage"] == "teacher":
        _require(train["encoder_iters"] == 0, "train.encoder_iters only applies to stage: student")
    _require(
        train["encoder_init"] in ("torch", "kaiming", "highpass"),
        "train.encoder_init must be torch, kaiming or highpass",
    )
    _require(
        config["init"] is None or config["stage"] == "gan",
        "--init (config key init) only applies to stage: gan; drop it for this stage",
    )
    _validate_gan(config)
    if not check_paths:
        return
    train_dir = Path(data["train_dir"])
    _require(
        train_dir.is_dir(),
        f"data.train_dir {str(train_dir)!r} is not a folder; point it at a folder of HR images "
        f"(e.g. --set data.train_dir=/path/to/DF2K/HR)",
    )
    if data["val_dir"] is not None:
        _require(
            Path(data["val_dir"]).is_dir(),
            f"data.val_dir {data['val_dir']!r} is not a folder; use --set data.val_dir=/path/to/Set5 "
            "or data.val_dir=null to skip validation",
        )
    if data["val_sigma_dir"] is not None:
        _require(
            Path(data["val_sigma_dir"]).is_dir(),
            f"data.val_sigma_dir {data['val_sigma_dir']!r} is not a folder; use e.g. "
            "--set data.val_sigma_dir=../shared/data/Set14, or null to skip the σ read-out",
        )
    if config["stage"] in ("student", "gan"):
        _require(
            config["teacher"] is not None,
            f"stage: {config['stage']} needs a teacher checkpoint: pass --teacher runs/<teacher>/best.pt",
        )
    if config["stage"] == "gan":
        _require(
            config["init"] is not None,
            "stage: gan needs the student checkpoint G starts from: pass --init runs/<student>/best.pt",
        )


def _validate_gan(config: Mapping[str, Any]) -> None:
    """The loss.* and train.gan.* keys; the stage-gan restrictions on the other train keys."""
    loss, gan, train = config["loss"], config["train"]["gan"], config["train"]
    for key in ("l1_weight", "perceptual_weight", "gan_weight"):
        v = loss[key]
        _require(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
            f"loss.{key} must be a number >= 0, got {v!r}",
        )
    percep = loss["perceptual"]
    _require(
        percep["network"] in PERCEPTUAL_NETWORKS,
        f"loss.perceptual.network must be one of {PERCEPTUAL_NETWORKS}, got {percep['network']!r}",
    )
    _require(
        percep["weights"] is None or isinstance(percep["weights"], str),
        "loss.perceptual.weights must be a path to vgg19-dcbb9e9d.pth or null",
    )
    for name, w in percep["layer_weights"].items():
        _require(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0,
            f"loss.perceptual.layer_weights.{name} must be a number >= 0",
        )
    for key in ("v2", "l1_gt_usm", "percep_gt_usm"):
        _require(isinstance(gan[key], bool), f"train.gan.{key} must be true or false")
    _require(
        isinstance(gan["d_num_feat"], int) and gan["d_num_feat"] > 0,
        "train.gan.d_num_feat must be a positive int",
    )
    if config["stage"] != "gan":
        return
    _require(train["kd_loss"] == "kl", "stage: gan distils with the KL loss: set train.kd_loss=kl")
    _require(train["encoder_iters"] == 0, "train.encoder_iters only applies to stage: student; set it to 0")
    _require(train["ema_decay"] > 0, "stage: gan keeps an EMA of G: set train.ema_decay (e.g. 0.999)")
    _require(
        train["precision"] == "fp32" and not train["compile"],
        "stage: gan runs in fp32 without torch.compile: set train.precision=fp32 train.compile=false",
    )


def dump_config(config: Mapping[str, Any]) -> str:
    """The config as YAML text (key order preserved), for copying into a run folder."""
    return yaml.safe_dump(dict(config), sort_keys=False)
