"""Training configs: loading, overrides, validation errors, shipped settings, the LR schedule."""

from __future__ import annotations

import math

import pytest
from test_training_support import make_image_folder, save_tiny_teacher, tiny_overrides

from kdsr.cli import main
from kdsr.training.build import build_models
from kdsr.training.config import ConfigError, load_config, shipped_config_names
from kdsr.training.schedule import LRSchedule

EPOCH = 971  # reference iterations per epoch (batch 64 over 3450 images x 18 repeats)


@pytest.fixture
def images(tmp_path):
    return make_image_folder(tmp_path / "hr")


def test_every_shipped_config_loads(images):
    names = shipped_config_names()
    for required in (
        "iso_x4_M_teacher",
        "iso_x4_M_student",
        "iso_x4_L_teacher",
        "iso_x4_L_student",
        "aniso_x4_M_teacher",
        "aniso_x4_M_student",
        "tiny_iso_x4_teacher",
        "tiny_iso_x4_student",
    ):
        assert required in names
    for name in names:
        init = ["init=s.pt"] if "_gan" in name else []  # stage gan also needs the student G starts from
        teacher = [] if name.endswith("_teacher") else ["teacher=t.pt"]  # a teacher run takes none
        cfg = load_config(name, [f"data.train_dir={images}", "data.val_dir=null", *teacher, *init])
        assert cfg["name"] == name


def test_published_hyper_parameters(images):
    base = [f"data.train_dir={images}", "data.val_dir=null", "teacher=t.pt"]
    t = load_config("iso_x4_M_teacher", base[:-1])
    assert (t["stage"], t["model"]["variant"], t["data"]["lr_patch"], t["data"]["batch_size"]) == (
        "teacher",
        "M",
        64,
        64,
    )
    assert t["train"]["iters"] == 500 * EPOCH and t["train"]["lr_decay_iters"] == 125 * EPOCH
    assert t["train"]["lr"] == 1e-4 and t["train"]["gamma"] == 0.5 and t["degradation"]["per_sample"] is False
    s = load_config("iso_x4_L_student", base)
    assert s["model"]["variant"] == "L" and s["train"]["iters"] == 600 * EPOCH
    assert s["train"]["lr_decay_iters"] == 150 * EPOCH and s["train"]["encoder_iters"] == 0
    assert (s["train"]["kd_loss"], s["train"]["temperature"], s["train"]["kd_weight"]) == ("kl", 0.15, 1.0)
    a = load_config("aniso_x4_M_student", base)
    assert a["degradation"]["kind"] == "aniso" and a["degradation"]["noise"] == 25.0
    assert a["train"]["encoder_iters"] == 100 * EPOCH and a["train"]["iters"] == 500 * EPOCH
    assert a["train"]["lr_encoder"] == 2e-4 and a["train"]["encoder_lr_decay_iters"] == 60 * EPOCH


def test_aniso_schedule_matches_the_reference_formula(images):
    cfg = load_config("aniso_x4_M_student", [f"data.train_dir={images}", "data.val_dir=null", "teacher=t.pt"])
    schedule = LRSchedule(cfg["train"])
    base = cfg["train"]["lr"]
    for epoch in (0, 30, 59, 60, 99, 100, 150, 224, 225, 349, 350, 499):
        it = epoch * EPOCH + 5
        if epoch < 100:
            expected = 2e-4 * 0.1 ** (epoch // 60)
        else:
            expected = 1e-4 * 0.5 ** ((epoch - 100) // 125)
        assert math.isclose(base * schedule(it), expected, rel_tol=1e-12), epoch


def test_overrides_parse_yaml_values_and_scientific_floats(images):
    cfg = load_config(
        "tiny_iso_x4_teacher",
        [
            f"data.train_dir={images}",
            "data.val_dir=null",
            "train.lr=3e-4",
            "train.betas=[0.8, 0.9]",
            "data.cache=false",
        ],
    )
    assert cfg["train"]["lr"] == 3e-4 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["betas"] == [0.8, 0.9] and cfg["data"]["cache"] is False


def test_unknown_keys_fail_with_the_valid_choices(images, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*valid keys here:.*\blr\b"):
        load_config("tiny_iso_x4_teacher", [f"data.train_dir={images}", "train.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data: {{train_dir: {images}, val_dir: null}}\nmodell: {{variant: M}}\n")
    with pytest.raises(ConfigError, match="unknown config key 'modell'"):
        load_config(bad)


def test_missing_data_folder_is_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.train_dir .*nowhere.* is not a folder"):
        load_config("tiny_iso_x4_teacher", [f"data.train_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r"data\.val_dir"):
        load_config("tiny_iso_x4_teacher", [f"data.train_dir={tmp_path}", f"data.val_dir={tmp_path / 'no'}"])


@pytest.mark.parametrize("override", ["train.lr=.nan", "train.temperature=.inf", "degradation.sig_max=-.inf"])
def test_non_finite_values_are_rejected(images, override):
    with pytest.raises(ConfigError, match="finite"):
        load_config("tiny_iso_x4_teacher", [f"data.train_dir={images}", "data.val_dir=null", override])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.kd_loss=cosine", "kd_loss"),
        ("model.variant=XL", "variant"),
        ("data.batch_size=0", "batch_size"),
        ("train.lr=fast", "number"),
        ("stage=pretrain", "stage"),
    ],
)
def test_bad_values_name_the_key(images, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(
            "tiny_iso_x4_student", [f"data.train_dir={images}", "data.val_dir=null", "teacher=t.pt", override]
        )


def test_student_needs_a_teacher(images):
    with pytest.raises(ConfigError, match="--teacher"):
        load_config("tiny_iso_x4_student", [f"data.train_dir={images}", "data.val_dir=null"])


def test_teacher_of_another_variant_is_rejected_before_training(images, tmp_path):
    teacher = save_tiny_teacher(tmp_path / "t.pt", n_feats=12)  # the config asks for n_feats=8
    cfg = load_config(
        "tiny_iso_x4_student", [*tiny_overrides(images, tmp_path / "runs"), f"teacher={teacher}"]
    )
    with pytest.raises(ConfigError, match=r"another variant.*'n_feats': 12.*'n_feats': 8"):
        build_models(cfg, device=__import__("torch").device("cpu"))


def test_cli_prints_one_clear_message_and_returns_2(images, tmp_path, capsys):
    code = main(["train", "--config", "tiny_iso_x4_teacher", "--set", f"data.train_dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data.train_dir" in err
    code = main(["train", "--config", "no_such_config"])
    err = capsys.readouterr().err
    assert code == 2 and "tiny_iso_x4_teacher" in err  # lists the shipped names
    teacher = save_tiny_teacher(tmp_path / "t.pt", n_blocks=2)
    code = main(
        [
            "train",
            "--config",
            "tiny_iso_x4_student",
            "--teacher",
            str(teacher),
            "--set",
            *tiny_overrides(images, tmp_path / "runs"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "another variant" in err and not (tmp_path / "runs").exists()
