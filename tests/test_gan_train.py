"""`kdsr train` stage gan (KDSR_S-GAN) end to end on tiny real-world batches: run, exact resume, errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_training_support import make_image_folder, save_tiny_teacher, tiny_overrides

import kdsr
from kdsr.cli import main
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import ConfigError, load_config
from kdsr.training.trainer import Trainer

STLPIPS_MISSING = importlib.util.find_spec("stlpips_pytorch") is None
SKIP_REASON = (
    'needs the [gan] extra: pip install --no-deps stlpips-pytorch==0.0.2 (or pip install -e ".[gan]")'
)
needs_gan_extra = pytest.mark.skipif(STLPIPS_MISSING, reason=SKIP_REASON)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Image folders, a tiny teacher and a tiny student (random weights, saved with model.save)."""
    root = tmp_path_factory.mktemp("gan_train")
    train_dir = make_image_folder(root / "train", count=3, size=48)
    val_dir = make_image_folder(root / "val", count=1, size=32, seed=1)
    teacher_path = save_tiny_teacher(root / "teacher.pt")
    torch.manual_seed(3)
    student = kdsr.KDSRStudent.from_teacher(kdsr.load(teacher_path))
    student_path = student.save(root / "student.pt")
    return {"train": train_dir, "val": val_dir, "teacher": teacher_path, "student": student_path}


def _overrides(setup, out_dir, iters=4, network="stlpips-vgg16"):
    return [
        *tiny_overrides(setup["train"], out_dir, setup["val"], iters=iters),
        "data.crop_size=48",
        "data.queue_size=8",
        f"loss.perceptual.network={network}",
        f"teacher={setup['teacher']}",
        f"init={setup['student']}",
    ]


def _trainer(setup, out_dir, iters=4, resume=None, extra=()):
    config = load_config("tiny_realworld_x4_gan", [*_overrides(setup, out_dir, iters), *extra])
    return Trainer(config, resume=resume, progress=False)


@needs_gan_extra
def test_gan_run_then_resume_is_identical(setup, tmp_path):
    full = _trainer(setup, tmp_path / "a", iters=4)
    init = kdsr.load(setup["student"])
    for name, p in init.state_dict().items():  # G starts strictly from --init
        assert torch.equal(full.model.state_dict()[name], p), name
    assert full.realworld is not None and full.gan is not None
    result = full.run()
    assert len(result.losses) == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    moved = [n for n, p in init.state_dict().items() if not torch.equal(full.model.state_dict()[n], p)]
    assert moved, "G did not train"
    ckpt = ckpt_io.load_checkpoint(full.run_dir / "last.pt")
    assert set(ckpt["gan"]) == {"generator", "discriminator", "optimizer_g", "optimizer_d", "ema"}
    # kdsr.load of a GAN checkpoint gives the EMA generator
    ema_g = kdsr.load(full.run_dir / "last.pt")
    for name, p in full.ema.module.state_dict().items():
        assert torch.equal(ema_g.state_dict()[name], p), name
    assert not (full.run_dir / "best.pt").exists()  # the GAN stage keeps last.pt only
    header = (full.run_dir / "train_log.csv").read_text().splitlines()[0]
    assert "d_real" in header and "percep" in header

    first = _trainer(setup, tmp_path / "b", iters=4)
    half = first.run(stop_after=2)
    saved = ckpt_io.load_checkpoint(first.run_dir / "last.pt")
    assert saved["iteration"] == 2
    second = _trainer(setup, tmp_path / "b", iters=4, resume=saved)
    rest = second.run()
    assert half.losses + rest.losses == result.losses
    for name, p in full.gan.disc.state_dict().items():
        assert torch.equal(second.gan.disc.state_dict()[name], p), name
    for name, p in full.ema.state_dict().items():
        assert torch.equal(second.ema.state_dict()[name], p), name


def test_missing_vgg19_file_stops_before_any_work(setup, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "vgg19-dcbb9e9d.pth"
    sets = [*_overrides(setup, tmp_path, network="vgg19"), f"loss.perceptual.weights={missing}"]
    assert main(["train", "--config", "tiny_realworld_x4_gan", "--no-progress", "--set", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vgg19-dcbb9e9d.pth" in err and "Traceback" not in err
    assert "loss.perceptual.network=stlpips-vgg16" in err
    assert not (tmp_path / "tiny_realworld_x4_gan").exists()
    sets = [*_overrides(setup, tmp_path, network="vgg19")]  # weights unset
    assert main(["train", "--config", "tiny_realworld_x4_gan", "--no-progress", "--set", *sets]) == 2
    assert "loss.perceptual.weights is not set" in capsys.readouterr().err


def test_init_pointing_to_a_teacher_is_a_clear_error(setup, tmp_path, capsys):
    sets = _overrides(setup, tmp_path)
    args = ["train", "--config", "tiny_realworld_x4_gan", "--no-progress", "--set", *sets]
    assert main([*args, "--init", str(setup["teacher"])]) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "KDSRTeacher, not a KDSRStudent" in err and "Traceback" not in err
    assert main([*args, "--init", str(tmp_path / "missing.pt")]) == 2
    assert "--init" in capsys.readouterr().err


def test_gan_config_errors(setup, tmp_path):
    base = _overrides(setup, tmp_path)
    with pytest.raises(ConfigError, match="needs the student checkpoint"):
        load_config("tiny_realworld_x4_gan", [*base, "init=null"])
    with pytest.raises(ConfigError, match="only applies to stage: gan"):
        load_config("tiny_realworld_x4_student", [*base, "loss.perceptual.network=vgg19"])
    with pytest.raises(ConfigError, match="loss.perceptual.network must be one of"):
        load_config("tiny_realworld_x4_gan", [*base, "loss.perceptual.network=alexnet"])
    with pytest.raises(ConfigError, match="loss.gan_weight"):
        load_config("tiny_realworld_x4_gan", [*base, "loss.gan_weight=-1"])
    with pytest.raises(ConfigError, match="train.ema_decay"):
        load_config("tiny_realworld_x4_gan", [*base, "train.ema_decay=0"])


def test_shipped_gan_configs_hold_the_published_numbers():
    for name, v2 in (("realworld_x4_gan", False), ("realworld_x4_gan_v2", True)):
        c = load_config(name, ["data.train_dir=.", "teacher=t.pt", "init=s.pt"])
        t, loss = c["train"], c["loss"]
        assert (c["stage"], t["iters"], t["lr"], t["betas"], t["ema_decay"]) == (
            "gan",
            400000,
            1e-4,
            [0.9, 0.99],
            0.999,
        )
        assert (loss["l1_weight"], loss["perceptual_weight"], loss["gan_weight"], t["kd_weight"]) == (
            1.0,
        ) * 4
        assert loss["perceptual"]["network"] == "vgg19"
        assert loss["perceptual"]["layer_weights"] == {
            "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0
        }  # fmt: skip
        assert (c["data"]["batch_size"], c["data"]["lr_patch"], c["data"]["queue_size"]) == (72, 64, 180)
        assert c["train"]["gan"]["v2"] is v2
    tiny = load_config("tiny_realworld_x4_gan", ["teacher=t.pt", "init=s.pt"])
    assert tiny["loss"]["perceptual"]["network"] == "stlpips-vgg16" and tiny["model"]["variant"] == "tiny"


def test_skip_reason_names_the_gan_extra():
    assert "[gan]" in SKIP_REASON and "stlpips-pytorch" in SKIP_REASON


@needs_gan_extra
@pytest.mark.parametrize("flag", ["train.gan.v2=true", "train.gan.l1_gt_usm=true", None])
def test_v2_flags_make_the_teacher_see_the_sharpened_gt(setup, tmp_path, flag):
    from kdsr.degradations import usm_sharpen

    trainer = _trainer(setup, tmp_path, extra=[flag] if flag else [])
    assert trainer.gan.teacher_hr is (usm_sharpen if flag else None)
