"""Training configuration: one typed schema per section, built from YAML + `--set a.b=v` overrides.

`load_config(name, overrides)` returns a frozen `RunConfig` (pydantic v2): read it by attribute
(`config.train.lr`). It is checked once, here: unknown keys (with a "did you mean"), types and ranges
(the schema), the rules that compare fields, and the folders. `--set` values are read by the field's type:
a string field takes the text as written (`--set name=2024` is the string "2024"; `null` is None where the
field allows it), every other field reads YAML (`train.lr=2e-4`, `train.betas=[0.8,0.9]`). Checkpoints
store `config.to_dict()`, a plain nested dict; `load_config(base=...)` reads one back (keys added since it
was written keep their defaults). Shipped configs live in kdsr/configs/<name>.yaml and can be named
without the folder or suffix. The allowed names come from the modules that own them (model variants,
KD losses, perceptual networks, degradation kinds).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kdsr.training.config_schema import (
    LossConfig,
    ModelConfig,
    RunConfig,
    Section,
    TrainConfig,
)

__all__ = [
    "ConfigError",
    "RunConfig",
    "ModelConfig",
    "TrainConfig",
    "LossConfig",
    "load_config",
    "validate_config",
    "dump_config",
    "parse_override",
    "resolve_config_path",
    "shipped_config_names",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A training config that cannot run; the message says which key and what to do."""


# ------------------------------------------------------------------------------------- finding files
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


# ------------------------------------------------------------------------------- keys and raw values
def _section_of(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def _field(section: type[Section], key: Any, dotted: str) -> Any:
    """The pydantic field `key` of `section`; an unknown key is a ConfigError with a "did you mean"."""
    fields = section.model_fields
    if key in fields:
        return fields[key]
    close = difflib.get_close_matches(str(key), list(fields), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    choices = ", ".join(sorted(fields))
    raise ConfigError(f"unknown config key {dotted!r}{hint}; valid keys here: {choices}")


def _merge(target: dict[str, Any], update: Mapping[str, Any], section: type[Section], where: str) -> None:
    """Copy `update` into the raw dict `target` key by key, checking every key against `section`."""
    for key, value in update.items():
        dotted = f"{where}.{key}" if where else str(key)
        sub = _section_of(_field(section, key, dotted).annotation)
        if sub is None:
            target[key] = value
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {dotted!r} must be a mapping of sub-keys, got {value!r}")
        _merge(target.setdefault(key, {}), value, sub, dotted)


def _leaf_annotation(parts: list[str]) -> Any:
    """The annotation of the field at `parts` (unknown keys raise ConfigError)."""
    section: type[Section] = RunConfig
    for i, part in enumerate(parts):
        annotation = _field(section, part, ".".join(parts[: i + 1])).annotation
        sub = _section_of(annotation)
        if sub is None:
            return annotation if i == len(parts) - 1 else None
        section = sub
    return RunConfig if section is RunConfig else section


def _is_text_field(annotation: Any) -> bool:
    """True for `str` and `str | None` fields."""
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) == {str, type(None)}
    return False


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (["a", "b"], value read by the field's type; see the module docstring)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. train.iters=2000)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    annotation = _leaf_annotation(parts)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        if not _is_text_field(annotation):
            raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
        value = raw
    if _is_text_field(annotation) and value is not None and not isinstance(value, str):
        value = raw.strip()  # a string field keeps the text: name=2024 is "2024", teacher='a: b.pt' a path
    return parts, value


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return nested


def _read_yaml(name_or_path: str | Path) -> Mapping[str, Any]:
    path = resolve_config_path(name_or_path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


# -------------------------------------------------------------------------------------- building
def load_config(
    name_or_path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | RunConfig | None = None,
    values: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build and check a full config: the defaults, then `base` (on resume: the checkpoint's config dict),
    the YAML file, the `--set` overrides (read by field type), then `values` (typed, by dotted key: what
    the command line's typed flags --teacher, --name, ... set; used as given).

    Raises ConfigError (one line naming the key and what to do) on any problem.
    """
    raw: dict[str, Any] = {}
    if base is not None:
        _merge(raw, base.to_dict() if isinstance(base, RunConfig) else base, RunConfig, "")
    if name_or_path is not None:
        _merge(raw, _read_yaml(name_or_path), RunConfig, "")
    for text in overrides:
        _merge(raw, _nest(*parse_override(text)), RunConfig, "")
    for key, value in (values or {}).items():
        _merge(raw, _nest(key.split("."), value), RunConfig, "")
    return validate_config(raw)


def validate_config(raw: Mapping[str, Any]) -> RunConfig:
    """Check a raw nested dict (e.g. a checkpoint's config) and return it typed; raises ConfigError."""
    _merge({}, raw, RunConfig, "")  # unknown keys first, with a "did you mean"
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
    _check_rules(config)
    _check_paths(config)
    return config


def _first_error(exc: ValidationError) -> str:
    """One line for the first bad key (a union's alternatives joined with "or")."""
    fields = _all_field_names()
    errors = exc.errors(include_url=False)

    def key(error: Any) -> str:
        return ".".join(str(p) for p in error["loc"] if isinstance(p, str) and p in fields)

    first = errors[0]
    if first["type"] == "value_error":
        return first["msg"].removeprefix("Value error, ")
    hint = _described(key(first))
    if hint:
        return f"{key(first)} must be {hint}, got {first['input']!r}"
    same = [e for e in errors if key(e) == key(first) and e["input"] is first["input"]]
    if len(same) == 1 and first["type"] == "literal_error":
        return f"{key(first)} must be one of {first['ctx']['expected']}, got {first['input']!r}"
    message = " or ".join(dict.fromkeys(e["msg"] for e in same))
    return f"config key {key(first)!r}: {message}, got {first['input']!r}"


def _described(dotted: str) -> str | None:
    """The description (what the value must be) of the field at `dotted`, if it has one."""
    section: type[Section] | None = RunConfig
    field = None
    for part in dotted.split("."):
        if section is None or part not in section.model_fields:
            return None
        field = section.model_fields[part]
        section = _section_of(field.annotation)
    return field.description if field is not None else None


def _all_field_names() -> set[str]:
    names: set[str] = set()
    pending: list[type[Section]] = [RunConfig]
    while pending:
        section = pending.pop()
        for key, field in section.model_fields.items():
            names.add(key)
            sub = _section_of(field.annotation)
            if sub is not None:
                pending.append(sub)
    return names


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_rules(c: RunConfig) -> None:
    """The rules that compare fields; each keeps its hint."""
    deg, train = c.degradation, c.train
    _require(0 < deg.sig_min <= deg.sig_max, "degradation needs 0 < sig_min <= sig_max")
    _require(0 < deg.lambda_min <= deg.lambda_max, "degradation needs 0 < lambda_min <= lambda_max")
    _require(train.encoder_iters < train.iters, "train.encoder_iters must be an int in [0, train.iters)")
    _require(
        c.teacher is None or c.stage != "teacher",
        "--teacher (config key teacher) only applies to stages student and gan; a teacher run trains "
        "the teacher: drop --teacher, or pick a student config",
    )
    if c.stage == "teacher":
        _require(train.encoder_iters == 0, "train.encoder_iters only applies to stage: student")
    _require(
        train.readout_weight == 0 or (c.stage == "teacher" and deg.kind == "realworld"),
        "train.readout_weight applies to stage: teacher with degradation.kind: realworld; set it to 0",
    )
    _require(
        c.init is None or c.stage == "gan",
        "--init (config key init) only applies to stage: gan; drop it for this stage",
    )
    if c.stage != "gan":
        return
    _require(train.kd_loss == "kl", "stage: gan distils with the KL loss: set train.kd_loss=kl")
    _require(train.encoder_iters == 0, "train.encoder_iters only applies to stage: student; set it to 0")
    _require(train.ema_decay > 0, "stage: gan keeps an EMA of G: set train.ema_decay (e.g. 0.999)")
    _require(
        train.precision == "fp32" and not train.compile,
        "stage: gan runs in fp32 without torch.compile: set train.precision=fp32 train.compile=false",
    )


def _check_paths(c: RunConfig) -> None:
    """The folders exist; the stages that need a checkpoint have one."""
    data = c.data
    _require(
        Path(data.train_dir).is_dir(),
        f"data.train_dir {data.train_dir!r} is not a folder; point it at a folder of HR images "
        f"(e.g. --set data.train_dir=/path/to/DF2K/HR)",
    )
    if data.val_dir is not None:
        _require(
            Path(data.val_dir).is_dir(),
            f"data.val_dir {data.val_dir!r} is not a folder; use --set data.val_dir=/path/to/Set5 "
            "or data.val_dir=null to skip validation",
        )
    from kdsr.training.realworld_val import realworld_validation_problem

    problem = realworld_validation_problem(c)
    _require(problem is None, str(problem))
    if data.val_sigma_dir is not None:
        _require(
            Path(data.val_sigma_dir).is_dir(),
            f"data.val_sigma_dir {data.val_sigma_dir!r} is not a folder; use e.g. "
            "--set data.val_sigma_dir=../shared/data/Set14, or null to skip the σ read-out",
        )
    if c.stage in ("student", "gan"):
        _require(
            c.teacher is not None,
            f"stage: {c.stage} needs a teacher checkpoint: pass --teacher runs/<teacher>/best.pt",
        )
    if c.stage == "gan":
        _require(
            c.init is not None,
            "stage: gan needs the student checkpoint G starts from: pass --init runs/<student>/best.pt",
        )


def dump_config(config: RunConfig) -> str:
    """The config as YAML text (key order preserved), for copying into a run folder."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
