"""The typed training config: did-you-mean on unknown keys, `--set` read by the field's type, constants
taken from their owning modules, the plain-dict round trip that checkpoints use."""

from __future__ import annotations

import pytest
import yaml

from kdsr.models.kdsr_model import VARIANTS
from kdsr.training.config import ConfigError, dump_config, load_config, parse_override
from kdsr.training.losses import KD_LOSSES
from kdsr.training.perceptual import PERCEPTUAL_NETWORKS, VGG19_LAYER_WEIGHTS

BASE = ["data.train_dir=.", "teacher=t.pt"]


def _load(*sets: str, name: str = "tiny_iso_x4_student"):
    return load_config(name, [*BASE, *sets])


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("train.lrr=1", "lr"),
        ("data.bach_size=4", "batch_size"),
        ("trian.lr=1", "train"),
        ("loss.perceptual.layer_weights.conv5_3=1", "conv5_4"),
    ],
)
def test_unknown_keys_suggest_the_closest(override, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown config key .*did you mean '{suggestion}'\?"):
        _load(override)


def test_set_is_read_by_the_field_type():
    assert parse_override("name=2024") == (["name"], "2024")  # a string field keeps the text
    assert parse_override("teacher=a: b.pt") == (["teacher"], "a: b.pt")
    assert parse_override("data.val_dir=null") == (["data", "val_dir"], None)
    assert parse_override("train.lr=2e-4") == (
        ["train", "lr"],
        "2e-4",
    )  # PyYAML: a string; the schema reads it
    assert parse_override("train.iters=12") == (["train", "iters"], 12)
    assert parse_override("data.cache=false") == (["data", "cache"], False)
    cfg = _load("name=2024", "train.lr=2e-4", "train.betas=[0.8, 0.95]")
    assert cfg.name == "2024" and cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.betas == [0.8, 0.95]
    with pytest.raises(ConfigError, match=r"'train\.iters'.*integer"):
        _load("train.iters=2.5")
    with pytest.raises(ConfigError, match=r"data\.workers must be auto or an int >= 0 .*, got -1"):
        _load("data.workers=-1")


def test_allowed_names_come_from_their_modules():
    for variant in VARIANTS:
        assert _load(f"model.variant={variant}").model.variant == variant
    for kind in KD_LOSSES:
        assert _load(f"train.kd_loss={kind}").train.kd_loss == kind
    for network in PERCEPTUAL_NETWORKS:
        assert _load(f"loss.perceptual.network={network}").loss.perceptual.network == network
    weights = _load().loss.perceptual.layer_weights.to_dict()
    assert weights == VGG19_LAYER_WEIGHTS


def test_new_keys_have_their_defaults():
    cfg = _load()
    assert (cfg.train.schedule, cfg.train.lr_min, cfg.train.readout_weight, cfg.data.val_lr_dir) == (
        "step",
        0.0,
        0.0,
        None,
    )


def test_checkpoint_dict_round_trip_and_frozen():
    cfg = _load("train.iters=33", "model.n_feats=8")
    plain = cfg.to_dict()
    assert isinstance(plain, dict) and plain["train"]["iters"] == 33 and plain["model"]["n_feats"] == 8
    assert load_config(base=plain) == cfg
    assert yaml.safe_load(dump_config(cfg)) == plain
    old = {k: v for k, v in plain.items()}  # a checkpoint written before a key existed: it gets its default
    old["train"] = {
        k: v for k, v in plain["train"].items() if k not in ("schedule", "lr_min", "readout_weight")
    }
    assert load_config(base=old).train.schedule == "step"
    with pytest.raises(ValueError):
        cfg.train.iters = 5  # frozen: a run's config does not change under it
